"""What a run records after each epoch: the ``last/`` checkpoint, the ``best/`` one when the epoch
beats it, and the ``training`` block of their ``config.json`` (command, data, settings, history)."""

from __future__ import annotations

from pathlib import Path

import torch

from mpft import __version__
from mpft.checkpoint import DetectorConfig, save_checkpoint
from mpft.config import DEFAULT_THRESHOLD
from mpft.data.samples import Sample, summarize
from mpft.model import DetectorModel
from mpft.training.config import TrainConfig


def training_summary(cfg: TrainConfig, samples: list[Sample], validates: bool, world_size: int) -> dict:
    """The fixed part of a checkpoint's ``training`` block (the history is added per epoch)."""
    return {
        "command": cfg.command,
        "data": cfg.data,
        "val": str(cfg.val) if cfg.val else ("<data>/val" if validates else None),
        "n_train": summarize(samples),
        "settings": cfg.to_dict(),
        "world_size": world_size,
        "torch": torch.__version__,
        "mpft": __version__,
    }


def detector_config(cfg: TrainConfig, model: DetectorModel, training: dict) -> DetectorConfig:
    """The ``config.json`` of a checkpoint of ``model`` trained with ``cfg``."""
    return DetectorConfig(
        backbone=cfg.backbone,
        backbone_sha256=model.encoder.weights_sha256,
        tune=cfg.tune.to_dict(),
        mask=cfg.mask.to_dict(),
        preprocess=cfg.preprocess.to_dict(),
        views=cfg.views.to_dict(),
        threshold=DEFAULT_THRESHOLD,
        thresholds={"uncalibrated": {"value": DEFAULT_THRESHOLD}},
        training=training,
    )


def best_key(record: dict) -> list:
    """How epochs rank for ``best/``: validation AP, then accuracy; without validation, the later epoch."""
    return [record["val"]["ap"], record["val"]["acc"]] if "val" in record else [record["epoch"] - 1]


def save_epoch_checkpoints(
    out: Path, model: DetectorModel, cfg: TrainConfig, summary: dict, record: dict, best: list | None
) -> list | None:
    """Write ``last/`` and, when this epoch ranks at least as high as ``best``, ``best/``.

    ``summary`` is the full ``training`` block (history included). Returns the best key after this epoch.
    """
    save_checkpoint(out / "last", model, detector_config(cfg, model, summary))
    key = best_key(record)
    # ties go to the later epoch
    if best is None or tuple(key) >= tuple(best):
        save_checkpoint(out / "best", model, detector_config(cfg, model, dict(summary, best_epoch=record["epoch"])))
        return key
    return best
