"""Any-resolution scoring: which crops of an image the model sees, and how their logits combine.

A 224 px centre crop of a 12 MP photo sees 0.4% of it. A :class:`ViewConfig` lists several views
of one image (a grid of native-resolution crops spread over it, optionally a resized whole-image
view); the scorer runs them in one batch and :func:`combine_logits` turns the per-view logits into
one. Geometry (:func:`view_boxes`) and combination are pure functions; :func:`make_views` is the
only place that cuts pixels.

Spec strings (``--views`` on predict/eval/serve/explain, ``views=`` in the Python API):

- ``center``: one centre crop (the behaviour before views existed);
- ``grid:N``: an N x N grid of crops whose corners touch the image's corners (N=1 is ``center``);
- ``whole``: the whole image, shorter side resized to the input size, centre crop;
- ``grid:N+whole``: both;
- a ``@RULE`` suffix picks the combination: ``@mean`` (mean logit, default) or ``@max``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
from PIL import Image

from mpft.config import from_dict
from mpft.errors import ConfigError

COMBINE_RULES = ("mean", "max")
MAX_GRID = 6


@dataclass(frozen=True)
class ViewConfig:
    """Which views of an image are scored and how their logits combine.

    Attributes:
        grid: crops per side of the native-resolution grid (0: none, 1: the centre crop).
        whole: add one view of the whole image, shorter side resized to the input size.
        combine: ``mean`` (mean of logits) or ``max`` (the most "generated" view decides).
    """

    grid: int = 1
    whole: bool = False
    combine: str = "mean"

    def __post_init__(self) -> None:
        if not isinstance(self.grid, int) or isinstance(self.grid, bool) or not 0 <= self.grid <= MAX_GRID:
            raise ConfigError(f"views grid must be an integer in 0..{MAX_GRID}, got {self.grid!r}")
        if self.grid == 0 and not self.whole:
            raise ConfigError("views: choose at least one view (grid >= 1 or whole)")
        if self.combine not in COMBINE_RULES:
            raise ConfigError(f"views combine rule {self.combine!r} is not one of {COMBINE_RULES}")

    @property
    def spec(self) -> str:
        """The canonical spec string (``parse_views(cfg.spec) == cfg``)."""
        parts = []
        if self.grid == 1:
            parts.append("center")
        elif self.grid > 1:
            parts.append(f"grid:{self.grid}")
        if self.whole:
            parts.append("whole")
        s = "+".join(parts)
        return s if self.combine == "mean" else f"{s}@{self.combine}"

    @property
    def max_views(self) -> int:
        return self.grid * self.grid + int(self.whole)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> ViewConfig:
        return from_dict(cls, d, "view settings")


def parse_views(spec: str | ViewConfig | None) -> ViewConfig:
    """``"grid:2+whole@max"`` -> ViewConfig; None -> the single centre crop.

    Raises:
        ConfigError: a malformed spec (the message lists the accepted forms).
    """
    if spec is None:
        return ViewConfig()
    if isinstance(spec, ViewConfig):
        return spec
    help_ = "use center, whole, grid:N or grid:N+whole, optionally with @mean or @max (e.g. 'grid:2@max')"
    text = str(spec).strip().lower()
    body, _, rule = text.partition("@")
    grid, whole = 0, False
    for part in filter(None, (p.strip() for p in body.split("+"))):
        if part == "center":
            grid = max(grid, 1)
        elif part == "whole":
            whole = True
        elif part.startswith("grid:") and part[5:].isdigit():
            grid = int(part[5:])
        else:
            raise ConfigError(f"bad views spec {spec!r}: {part!r} is not a view; {help_}")
    if grid == 0 and not whole:
        raise ConfigError(f"bad views spec {spec!r}; {help_}")
    try:
        return ViewConfig(grid=grid, whole=whole, combine=rule or "mean")
    except ConfigError as exc:
        raise ConfigError(f"bad views spec {spec!r}: {exc}; {help_}") from None


def _positions(length: int, size: int, n: int) -> list[int]:
    """n crop offsets from 0 to length - size, evenly spaced (duplicates removed, order kept)."""
    if n == 1 or length <= size:
        return [(length - size) // 2]
    out: list[int] = []
    for i in range(n):
        p = round(i * (length - size) / (n - 1))
        if p not in out:
            out.append(p)
    return out


def view_boxes(width: int, height: int, size: int, grid: int) -> list[tuple[int, int, int, int]]:
    """Crop boxes (left, top, right, bottom) of a ``grid`` x ``grid`` layout of ``size`` crops.

    The image must be at least ``size`` on both sides (callers upscale smaller images first).
    Outer crops touch the image's edges, so the union of the boxes covers the whole image when
    ``grid * size >= max(width, height)``; duplicates (an image too small for N distinct crops)
    are removed. ``grid == 1`` gives exactly the centre crop.
    """
    if width < size or height < size:
        raise ConfigError(f"view_boxes needs an image of at least {size}x{size}, got {width}x{height}")
    if grid < 1:
        return []
    return [(x, y, x + size, y + size) for y in _positions(height, size, grid) for x in _positions(width, size, grid)]


def make_views(
    img: Image.Image, size: int, views: ViewConfig, resample: Image.Resampling = Image.Resampling.BICUBIC
) -> np.ndarray:
    """An RGB image -> (V, size, size, 3) uint8 views, grid crops first (row-major), whole view last.

    Images smaller than ``size`` are upscaled (``resample``: the backbone's interpolation) so their
    shorter side fits, as in :func:`mpft.data.transforms.prepare`; crops are taken at native
    resolution otherwise.
    """
    from mpft.data.transforms import resize_shorter

    if img.mode != "RGB":
        img = img.convert("RGB")
    base = img if min(img.size) >= size else resize_shorter(img, size, resample)
    out: list[np.ndarray] = []
    for box in view_boxes(*base.size, size, views.grid):
        out.append(np.asarray(base.crop(box), dtype=np.uint8))
    if views.whole:
        small = resize_shorter(img, size, resample) if min(img.size) != size else img
        w, h = small.size
        left, top = (w - size) // 2, (h - size) // 2
        out.append(np.asarray(small.crop((left, top, left + size, top + size)), dtype=np.uint8))
    return np.stack(out)


def combine_logits(logits: torch.Tensor, counts: list[int] | torch.Tensor, rule: str) -> torch.Tensor:
    """Per-view logits -> one logit per image.

    logits: (sum(counts),) per-view logits, image after image; counts: views per image.
    Returns (len(counts),): the mean (``mean``) or maximum (``max``) of each image's logits.
    """
    if rule not in COMBINE_RULES:
        raise ConfigError(f"views combine rule {rule!r} is not one of {COMBINE_RULES}")
    counts = [int(c) for c in counts]
    if sum(counts) != logits.shape[0] or any(c < 1 for c in counts):
        raise ConfigError(f"view counts {counts} do not match {logits.shape[0]} logits")
    parts = torch.split(logits, counts)
    if rule == "mean":
        return torch.stack([p.mean() for p in parts])
    return torch.stack([p.max() for p in parts])
