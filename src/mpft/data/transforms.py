"""Preprocessing, training augmentation and evaluation perturbations (PIL + numpy only).

Preprocessing policy: detection relies on high-frequency traces, which downscaling destroys.
So by default images larger than the input size are *cropped*, never resized; only images
smaller than the input are upscaled (with the backbone's interpolation, bicubic for CLIP) so their
shorter side fits.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
from PIL import Image, ImageFilter

from mpft.config import from_dict
from mpft.errors import ConfigError

__all__ = [
    "PERTURBATION_KINDS",
    "PRESETS",
    "Augment",
    "Perturbation",
    "PreprocessPolicy",
    "parse_perturbations",
    "parse_reencode",
    "prepare",
    "reencode",
    "resize_shorter",
    "to_tensor",
]

PERTURBATION_KINDS = ("jpeg", "webp", "blur", "resize", "lowres", "crop")
#: Named perturbation sets; "genimage-degraded" is GenImage's degraded-image protocol.
PRESETS: dict[str, tuple[str, ...]] = {
    "genimage-degraded": ("lowres:112", "lowres:64", "jpeg:65", "jpeg:30", "blur:3", "blur:5"),
}
# Above this downscale factor Pillow first reduces by an integer box filter: much faster,
# visually identical to a plain bicubic at that ratio.
_REDUCING_GAP = 3.0


@dataclass
class PreprocessPolicy:
    """How an image is brought to the backbone's input square: resized or cropped.

    The input size and the normalisation belong to the backbone
    (:class:`mpft.backbones.InputContract`); this policy only says how to get there.

    Attributes:
        resize: if True, first resize the shorter side to the input size (also downscaling);
            if False (default), large images are cropped at native resolution.
        size: the input side; None (default) means the backbone's, filled in by
            :meth:`for_backbone`. A number is only a check: it must equal the backbone's.
        interpolation: how images are resized to the input (a PIL filter name, lower case); None
            (default) means the backbone's image processor's, filled in by :meth:`for_backbone`.
    """

    size: int | None = None
    resize: bool = False
    interpolation: str | None = None

    def __post_init__(self) -> None:
        if self.size is not None and (not isinstance(self.size, int) or isinstance(self.size, bool) or self.size <= 0):
            raise ConfigError(f"preprocess size must be a positive integer, got {self.size!r}")
        if not isinstance(self.resize, bool):
            raise ConfigError(f"preprocess resize must be true or false, got {self.resize!r}")
        if self.interpolation is not None:
            resampling(self.interpolation)

    def for_backbone(self, image_size: int, interpolation: str = "bicubic") -> PreprocessPolicy:
        """A copy with ``size`` and ``interpolation`` set to the backbone's (its input contract: position
        embeddings are not interpolated, so no other size can be fed). Raises ConfigError if a set
        value differs."""
        if self.size is not None and self.size != image_size:
            raise ConfigError(
                f"preprocess size {self.size} does not match the backbone's input size {image_size}; "
                "leave the size unset (the backbone sets it)"
            )
        if self.interpolation is not None and self.interpolation != interpolation:
            raise ConfigError(
                f"preprocess interpolation {self.interpolation!r} does not match the backbone's {interpolation!r}; "
                "leave it unset (the backbone sets it)"
            )
        return PreprocessPolicy(size=image_size, resize=self.resize, interpolation=interpolation)

    @property
    def side(self) -> int:
        """The input side; ConfigError for a policy not yet resolved with :meth:`for_backbone`."""
        if self.size is None:
            raise ConfigError("the preprocess policy has no input size yet: resolve it with .for_backbone(size)")
        return self.size

    def to_dict(self) -> dict:
        """JSON-friendly dict; an unset size or interpolation is left out (the backbone sets it)."""
        d = {"resize": self.resize} if self.size is None else {"size": self.size, "resize": self.resize}
        return d if self.interpolation is None else {**d, "interpolation": self.interpolation}

    @property
    def resample(self) -> Image.Resampling:
        """The PIL filter that resizes to the input (bicubic until resolved with :meth:`for_backbone`)."""
        return resampling(self.interpolation or "bicubic")

    @classmethod
    def from_dict(cls, data: dict) -> PreprocessPolicy:
        """Inverse of :meth:`to_dict`. Raises ConfigError on unknown keys or bad values."""
        return from_dict(cls, data, "preprocess policy")


@dataclass
class Augment:
    """Training augmentation, applied to the full image before cropping, to both classes alike.

    Order: downscale, blur, JPEG (as a photo travels: resized, then compressed), then the crop.
    Each step depends only on the random generator, never on the label, so format, size and
    compression cannot carry the class.

    Attributes:
        flip: random horizontal flip (p = 0.5).
        downscale_prob, downscale_range: probability of a bicubic downscale by a factor uniform in
            the range (never below the input size: an image is not shrunk past the crop it feeds).
        blur_prob, blur_sigma: probability of a Gaussian blur, sigma uniform in the range.
        jpeg_prob, jpeg_quality: probability of a JPEG re-encode, quality uniform in the
            inclusive integer range.
    """

    flip: bool = True
    blur_prob: float = 0.0
    blur_sigma: tuple[float, float] = (0.0, 3.0)
    jpeg_prob: float = 0.0
    jpeg_quality: tuple[int, int] = (30, 100)
    downscale_prob: float = 0.0
    downscale_range: tuple[float, float] = (0.25, 1.0)

    def __post_init__(self) -> None:
        self.downscale_range = tuple(float(v) for v in self.downscale_range)
        dlo, dhi = self.downscale_range if len(self.downscale_range) == 2 else (1.0, 0.0)
        if not 0.0 < dlo <= dhi <= 1.0:
            raise ConfigError(f"augment downscale_range must be (low, high) with 0 < low <= high <= 1, got {dlo, dhi}")
        for name in ("blur_prob", "jpeg_prob", "downscale_prob"):
            p = getattr(self, name)
            if not 0.0 <= float(p) <= 1.0:
                raise ConfigError(f"augment {name} must be in [0, 1], got {p!r}")
        self.blur_sigma = tuple(float(v) for v in self.blur_sigma)
        self.jpeg_quality = tuple(int(v) for v in self.jpeg_quality)
        lo, hi = self.blur_sigma if len(self.blur_sigma) == 2 else (1.0, 0.0)
        if not 0.0 <= lo <= hi:
            raise ConfigError(f"augment blur_sigma must be (low, high) with 0 <= low <= high, got {lo, hi}")
        qlo, qhi = self.jpeg_quality if len(self.jpeg_quality) == 2 else (1, 0)
        if not 1 <= qlo <= qhi <= 100:
            raise ConfigError(f"augment jpeg_quality must be (low, high) within 1..100, got {qlo, qhi}")

    def to_dict(self) -> dict:
        """JSON-friendly dict (tuples become lists)."""
        d = asdict(self)
        d["blur_sigma"], d["jpeg_quality"] = list(self.blur_sigma), list(self.jpeg_quality)
        d["downscale_range"] = list(self.downscale_range)
        return d

    @classmethod
    def from_dict(cls, data: dict) -> Augment:
        """Inverse of :meth:`to_dict`. Raises ConfigError on unknown keys or bad values."""
        return from_dict(cls, data, "augment")


def _encode_roundtrip(img: Image.Image, fmt: str, quality: int | None = None) -> Image.Image:
    buf = io.BytesIO()
    kwargs = {} if quality is None else {"quality": int(quality)}
    img.convert("RGB").save(buf, format=fmt, **kwargs)
    buf.seek(0)
    with Image.open(buf) as out:
        return out.convert("RGB")


def draft_side(policy: PreprocessPolicy) -> int | None:
    """Shortest side a JPEG may be decoded at for ``policy`` (``decode_image(draft_min_side=...)``).

    Only a resizing policy downscales, so only it can skip decoding full-size pixels. The bound
    is ``size * reducing gap``: Pillow's resize first box-reduces anything larger by an integer
    factor, and libjpeg's 1/2^k DCT scaling does nearly the same averaging, so the model input
    barely changes (measured: docs/performance.md, decode) while large photos decode 2-4x faster.
    None for a cropping policy: it needs the native pixels.
    """
    return math.ceil(policy.side * _REDUCING_GAP) if policy.resize else None


def resampling(name: str) -> Image.Resampling:
    """An interpolation name (``InputContract.interpolation``: "bicubic", "bilinear", ...) -> PIL's filter."""
    try:
        return Image.Resampling[str(name).upper()]
    except KeyError:
        known = [r.name.lower() for r in Image.Resampling]
        raise ConfigError(f"unknown interpolation {name!r}; known: {known}") from None


