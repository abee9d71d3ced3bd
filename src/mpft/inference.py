"""Batched scoring of a dataset with a detector (shared by train's validation, eval and predict)."""

from __future__ import annotations

import logging

import numpy as np
import torch
from tqdm import tqdm

from mpft.data.dataset import ImageDataset, make_loader
from mpft.model import DetectorModel
from mpft.precision import autocast_for, model_precision
from mpft.tam import MaskConfig

log = logging.getLogger(__name__)


@torch.inference_mode()
def score_dataset(
    model: DetectorModel,
    dataset: ImageDataset,
    *,
    batch_size: int = 32,
    workers: int = 0,
    device: torch.device | None = None,
    mask: MaskConfig | None = None,
    progress: bool = False,
    desc: str = "scoring",
    indices: list[int] | None = None,
) -> tuple[np.ndarray, dict[int, str]]:
    """Probability of "generated" for every item; failed items get NaN and a reason.

    Returns (scores (N,) float64 with NaN where decoding failed, {index: reason}).
    """
    device = device or next(model.parameters()).device
    model.eval()
    n = len(dataset)
    scores = np.full(n, np.nan, dtype=np.float64)
    errors: dict[int, str] = {}
    precision = model_precision(model)
    loader = make_loader(dataset, batch_size, shuffle=False, workers=workers, seed=0, sampler=indices)
    total = len(indices) if indices is not None else n
    bar = tqdm(total=total, desc=desc, unit="img", disable=not progress, leave=False, dynamic_ncols=True)
    gen = torch.Generator().manual_seed(0)
    for batch in loader:
        for idx, reason in batch.errors:
            errors[int(idx)] = reason
        if batch.pixels.shape[0]:
            with autocast_for(device, precision):
                logits = model(batch.pixels.to(device, non_blocking=True), mask, generator=gen)
            scores[batch.indices.numpy()] = torch.sigmoid(logits.float()).cpu().numpy()
        bar.update(batch.pixels.shape[0] + len(batch.errors))
    bar.close()
    return scores, errors
