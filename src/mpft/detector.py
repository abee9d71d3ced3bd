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
from mpft.data.images import DecodedImage
from mpft.data.limits import DEFAULT_MAX_PIXELS
from mpft.data.transforms import PreprocessPolicy
from mpft.decision import VERDICTS, Decision, normalise_thresholds  # noqa: F401  (VERDICTS: public here too)
from mpft.detectors import DEFAULT_DETECTOR_DIR
from mpft.errors import CheckpointError, ConfigError, ImageDecodeError
from mpft.pipeline import Prepared, Preprocessor, Scorer
from mpft.precision import apply_precision, autocast_for, merge_lora, model_precision, precision_device
from mpft.runtime import resolve_device
from mpft.views import ViewConfig, parse_views

log = logging.getLogger(__name__)

ImageInput = str | os.PathLike | bytes | Image.Image


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
    if isinstance(item, (bytes, bytearray, memoryview)):
        return f"<bytes {i}>"
    return f"<{type(item).__name__} {i}>"


class _DecodeDataset(torch.utils.data.Dataset):
    """Decode + view preprocessing in worker processes; never raises for a bad file."""

    def __init__(self, items: Sequence[ImageInput], pre: Preprocessor):
        self.items, self.pre = items, pre

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[int, Prepared | None, str | None]:
        try:
            return i, self.pre(self.items[i]), None
        except ImageDecodeError as exc:
            return i, None, exc.reason


def _collate(items):
    return items


class Detector:
    """A trained MPFT detector ready for inference."""

    def __init__(
        self,
        model,
        config: DetectorConfig,
        path: Path | None,
        device: torch.device,
        *,
        views: str | ViewConfig | None = None,
    ):
        self.model = model.to(device).eval()
        self.config = config
        self.path = path
        self.device = device
        # the backbone sets the input size; the checkpoint only says how to resize or crop to it
        enc = model.encoder
        self.policy = PreprocessPolicy.from_dict(config.preprocess).for_backbone(enc.image_size, enc.interpolation)
        # the checkpoint's views unless the caller overrides them (--views)
        self.views = parse_views(views) if views is not None else ViewConfig.from_dict(config.views or {})
        try:
            self.decision = Decision.from_checkpoint(config.threshold, config.uncertain_band, config.thresholds)
        except ConfigError as exc:
            raise CheckpointError(f"{path or 'detector config'}: {exc}") from exc
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
        views: str | ViewConfig | None = None,
    ) -> Detector:
        """Load a checkpoint directory; ``None`` loads the detector shipped with mpft.

        ``precision``: "fp32" (as trained), "bf16" (bf16 autocast) or "int8" (CPU only); see
        :mod:`mpft.precision` and docs/performance.md for their speed and accuracy.
        ``views``: which crops are scored and how they combine (``"center"``, ``"grid:2"``,
        ``"grid:3+whole@max"``, see :mod:`mpft.views`); None uses the checkpoint's own setting.
        This is the only checkpoint loader for inference: ``eval``, ``predict``, ``serve`` and
        ``explain`` all run the graph it builds.
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
        model = apply_precision(model, precision, inplace=True, device=device)
        return cls(model, config, p, resolve_device(device), views=views)

    # ---- decisions ----------------------------------------------------------------------------
    @property
    def threshold(self) -> float:
        return self.decision.threshold

    @threshold.setter
    def threshold(self, value: float) -> None:
        self.decision = self.decision.override(threshold=value)

    @property
    def uncertain_band(self) -> float:
        return self.decision.band

    @uncertain_band.setter
    def uncertain_band(self, value: float) -> None:
        self.decision = self.decision.override(band=value)

    def verdict(self, probability: float) -> str:
        """generated / real, or uncertain within the band around the threshold (:class:`Decision`)."""
        return self.decision.verdict(probability)

    def set_band(self, band: float) -> None:
        self.uncertain_band = band

    # ---- scoring ------------------------------------------------------------------------------
    @property
    def preprocessor(self) -> Preprocessor:
        return Preprocessor(self.policy, self.views, self.max_pixels)

    def scorer(self, batch_size: int = 32) -> Scorer:
        return Scorer(self.model, device=self.device, combine=self.views.combine, batch_size=batch_size,
                      precision=self.precision)

    @torch.inference_mode()
    def score_tensors(self, pixels: torch.Tensor) -> np.ndarray:
        """pixels: (B, 3, S, S) uint8 or [0, 1] float, one view per image -> (B,) P(generated)."""
        with autocast_for(self.device, self.precision):
            logits = self.model(pixels.to(self.device))
        return torch.sigmoid(logits.float()).cpu().numpy()

    def prepare(self, image: ImageInput) -> tuple[DecodedImage, torch.Tensor]:
        """Decode one input and return it with its (V, 3, S, S) uint8 views (``self.views``)."""
        return self.preprocessor.decode(image)

    def predict_iter(
        self, images: Iterable[ImageInput], *, batch_size: int = 16, workers: int = 0
    ) -> Iterator[Prediction]:
        """Stream predictions in input order, one batch of images at a time (a long run loses nothing)."""
        items = list(images)
        ds = _DecodeDataset(items, self.preprocessor)
        if workers > 0 and all(isinstance(x, (str, os.PathLike)) for x in items):
            batches: Iterable = torch.utils.data.DataLoader(
                ds, batch_size=batch_size, num_workers=workers, collate_fn=_collate
            )
        else:
            batches = (
                [ds[j] for j in range(i, min(i + batch_size, len(items)))]
                for i in range(0, len(items), batch_size)
            )
        scorer = self.batch_scorer(batch_size)
        for batch in batches:
            yield from self.score_batch(
                [_source_name(items[i], i) for i, _, _ in batch], [(prep, err) for _, prep, err in batch], scorer
            )

    def batch_scorer(self, batch_size: int = 16) -> Scorer:
        """The scorer :meth:`predict_iter` uses for batches of ``batch_size`` images."""
        return self.scorer(batch_size=max(batch_size, 16))

    def score_batch(
        self, sources: Sequence[str], decoded: Sequence[tuple[Prepared | None, str | None]], scorer: Scorer
    ) -> list[Prediction]:
        """One batch of decoded inputs (views, or the decoding error) -> its predictions, in order.

        The views of the whole batch go through one :meth:`Scorer.score` call: engines that split
        the work elsewhere (``mpft predict --engine ray``) call this with the same batches to get
        the same probabilities, bit for bit.
        """
        good = [(i, prep) for i, (prep, _) in enumerate(decoded) if prep is not None]
        probs = scorer.score([prep.pixels for _, prep in good])
        pmap = {i: float(p) for (i, _), p in zip(good, probs, strict=True)}
        out = []
        for i, (src, (prep, err)) in enumerate(zip(sources, decoded, strict=True)):
            if prep is None:
                out.append(Prediction(src, None, "error", self.threshold, self.model_id, error=err))
            else:
                p = pmap[i]
                out.append(Prediction(src, p, self.verdict(p), self.threshold, self.model_id, notes=prep.notes))
        return out

    def predict(self, images: ImageInput | Sequence[ImageInput], *, batch_size: int = 16) -> list[Prediction]:
        """Score paths, PIL images or encoded bytes; a bad input gets an ``error`` result, not an exception."""
        if isinstance(images, (str, os.PathLike, bytes, Image.Image)) or not isinstance(images, Iterable):
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
            "decision": self.decision.to_dict(),
            "thresholds": normalise_thresholds(self.config.thresholds),
            "preprocess": self.config.preprocess,
            "views": self.views.spec,
            "precision": self.precision,
        }