def resize_shorter(img: Image.Image, size: int, resample: Image.Resampling = Image.Resampling.BICUBIC) -> Image.Image:
    """Resize (bicubic unless ``resample`` says) so the shorter side is ``size``, keeping the aspect ratio."""
    w, h = img.size
    # max(size, ...) guards against rounding the longer side below the crop size.
    new = (size, max(size, round(h * size / w))) if w <= h else (max(size, round(w * size / h)), size)
    return img.resize(new, resample, reducing_gap=_REDUCING_GAP)


def _augment(img: Image.Image, augment: Augment, rng: np.random.Generator, size: int) -> Image.Image:
    if augment.downscale_prob > 0 and rng.random() < augment.downscale_prob:
        scale = float(rng.uniform(*augment.downscale_range))
        w, h = img.size
        scale = max(scale, size / min(w, h))
        if scale < 1.0:
            new = (max(size, round(w * scale)), max(size, round(h * scale)))
            img = img.resize(new, Image.Resampling.BICUBIC, reducing_gap=_REDUCING_GAP)
    if augment.blur_prob > 0 and rng.random() < augment.blur_prob:
        sigma = float(rng.uniform(*augment.blur_sigma))
        if sigma > 0:
            img = img.filter(ImageFilter.GaussianBlur(radius=sigma))
    if augment.jpeg_prob > 0 and rng.random() < augment.jpeg_prob:
        quality = int(rng.integers(augment.jpeg_quality[0], augment.jpeg_quality[1] + 1))
        img = _encode_roundtrip(img, "JPEG", quality)
    return img


