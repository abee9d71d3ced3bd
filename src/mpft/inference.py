"""Batched scoring of a dataset (``eval``, training validation) through the one scorer.

Decoding and view preparation happen in :class:`mpft.data.dataset.ImageDataset` (workers); the
forward passes and the view combination are :class:`mpft.pipeline.Scorer`'s, the same object
``Detector.predict`` uses, so ``mpft eval`` and ``mpft predict`` give identical scores.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
from tqdm import tqdm

from mpft.data.dataset import ImageDataset, make_loader
from mpft.model import DetectorModel
from mpft.pipeline import Scorer
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
    combine: str = "mean",
) -> tuple[np.ndarray, dict[int, str]]:
    """Probability of "generated" for every item; failed items get NaN and a reason.

    ``combine``: how the views of one image combine (datasets built with ``views``).
    Returns (scores (N,) float64 with NaN where decoding failed, {index: reason}).
    """
    scorer = Scorer(model, device=device, combine=combine, batch_size=batch_size)
    n = len(dataset)
    scores = np.full(n, np.nan, dtype=np.float64)
    errors: dict[int, str] = {}
    loader = make_loader(dataset, batch_size, shuffle=False, workers=workers, seed=0, sampler=indices)
    total = len(indices) if indices is not None else n
    bar = tqdm(total=total, desc=desc, unit="img", disable=not progress, leave=False, dynamic_ncols=True)
    gen = torch.Generator().manual_seed(0)
    use_mask = mask if mask is not None and mask.active else None
    for batch in loader:
        for idx, reason in batch.errors:
            errors[int(idx)] = reason
        if len(batch):
            scores[batch.indices.numpy()] = scorer.score(batch.view_stacks(), use_mask, gen)
        bar.update(len(batch) + len(batch.errors))
    bar.close()
    return scores, errors
