"""The user-facing API: ``Detector.load(...)`` then ``det.predict(images)``.

The CLI (``mpft predict``) and the server (``mpft serve``) are thin layers over this class.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from mpft.checkpoint import WEIGHTS_NAME, DetectorConfig, load_checkpoint
from mpft.data.images import DEFAULT_MAX_PIXELS, DecodedImage, decode_image
from mpft.data.transforms import PreprocessPolicy, draft_side, prepare, to_tensor
from mpft.detectors import DEFAULT_DETECTOR_DIR
from mpft.errors import CheckpointError, ConfigError, ImageDecodeError
from mpft.precision import apply_precision, autocast_for, merge_lora, model_precision, precision_device
from mpft.runtime import resolve_device

log = logging.getLogger(__name__)

ImageInput = str | os.PathLike | bytes | Image.Image
VERDICTS = ("generated", "real", "uncertain", "error")


@dataclass(frozen=True)
class Prediction:
    """One image's result. ``probability`` is P(generated); None when the image could not be read."""

    source: str
    probability: float | None
    verdict: str
    threshold: float
    model_id: str
    error: str | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_dict(self) -> dict:
        d = asdict(self)
        d["notes"] = list(self.notes)
        return d


def _source_name(item: ImageInput, i: int) -> str:
    if isinstance(item, (str, os.PathLike)):
        return str(item)
    if isinstance(item, Image.Image):
        return getattr(item, "filename", "") or f"<image {i}>"
    return f"<bytes {i}>"


class _DecodeDataset(torch.utils.data.Dataset):
    """Decode + eval preprocessing in worker processes; never raises for a bad file."""

    def __init__(self, items: Sequence[ImageInput], policy: PreprocessPolicy, max_pixels: int):
        self.items, self.policy, self.max_pixels = items, policy, max_pixels

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        try:
            dec = decode_image(self.items[i], max_pixels=self.max_pixels, draft_min_side=draft_side(self.policy))
            return i, to_tensor(prepare(dec.image, self.policy, train=False)), None, dec.notes
        except ImageDecodeError as exc:
            return i, None, exc.reason, ()


def _collate(items):
    return items


