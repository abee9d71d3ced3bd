"""Per-epoch validation: the validation images scored as the trained detector will score them, and
the figures that pick the best epoch, computed by :mod:`mpft.evaluation.metrics` (the code of
``mpft eval``)."""

from __future__ import annotations

import math
import sys

import numpy as np
import torch

from mpft.config import DEFAULT_THRESHOLD
from mpft.data.dataset import ImageDataset
from mpft.data.samples import Sample
from mpft.evaluation.metrics import compute_metrics
from mpft.inference import score_dataset
from mpft.model import DetectorModel
from mpft.training.config import TrainConfig

#: The figures of a history record's ``"val"`` entry (besides ``n`` and ``skipped``).
VAL_FIGURES = ("acc", "ap", "real_acc", "fake_acc")


def validate(model: DetectorModel, samples: list[Sample], cfg: TrainConfig, device: torch.device) -> dict:
    """``{"acc", "ap", "real_acc", "fake_acc", "n", "skipped"}`` of ``model`` on ``samples``.

    Accuracies are at the uncalibrated threshold (:data:`~mpft.config.DEFAULT_THRESHOLD`); a figure
    that needs an absent class (or any image) is NaN, as the history has always recorded it.
    """
    # validation scores as the trained detector will: its views, combined by its rule
    policy = cfg.preprocess.for_backbone(model.encoder.image_size, model.encoder.interpolation)
    ds = ImageDataset(samples, policy, train=False, views=cfg.views)
    scores, errors = score_dataset(
        model,
        ds,
        combine=cfg.views.combine,
        batch_size=max(cfg.batch_size, 32),
        workers=cfg.workers,
        device=device,
        desc="validating",
        progress=sys.stderr.isatty(),
    )
    labels = np.array([s.label for s in samples])
    ok = ~np.isnan(scores)
    record: dict = dict.fromkeys(VAL_FIGURES, math.nan)
    if ok.any():
        # n_boot=0: no intervals; validation only ranks epochs
        m = compute_metrics(labels[ok], scores[ok], threshold=DEFAULT_THRESHOLD, n_boot=0)
        # None (a class is absent) stays NaN in the history: best-epoch choice and the CLI read floats
        record.update({k: math.nan if getattr(m, k) is None else float(getattr(m, k)) for k in VAL_FIGURES})
    record["n"], record["skipped"] = int(ok.sum()), len(errors)
    return record
