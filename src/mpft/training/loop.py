"""The MPFT training loop: TAM-masked fine-tuning of a CLIP encoder with a one-logit head.

Single process, or data parallel under ``torchrun --nproc-per-node N -m mpft train ...``
(gloo on CPU, nccl on GPU). ``batch_size`` is the global batch: each of N processes takes
batch_size / N, so N processes reproduce single-process training on the same global batch.
Only the main process validates and writes checkpoints and the resume state.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler
from tqdm import tqdm

from mpft.data.dataset import Batch, ImageDataset
from mpft.data.samples import Sample, summarize
from mpft.errors import ConfigError
from mpft.model import DetectorModel, create_model
from mpft.precision import autocast_for
from mpft.runtime import DistInfo, init_distributed, local_device, resolve_device, seed_everything
from mpft.tam import apply_mask
from mpft.training.config import CACHE_AUTO, TrainConfig, TrainResult
from mpft.training.data import make_training_loader, record_skipped, resolve_training_data, training_dataset
from mpft.training.features import CacheReport, FeatureDataset, cached_features
from mpft.training.optim import make_optimizer
from mpft.training.outputs import save_epoch_checkpoints, training_summary
from mpft.training.state import (
    Progress,
    ResumeState,
    existing_state,
    read_resume_state,
    restore_rng,
    save_resume_state,
)
from mpft.training.validate import validate

log = logging.getLogger(__name__)


@dataclass
class _Run:
    """This process's share of a run: what every epoch uses."""

    cfg: TrainConfig
    device: torch.device
    dist: DistInfo
    model: DetectorModel
    forward: torch.nn.Module  # the model, or its DistributedDataParallel wrapper
    samples: list[Sample]
    dataset: ImageDataset | FeatureDataset  # FeatureDataset: the head trains on cached features
    sampler: Sampler
    loader: DataLoader
    optim: torch.optim.AdamW
    sched: torch.optim.lr_scheduler.LambdaLR
    loss_fn: torch.nn.Module
    cache: CacheReport | None = None

    @property
    def cached(self) -> bool:
        return self.cache is not None


def train(cfg: TrainConfig, *, encoder=None, progress: bool | None = None) -> TrainResult:
    """Fine-tune a detector; writes ``out/best``, ``out/last`` (checkpoints) and ``out/resume/``.

    ``encoder``: an already-loaded backbone (copied, never changed) instead of loading ``cfg.backbone``.
    ``progress``: progress bars (default: when stderr is a terminal).
    """
    progress = sys.stderr.isatty() if progress is None else progress
    device, dist = _start(cfg)
    out = Path(cfg.out)
    train_samples, val_samples, sources = resolve_training_data(cfg)
    log.info("training on %s", summarize(train_samples))
    resumed = _resume_state(cfg, out, dist)  # before the model loads: a bad state fails fast
    run = _build(cfg, device, dist, train_samples, sources, encoder, progress)
    done = Progress()
    if resumed is not None:
        resumed.restore(run.model, run.optim, run.sched)
        if dist.is_main:  # the saved global RNG states are the main process's
            restore_rng(resumed.rng, device)
        done = resumed.progress
        log.info("resuming after epoch %d of %d", done.epoch + 1, cfg.epochs)
    summary = training_summary(cfg, train_samples, val_samples is not None, dist.world_size)
    if run.cache is not None:
        summary["feature_cache"] = run.cache.to_dict()
    for epoch in range(done.epoch + 1, cfg.epochs):
        record = _train_epoch(run, epoch, done, progress)
        _barrier(dist)
        if dist.is_main:
            _end_epoch(run, out, epoch, record, val_samples, summary, done)
        _barrier(dist)
    if done.skipped and dist.is_main:
        log.warning(
            "%d training files were skipped:\n%s",
            len(done.skipped),
            "\n".join(f"  {p}: {r}" for p, r in sorted(done.skipped.items())),
        )
    if dist.enabled:
        torch.distributed.destroy_process_group()
    return TrainResult(
        out=out,
        best=out / "best",
        last=out / "last",
        history=done.history,
        skipped=done.skipped,
        seconds=done.seconds,
        images_per_second=done.images / max(done.seconds, 1e-9),
    )


def _start(cfg: TrainConfig) -> tuple[torch.device, DistInfo]:
    """This process's device and place among the torchrun processes; seeds and determinism."""
    device0 = resolve_device(cfg.device)
    dist = init_distributed(device0)
    device = local_device(device0, dist)
    if cfg.batch_size % dist.world_size:
        raise ConfigError(
            f"--batch-size {cfg.batch_size} is the global batch and must divide by the {dist.world_size} processes"
        )
    seed_everything(cfg.seed)
    if device.type == "cpu":
        torch.use_deterministic_algorithms(True, warn_only=True)
    return device, dist


def _resume_state(cfg: TrainConfig, out: Path, dist: DistInfo) -> ResumeState | None:
    if cfg.resume:
        return read_resume_state(out, cfg.identity())
    found = existing_state(out)
    if found is not None and dist.is_main:
        log.warning("%s exists from an earlier run; starting over (use --resume to continue it)", found)
    return None