def prepare(
    img: Image.Image,
    policy: PreprocessPolicy,
    *,
    train: bool,
    rng: np.random.Generator | None = None,
    augment: Augment | None = None,
) -> np.ndarray:
    """Turn an RGB image into a model input crop.

    Steps: augmentation (train only: blur, JPEG) on the full image; upscale if the shorter side
    is below ``policy.size`` (or resize to it when ``policy.resize``); random crop (train) or
    centre crop (eval); random horizontal flip (train, ``augment.flip``).

    Args:
        img: RGB PIL image (other modes are converted).
        policy: the preprocessing policy.
        train: random crop and augmentation if True, deterministic centre crop if False.
        rng: source of randomness; the output is a pure function of (img, policy, train,
            augment, rng state). A fresh unseeded generator is used when None.
        augment: training augmentation, ignored when ``train`` is False.

    Returns:
        uint8 array of shape (size, size, 3).
    """
    if rng is None:
        rng = np.random.default_rng()
    if img.mode != "RGB":
        img = img.convert("RGB")
    size = policy.side
    if train and augment is not None:
        img = _augment(img, augment, rng, size)
    w, h = img.size
    if min(w, h) < size or (policy.resize and min(w, h) != size):
        img = resize_shorter(img, size, policy.resample)
        w, h = img.size
    if train:
        left = int(rng.integers(0, w - size + 1))
        top = int(rng.integers(0, h - size + 1))
    else:
        left, top = (w - size) // 2, (h - size) // 2
    img = img.crop((left, top, left + size, top + size))
    if train and augment is not None and augment.flip and rng.random() < 0.5:
        img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return np.asarray(img, dtype=np.uint8).copy()


def to_tensor(arr: np.ndarray) -> torch.Tensor:
    """uint8 array (H, W, 3) -> uint8 tensor (3, H, W) (a copy, contiguous)."""
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"to_tensor expects a uint8 (H, W, 3) array, got {arr.dtype} {arr.shape}")
    return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))


