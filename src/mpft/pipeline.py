"""The one inference path: a preprocessor (source -> views or a per-file error) and a scorer.

Every caller that turns images into scores goes through here: ``Detector.predict`` (CLI
``predict``, ``serve``, the Python API), :func:`mpft.inference.score_dataset` (``eval``, training
validation) and the benchmarks. Multi-view scoring therefore exists once:

    source --decode_image--> RGB --view_pixels--> (V, 3, S, S) uint8 --Scorer--> one P(generated)

The scorer batches the views of several images into one forward pass and combines each image's
view logits with :func:`mpft.views.combine_logits` (the rule of the :class:`ViewConfig`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch
from PIL import Image

from mpft.data.images import DecodedImage, decode_image
from mpft.data.limits import DEFAULT_MAX_PIXELS
from mpft.data.transforms import PreprocessPolicy, draft_side, resize_shorter
from mpft.precision import autocast_for, model_precision
from mpft.tam import apply_mask
from mpft.views import ViewConfig, combine_logits, make_views

log = logging.getLogger(__name__)

__all__ = ["Prepared", "Preprocessor", "Scorer", "view_pixels"]


def view_pixels(img: Image.Image, policy: PreprocessPolicy, views: ViewConfig) -> torch.Tensor:
    """An RGB image -> (V, 3, S, S) uint8 model inputs.

    A resizing policy first brings the shorter side to ``policy.side``; the views are then cut from
    that image (so ``center`` is exactly the single crop of :func:`mpft.data.transforms.prepare`).
    """
    if img.mode != "RGB":
        img = img.convert("RGB")
    if policy.resize and min(img.size) != policy.side:
        img = resize_shorter(img, policy.side, policy.resample)
    arr = make_views(img, policy.side, views, policy.resample)
    return torch.from_numpy(np.ascontiguousarray(arr.transpose(0, 3, 1, 2)))


@dataclass(frozen=True)
class Prepared:
    """One decoded input: its views (V, 3, S, S) uint8 and decoding notes (e.g. EXIF rotation)."""

    pixels: torch.Tensor
    notes: tuple[str, ...] = ()
    size: tuple[int, int] = (0, 0)


class Preprocessor:
    """Path, bytes or PIL image -> :class:`Prepared`; raises ``ImageDecodeError`` for a bad input.

    ``hook``: a change to every decoded image before its views are cut (format normalisation and
    perturbations in ``mpft eval``, :class:`mpft.data.dataset.ImageDataset`); it acts on the
    full-size image, so reduced-scale decoding is off when there is one.
    """

    def __init__(self, policy: PreprocessPolicy, views: ViewConfig, max_pixels: int = DEFAULT_MAX_PIXELS,
                 hook: Callable[[Image.Image], Image.Image] | None = None):
        self.policy, self.views, self.max_pixels, self.hook = policy, views, max_pixels, hook

    @property
    def draft_min_side(self) -> int | None:
        # only a resizing policy may decode at reduced scale: its views are cut from the resized image
        return draft_side(self.policy) if self.hook is None else None

    def image(self, source) -> DecodedImage:
        """The decoded input (source name, notes), the hook applied to its image."""
        dec = decode_image(source, max_pixels=self.max_pixels, draft_min_side=self.draft_min_side)
        if self.hook is not None:
            dec = replace(dec, image=self.hook(dec.image))
        return dec

    def decode(self, source) -> tuple[DecodedImage, torch.Tensor]:
        """The decoded input (source name, notes) and its (V, 3, S, S) uint8 views."""
        dec = self.image(source)
        return dec, view_pixels(dec.image, self.policy, self.views)

    def __call__(self, source) -> Prepared:
        dec, pixels = self.decode(source)
        return Prepared(pixels, tuple(dec.notes), dec.image.size)


class Scorer:
    """Batched, precision-aware scoring of per-image view stacks with one combination rule."""

    def __init__(self, model: torch.nn.Module, *, device: torch.device | None = None, combine: str = "mean",
                 batch_size: int = 32, precision: str | None = None):
        self.model = model
        self.device = device or next(model.parameters()).device
        self.combine = combine
        self.batch_size = max(1, int(batch_size))
        self.precision = precision or model_precision(model)

    @torch.inference_mode()
    def logits(self, pixels: torch.Tensor, mask=None, generator: torch.Generator | None = None) -> torch.Tensor:
        """(N, 3, S, S) uint8 or [0, 1] float -> (N,) float32 logits, ``batch_size`` views per forward pass."""
        self.model.eval()
        out = []
        for i in range(0, pixels.shape[0], self.batch_size):
            chunk = pixels[i : i + self.batch_size].to(self.device, non_blocking=True)
            with autocast_for(self.device, self.precision):
                if mask is None:
                    lg = self.model(chunk)
                else:
                    enc = self.model.encoder
                    chunk, keep = apply_mask(chunk, mask, enc.patch_size, fill=enc.mean, generator=generator)
                    lg = self.model(chunk, keep=keep)
            out.append(lg.float().cpu())
        return torch.cat(out) if out else torch.zeros(0)

    def combined_logits(self, views: Sequence[torch.Tensor], mask=None,
                        generator: torch.Generator | None = None) -> torch.Tensor:
        """Per-image view stacks [(V_i, 3, S, S)] -> (len(views),) combined logits."""
        if not views:
            return torch.zeros(0)
        counts = [int(v.shape[0]) for v in views]
        return combine_logits(self.logits(torch.cat(list(views)), mask, generator), counts, self.combine)

    def score(self, views: Sequence[torch.Tensor], mask=None, generator: torch.Generator | None = None) -> np.ndarray:
        """Per-image view stacks -> (len(views),) float64 P(generated)."""
        return torch.sigmoid(self.combined_logits(views, mask, generator)).numpy().astype(np.float64)