def _build(
    cfg: TrainConfig,
    device: torch.device,
    dist: DistInfo,
    samples: list[Sample],
    sources: list[int],
    encoder,
    progress: bool,
) -> _Run:
    """Model, data and optimizer of a run, in the order that keeps seeded runs reproducible."""
    # the factory copies a caller's encoder when tuning would change it in place
    model = create_model(encoder if encoder is not None else cfg.backbone, cfg.tune).to(device)
    # the backbone sets the input size (position embeddings are not interpolated); the caller's policy stays as given
    policy = cfg.preprocess.for_backbone(model.encoder.image_size, model.encoder.interpolation)
    forward: torch.nn.Module = model
    if dist.enabled:
        forward = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    dataset: ImageDataset | FeatureDataset = training_dataset(cfg, samples, policy)
    cache_dir, cache, workers = _cache_dir(cfg, dist), None, cfg.workers
    if cache_dir is not None:
        feats, errors, cache = cached_features(
            dataset, model, cache_dir, backbone=cfg.backbone, device=device, precision=cfg.feature_precision,
            workers=cfg.workers, progress=progress,
        )
        # features are in memory: worker processes would only copy them
        dataset, workers = FeatureDataset(feats, [s.label for s in samples], errors, cfg.seed), 0
    sampler, loader = make_training_loader(cfg, dataset, samples, sources, dist, workers=workers)
    optim, sched = make_optimizer(model, cfg, len(loader) * cfg.epochs)
    return _Run(
        cfg, device, dist, model, forward, samples, dataset, sampler, loader, optim, sched,
        torch.nn.BCEWithLogitsLoss(), cache,
    )


def _cache_dir(cfg: TrainConfig, dist: DistInfo) -> Path | None:
    folder = cfg.feature_cache_dir()
    if folder is not None and dist.enabled:
        # the cache is filled by one process; under torchrun each would extract every image
        if cfg.feature_cache != CACHE_AUTO:
            raise ConfigError("--feature-cache trains in one process: run it without torchrun")
        log.info("torchrun: the feature cache is off; the backbone runs at every step")
        return None
    return folder


def _train_epoch(run: _Run, epoch: int, done: Progress, progress: bool) -> dict:
    """One pass over the loader; returns the epoch's history record (without validation)."""
    cfg, dist = run.cfg, run.dist
    run.sampler.set_epoch(epoch)  # type: ignore[attr-defined]
    run.dataset.set_epoch(epoch)
    run.model.train()
    # masks are a function of (seed, epoch, rank), so a redone epoch draws the same ones
    gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch * 7919 + dist.rank)
    bar = tqdm(
        total=len(run.loader),
        desc=f"epoch {epoch + 1}/{cfg.epochs}",
        disable=not (progress and dist.is_main),
        dynamic_ncols=True,
        leave=False,
    )
    t0, losses, seen = time.perf_counter(), [], 0
    for batch in run.loader:
        record_skipped(batch.errors, run.samples, done.skipped)
        # under DDP an empty shard still steps: the other processes wait for its gradients
        if batch.pixels.shape[0] == 0 and not dist.enabled:
            bar.update(1)
            continue
        losses.append(_train_step(run, batch, gen))
        seen += batch.pixels.shape[0]
        dt = time.perf_counter() - t0
        bar.set_postfix(loss=f"{np.mean(losses[-20:]):.4f}", img_s=f"{seen * dist.world_size / dt:.1f}")
        bar.update(1)
    bar.close()
    seconds = time.perf_counter() - t0
    done.seconds += seconds
    done.images += seen * dist.world_size
    return {
        "epoch": epoch + 1,
        "loss": float(np.mean(losses)) if losses else float("nan"),
        "seconds": round(seconds, 2),
        "images_per_second": round(seen * dist.world_size / max(seconds, 1e-9), 2),
    }


def _train_step(run: _Run, batch: Batch, gen: torch.Generator) -> float:
    """Mask, forward, loss, backward, clip, optimizer and scheduler step; returns the loss.

    With cached features ``batch.pixels`` is the head's input (B, F): only the head runs.
    """
    pixels = batch.pixels.to(run.device, non_blocking=True)
    labels = batch.labels.to(run.device)
    if run.cached:
        logits = run.model.head(pixels).squeeze(-1)
    else:
        enc = run.model.encoder
        pixels, keep = apply_mask(pixels, run.cfg.mask, enc.patch_size, fill=enc.mean, generator=gen)
        with autocast_for(run.device):
            logits = run.forward(pixels, keep=keep)
    loss = run.loss_fn(logits.float(), labels) if pixels.shape[0] else logits.sum() * 0.0
    run.optim.zero_grad(set_to_none=True)
    loss.backward()
    if run.cfg.clip_grad > 0:
        torch.nn.utils.clip_grad_norm_([p for p in run.model.parameters() if p.requires_grad], run.cfg.clip_grad)
    run.optim.step()
    run.sched.step()
    return float(loss.detach())


def _end_epoch(
    run: _Run, out: Path, epoch: int, record: dict, val_samples: list[Sample] | None, summary: dict, done: Progress
) -> None:
    """Main process: validate, record, write last/ (and best/), then the resume state."""
    if val_samples is not None:
        record["val"] = validate(run.model, val_samples, run.cfg, run.device)
    done.history.append(record)
    log.info("epoch %d: %s", epoch + 1, json.dumps(record))
    full = dict(summary, history=done.history, skipped_files=done.skipped, train_seconds=round(done.seconds, 2))
    done.best_key = save_epoch_checkpoints(out, run.model, run.cfg, full, record, done.best_key)
    done.epoch = epoch
    # last: a run killed before this line redoes the epoch, whose checkpoints were written atomically
    save_resume_state(out, run.cfg.identity(), done, run.model, run.optim, run.sched, run.device)


def _barrier(dist: DistInfo) -> None:
    if dist.enabled:
        torch.distributed.barrier()