class Detector:
    """A trained MPFT detector ready for inference."""

    def __init__(self, model, config: DetectorConfig, path: Path | None, device: torch.device):
        self.model = model.to(device).eval()
        self.config = config
        self.path = path
        self.device = device
        self.policy = PreprocessPolicy.from_dict(config.preprocess)
        self.threshold = float(config.threshold)
        self.uncertain_band = float(config.uncertain_band)
        self.max_pixels = DEFAULT_MAX_PIXELS
        digest = ""
        if path is not None and (path / WEIGHTS_NAME).is_file():
            digest = hashlib.sha256((path / WEIGHTS_NAME).read_bytes()).hexdigest()[:12]
        name = (
            "default"
            if path is not None and path.resolve() == DEFAULT_DETECTOR_DIR
            else (path.name if path else "in-memory")
        )
        self.model_id = f"mpft-{name}-{config.tune.get('strategy')}-{digest}" if digest else f"mpft-{name}"
        self.precision = model_precision(model)
        if self.precision != "fp32":
            # int8 scores differ slightly from fp32 ones: results must say which produced them
            self.model_id += f"-{self.precision}"

    @classmethod
    def load(
        cls,
        path: str | os.PathLike | None = None,
        *,
        device: str = "cpu",
        encoder=None,
        precision: str = "fp32",
    ) -> Detector:
        """Load a checkpoint directory; ``None`` loads the detector shipped with mpft.

        ``precision``: "fp32" (as trained), "bf16" (bf16 autocast) or "int8" (CPU only); see
        :mod:`mpft.precision` and docs/performance.md for their speed and accuracy.
        """
        device = precision_device(precision, device)
        p = Path(path) if path is not None else DEFAULT_DETECTOR_DIR
        if path is None and not (p / "config.json").is_file():
            raise CheckpointError(
                f"no default detector is installed at {p}; pass --model RUN_DIR/best (train one with `mpft train`)"
            )
        model, config = load_checkpoint(p, encoder=encoder)
        # inference never trains adapters: folding LoRA into the weights is exact (max |dp| 2e-7) and
        # 1.14x faster on CPU (docs/performance.md, speed paths). A caller's encoder may be shared by
        # the loaded model (linear heads): then the merge works on a copy, which the precision
        # conversion may change in place; otherwise the freshly loaded model is ours to convert.
        model = merge_lora(model, inplace=encoder is None)
        model = apply_precision(model, precision, inplace=True)
        return cls(model, config, p, resolve_device(device))

    # ---- decisions ----------------------------------------------------------------------------
    def verdict(self, probability: float) -> str:
        """generated / real, or uncertain within ``uncertain_band`` of the threshold."""
        if abs(probability - self.threshold) < self.uncertain_band:
            return "uncertain"
        return "generated" if probability >= self.threshold else "real"

    def set_band(self, band: float) -> None:
        if not 0 <= band < 0.5:
            raise ConfigError(f"uncertain band must be in [0, 0.5), got {band}")
        self.uncertain_band = band

    # ---- scoring ------------------------------------------------------------------------------
    @torch.inference_mode()
    def score_tensors(self, pixels: torch.Tensor) -> np.ndarray:
        """pixels: (B, 3, S, S) uint8 or [0, 1] float -> (B,) P(generated)."""
        with autocast_for(self.device, self.precision):
            logits = self.model(pixels.to(self.device))
        return torch.sigmoid(logits.float()).cpu().numpy()

    def prepare(self, image: ImageInput) -> tuple[DecodedImage, torch.Tensor]:
        """Decode one input and return it with its (3, S, S) uint8 model input."""
        dec = decode_image(image, max_pixels=self.max_pixels, draft_min_side=draft_side(self.policy))
        return dec, to_tensor(prepare(dec.image, self.policy, train=False))

    def predict_iter(
        self, images: Iterable[ImageInput], *, batch_size: int = 16, workers: int = 0
    ) -> Iterator[Prediction]:
        """Stream predictions in input order, one batch at a time (a long run loses nothing)."""
        items = list(images)
        if workers > 0 and all(isinstance(x, (str, os.PathLike)) for x in items):
            loader = torch.utils.data.DataLoader(
                _DecodeDataset(items, self.policy, self.max_pixels),
                batch_size=batch_size,
                num_workers=workers,
                collate_fn=_collate,
            )
            batches: Iterable = loader
        else:
            ds = _DecodeDataset(items, self.policy, self.max_pixels)
            batches = (
                [ds[j] for j in range(i, min(i + batch_size, len(items)))]
                for i in range(0, len(items), batch_size)
            )
        for batch in batches:
            good = [b for b in batch if b[1] is not None]
            probs = self.score_tensors(torch.stack([b[1] for b in good])) if good else np.array([])
            pmap = {b[0]: float(p) for b, p in zip(good, probs, strict=True)}
            for i, _, err, notes in batch:
                src = _source_name(items[i], i)
                if err is not None:
                    yield Prediction(src, None, "error", self.threshold, self.model_id, error=err)
                else:
                    p = pmap[i]
                    yield Prediction(
                        src, p, self.verdict(p), self.threshold, self.model_id, notes=tuple(notes)
                    )

    def predict(self, images: ImageInput | Sequence[ImageInput], *, batch_size: int = 16) -> list[Prediction]:
        """Score paths, PIL images or encoded bytes; a bad input gets an ``error`` result, not an exception."""
        if isinstance(images, (str, os.PathLike, bytes, Image.Image)):
            images = [images]
        return list(self.predict_iter(images, batch_size=batch_size))

    def info(self) -> dict:
        return {
            "model_id": self.model_id,
            "path": str(self.path) if self.path else None,
            "backbone": self.config.backbone,
            "tune": self.config.tune,
            "threshold": self.threshold,
            "uncertain_band": self.uncertain_band,
            "thresholds": self.config.thresholds,
            "preprocess": self.config.preprocess,
            "precision": self.precision,
        }