def _format_value(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


@dataclass(frozen=True)
class Perturbation:
    """A deterministic image degradation for robustness evaluation.

    Kinds and values: ``jpeg``/``webp`` quality 1..100; ``blur`` Gaussian sigma > 0;
    ``resize`` scale in (0, 1] (down by it, then back up, bicubic); ``lowres`` side in pixels
    (resize to side x side); ``crop`` centre crop side in pixels (clamped to the image).
    """

    kind: str
    value: float

    def __post_init__(self) -> None:
        kind, v = self.kind, float(self.value)
        bad = None
        if kind not in PERTURBATION_KINDS:
            valid = ", ".join(PERTURBATION_KINDS)
            raise ConfigError(f"unknown perturbation kind {kind!r}; valid kinds: {valid}")
        if not math.isfinite(v):
            bad = "a finite number"
        elif kind in ("jpeg", "webp") and not (v.is_integer() and 1 <= v <= 100):
            bad = "an integer quality in 1..100"
        elif kind == "blur" and v <= 0:
            bad = "a sigma > 0"
        elif kind == "resize" and not 0 < v <= 1:
            bad = "a scale in (0, 1]"
        elif kind in ("lowres", "crop") and not (v.is_integer() and v >= 1):
            bad = "a positive integer number of pixels"
        if bad:
            raise ConfigError(f"perturbation {kind}:{_format_value(v)}: value must be {bad}")

    @property
    def name(self) -> str:
        """Spec string, e.g. ``"jpeg:75"`` or ``"blur:1.5"``."""
        return f"{self.kind}:{_format_value(self.value)}"

    def apply(self, img: Image.Image) -> Image.Image:
        """Return the perturbed RGB image (the input is not modified)."""
        img = img.convert("RGB")
        v = self.value
        if self.kind == "jpeg":
            return _encode_roundtrip(img, "JPEG", int(v))
        if self.kind == "webp":
            return _encode_roundtrip(img, "WEBP", int(v))
        if self.kind == "blur":
            return img.filter(ImageFilter.GaussianBlur(radius=float(v)))
        if self.kind == "resize":
            w, h = img.size
            small = img.resize((max(1, round(w * v)), max(1, round(h * v))), Image.Resampling.BICUBIC)
            return small.resize((w, h), Image.Resampling.BICUBIC)
        if self.kind == "lowres":
            side = int(v)
            return img.resize((side, side), Image.Resampling.BICUBIC)
        # crop
        w, h = img.size
        cw, ch = min(int(v), w), min(int(v), h)
        left, top = (w - cw) // 2, (h - ch) // 2
        return img.crop((left, top, left + cw, top + ch))


def parse_perturbations(specs: Sequence[str]) -> list[Perturbation]:
    """Parse perturbation specs such as ``"jpeg:95,75,50"``, ``"blur:1.5"`` or a preset name.

    Returns:
        Perturbations in the order given, duplicates removed.

    Raises:
        ConfigError: malformed spec, unknown kind or out-of-range value (the message names
            the spec and the valid kinds).
    """
    if isinstance(specs, str):
        specs = [specs]
    out: list[Perturbation] = []
    for spec in specs:
        text = spec.strip().lower()
        items = list(PRESETS[text]) if text in PRESETS else [text]
        for item in items:
            for p in _parse_one(item, spec):
                if p not in out:
                    out.append(p)
    return out


def _parse_one(item: str, spec: str) -> list[Perturbation]:
    help_ = f"valid kinds: {', '.join(PERTURBATION_KINDS)} (e.g. 'jpeg:95,75'), presets: {', '.join(PRESETS)}"
    kind, sep, values = item.partition(":")
    kind = kind.strip()
    if not sep or kind not in PERTURBATION_KINDS or not values.strip():
        raise ConfigError(f"bad perturbation spec {spec!r}; {help_}")
    result = []
    for raw in values.split(","):
        try:
            value = float(raw.strip())
        except ValueError:
            raise ConfigError(
                f"bad perturbation spec {spec!r}: {raw.strip()!r} is not a number; {help_}"
            ) from None
        try:
            result.append(Perturbation(kind, value))
        except ConfigError as exc:
            raise ConfigError(f"bad perturbation spec {spec!r}: {exc}; {help_}") from None
    return result


def parse_reencode(spec: str) -> tuple[str, int | None]:
    """Validate a format-normalisation spec: ``"jpeg:Q"`` (Q in 1..100) or ``"png"``.

    Returns:
        (Pillow format name, quality or None).

    Raises:
        ConfigError: any other spec.
    """
    text = spec.strip().lower() if isinstance(spec, str) else ""
    if text == "png":
        return "PNG", None
    kind, sep, q = text.partition(":")
    if kind == "jpeg" and sep and q.strip().isdigit() and 1 <= int(q) <= 100:
        return "JPEG", int(q)
    raise ConfigError(f"bad re-encode spec {spec!r}; use 'jpeg:Q' with Q in 1..100 (e.g. 'jpeg:95') or 'png'")


def reencode(img: Image.Image, spec: str) -> Image.Image:
    """Re-encode in memory to normalise formats across classes (``"jpeg:95"`` or ``"png"``).

    Returns:
        Decoded RGB image after the round trip.
    """
    fmt, quality = parse_reencode(spec)
    return _encode_roundtrip(img, fmt, quality)
