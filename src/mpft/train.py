"""The MPFT training loop: TAM-masked fine-tuning of a CLIP encoder with a one-logit head.

Single process, or data parallel under ``torchrun --nproc-per-node N -m mpft train ...``
(gloo on CPU, nccl on GPU). ``batch_size`` is the global batch: each of N processes takes
batch_size / N, so N processes reproduce single-process training on the same global batch.
"""

from __future__ import annotations

import json
import logging
import math
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import average_precision_score
from torch.utils.data.distributed import DistributedSampler
from tqdm import tqdm

from mpft import __version__
from mpft.backbones import DEFAULT_BACKBONE
from mpft.checkpoint import DEFAULT_THRESHOLD, DetectorConfig, save_checkpoint
from mpft.data.dataset import BALANCE_MODES, BalancedSampler, ImageDataset, balance_weights, make_loader
from mpft.data.layouts import (
    Sample,
    balanced_subset,
    discover,
    has_splits,  # re-exported: the one split rule, shared with discover and eval
    require_both_classes,
    summarize,
)
from mpft.data.transforms import Augment, PreprocessPolicy
from mpft.errors import ConfigError, DataError
from mpft.fsutil import atomic_file
from mpft.inference import score_dataset
from mpft.model import DetectorModel, TuneConfig, create_model
from mpft.precision import autocast_for
from mpft.runtime import DistInfo, init_distributed, local_device, resolve_device, seed_everything
from mpft.tam import MaskConfig, apply_mask
from mpft.views import ViewConfig, parse_views

log = logging.getLogger(__name__)

RESUME_NAME = "resume.pt"
BLOCK_LR = 2e-5
LORA_LR = 5e-4


@dataclass
class TrainConfig:
    """Settings of one training run. ``data``: one dataset or several (paths; each a folder layout
    or a CSV manifest); their samples are pooled, and ``balance`` decides how they are drawn."""

    data: str | list[str]
    out: str
    layout: str = "auto"
    val: str | None = None
    validate: bool = True
    backbone: str = DEFAULT_BACKBONE
    tune: TuneConfig = field(default_factory=TuneConfig)
    mask: MaskConfig = field(default_factory=MaskConfig)
    preprocess: PreprocessPolicy = field(default_factory=PreprocessPolicy)
    augment: Augment = field(default_factory=Augment)
    # how batches draw from pooled data: "none" (each image once per epoch), "source" (each data
    # argument's real and generated images get equal shares), "generator" (each generator / real
    # source gets an equal share of its class); see mpft.data.dataset.balance_weights
    balance: str = "none"
    # the views the trained detector scores at inference (recorded in the checkpoint)
    views: ViewConfig = field(default_factory=ViewConfig)
    shots: int | None = None
    # per-epoch validation is for monitoring and choosing the best epoch; `mpft eval` is the full test
    val_limit: int | None = 200
    epochs: int = 2
    batch_size: int = 16
    lr_head: float = 1e-3
    # None: 2e-5 for tuned blocks (last-k, full); 5e-4 for LoRA adapters, which start at zero and
    # barely moved at 2e-5 (loss 0.64 after 3 epochs, runs/default.log in docs/benchmarks.md)
    lr_backbone: float | None = None
    weight_decay: float = 0.01
    warmup: float = 0.1
    clip_grad: float = 1.0
    seed: int = 0
    workers: int = 2
    device: str = "auto"
    resume: bool = False
    command: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.data, (list, tuple)):
            self.data = [str(d) for d in self.data] if len(self.data) != 1 else str(self.data[0])
            if not self.data:
                raise ConfigError("no training data given")
        if self.balance not in BALANCE_MODES:
            raise ConfigError(f"--balance must be one of {BALANCE_MODES}, got {self.balance!r}")
        if isinstance(self.views, str):
            self.views = parse_views(self.views)
        if self.lr_backbone is None:
            self.lr_backbone = LORA_LR if self.tune.strategy == "lora" else BLOCK_LR
        if self.epochs < 1:
            raise ConfigError(f"--epochs must be >= 1, got {self.epochs}")
        if self.batch_size < 1:
            raise ConfigError(f"--batch-size must be >= 1, got {self.batch_size}")
        if self.shots is not None and self.shots < 2:
            raise ConfigError(f"--shots must be >= 2 (one image per class at least), got {self.shots}")
        if not 0 <= self.warmup < 1:
            raise ConfigError(f"--warmup is a fraction of the steps in [0, 1), got {self.warmup}")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["tune"], d["mask"] = self.tune.to_dict(), self.mask.to_dict()
        d["preprocess"], d["augment"] = self.preprocess.to_dict(), self.augment.to_dict()
        d["views"] = self.views.to_dict()
        return d

    def identity(self) -> dict:
        """The settings a resumed run must share with the run it continues."""
        d = self.to_dict()
        for k in ("out", "resume", "workers", "device", "epochs", "command"):
            d.pop(k)
        return d


@dataclass
class TrainResult:
    out: Path
    best: Path
    last: Path
    history: list[dict]
    skipped: dict[str, str]
    seconds: float
    images_per_second: float


def data_roots(cfg: TrainConfig) -> list[str]:
    return list(cfg.data) if isinstance(cfg.data, list) else [cfg.data]


def resolve_training_data(cfg: TrainConfig) -> tuple[list[Sample], list[Sample] | None, list[int]]:
    """(training samples, validation samples or None, the data argument each training sample came from)."""
    train: list[Sample] = []
    val: list[Sample] | None = [] if cfg.validate else None
    sources: list[int] = []
    for k, item in enumerate(data_roots(cfg)):
        root = Path(item)
        if not root.exists():
            raise DataError(f"training data not found: {root}")
        split = has_splits(root)
        found = discover(root, layout=cfg.layout, split="train" if split else None)
        train += found
        sources += [k] * len(found)
        if val is not None and cfg.val is None and split:
            val += discover(root, layout=cfg.layout, split="val")
    if val is not None and cfg.val is not None:
        vroot = Path(cfg.val)
        val = discover(vroot, layout=cfg.layout, split="val" if has_splits(vroot) else None)
    if not val:
        val = None
    require_both_classes(train, "training set")
    if cfg.shots is not None:
        picked = balanced_subset(train, cfg.shots, cfg.seed)
        where = {s: k for s, k in zip(train, sources, strict=True)}
        train, sources = picked, [where[s] for s in picked]
    if val is not None:
        require_both_classes(val, "validation set")
        if cfg.val_limit:
            from mpft.data.layouts import limit_per_class

            val = limit_per_class(val, cfg.val_limit, cfg.seed)
    return train, val, sources


def lr_lambda(total_steps: int, warmup_steps: int):
    def f(step: int) -> float:
        if warmup_steps and step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return f


def _atomic_torch_save(obj, path: Path) -> None:
    with atomic_file(path) as tmp:
        torch.save(obj, tmp)


def validate(model: DetectorModel, samples: list[Sample], cfg: TrainConfig, device: torch.device) -> dict:
    # validation scores as the trained detector will: its views, combined by its rule
    ds = ImageDataset(samples, cfg.preprocess.for_backbone(model.encoder.image_size), train=False, views=cfg.views)
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
    y, p = labels[ok], scores[ok]
    t = DEFAULT_THRESHOLD  # validation chooses the best epoch at the uncalibrated threshold
    acc = float(((p >= t) == (y == 1)).mean()) if len(y) else float("nan")
    ap = float(average_precision_score(y, p)) if len(set(y.tolist())) == 2 else float("nan")
    return {
        "acc": acc,
        "ap": ap,
        "real_acc": float((p[y == 0] < t).mean()) if (y == 0).any() else float("nan"),
        "fake_acc": float((p[y == 1] >= t).mean()) if (y == 1).any() else float("nan"),
        "n": int(ok.sum()),
        "skipped": len(errors),
    }


def _make_config(cfg: TrainConfig, model: DetectorModel, training: dict) -> DetectorConfig:
    return DetectorConfig(
        backbone=cfg.backbone,
        backbone_sha256=model.encoder.weights_sha256,
        tune=cfg.tune.to_dict(),
        mask=cfg.mask.to_dict(),
        preprocess=cfg.preprocess.to_dict(),
        views=cfg.views.to_dict(),
        threshold=DEFAULT_THRESHOLD,
        thresholds={"default": {"value": DEFAULT_THRESHOLD, "how": f"uncalibrated {DEFAULT_THRESHOLD:g}"}},
        training=training,
    )


def train(cfg: TrainConfig, *, encoder=None, progress: bool | None = None) -> TrainResult:
    """Fine-tune a detector; writes ``out/best``, ``out/last`` (checkpoints) and ``out/resume.pt``."""
    progress = sys.stderr.isatty() if progress is None else progress
    device0 = resolve_device(cfg.device)
    dist_info: DistInfo = init_distributed(device0)
    device = local_device(device0, dist_info)
    if cfg.batch_size % dist_info.world_size:
        raise ConfigError(
            f"--batch-size {cfg.batch_size} is the global batch and must divide by the {dist_info.world_size} processes"
        )
    seed_everything(cfg.seed)
    if device.type == "cpu":
        torch.use_deterministic_algorithms(True, warn_only=True)

    out = Path(cfg.out)
    train_samples, val_samples, sources = resolve_training_data(cfg)
    log.info("training on %s", summarize(train_samples))


    resume_path = out / RESUME_NAME
    state = None
    if cfg.resume:
        if not resume_path.is_file():
            raise ConfigError(f"--resume given but {resume_path} does not exist (nothing to resume)")
        state = torch.load(resume_path, map_location="cpu", weights_only=False)
        if state["identity"] != cfg.identity():
            diff = sorted(k for k in cfg.identity() if state["identity"].get(k) != cfg.identity()[k])
            raise ConfigError(f"--resume: settings differ from the interrupted run in {diff}")
    elif resume_path.exists() and dist_info.is_main:
        log.warning("%s exists from an earlier run; starting over (use --resume to continue it)", resume_path)

    # the factory copies a caller's encoder when tuning would change it in place
    model = create_model(encoder if encoder is not None else cfg.backbone, cfg.tune).to(device)
    # the backbone sets the input size (position embeddings are not interpolated); the caller's policy stays as given
    policy = cfg.preprocess.for_backbone(model.encoder.image_size)
    ddp_model: torch.nn.Module = model
    if dist_info.enabled:
        ddp_model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )

    per_rank = cfg.batch_size // dist_info.world_size
    dataset = ImageDataset(train_samples, policy, train=True, augment=cfg.augment, seed=cfg.seed)
    # one sampler type for 1 or N processes: N shards of a shared permutation (or of a shared
    # weighted draw) form the same global batches
    sampler: DistributedSampler | BalancedSampler
    if cfg.balance == "none":
        sampler = DistributedSampler(
            dataset, num_replicas=dist_info.world_size, rank=dist_info.rank, shuffle=True, seed=cfg.seed,
            drop_last=False,
        )
    else:
        keys = sources if cfg.balance == "source" else [s.generator for s in train_samples]
        weights = balance_weights(keys, [s.label for s in train_samples])
        sampler = BalancedSampler(dataset, weights, cfg.seed, rank=dist_info.rank, world_size=dist_info.world_size)
    loader = make_loader(dataset, per_rank, shuffle=False, workers=cfg.workers, seed=cfg.seed, sampler=sampler)
    steps_per_epoch = len(loader)
    total_steps = steps_per_epoch * cfg.epochs
    optim = torch.optim.AdamW(model.parameter_groups(cfg.lr_head, cfg.lr_backbone, cfg.weight_decay))
    sched = torch.optim.lr_scheduler.LambdaLR(optim, lr_lambda(total_steps, int(cfg.warmup * total_steps)))
    loss_fn = torch.nn.BCEWithLogitsLoss()

    history: list[dict] = []
    skipped: dict[str, str] = {}
    start_epoch, best_key, train_seconds, images_seen = 0, None, 0.0, 0
    if state is not None:
        model.load_state_dict(state["trainable"], strict=False)
        optim.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        start_epoch, history, skipped = state["epoch"] + 1, state["history"], state["skipped"]
        best_key, train_seconds, images_seen = state["best_key"], state["seconds"], state["images"]
        log.info("resuming after epoch %d of %d", start_epoch, cfg.epochs)

    training_summary = {
        "command": cfg.command,
        "data": cfg.data,
        "val": str(cfg.val) if cfg.val else ("<data>/val" if val_samples is not None else None),
        "n_train": summarize(train_samples),
        "settings": cfg.to_dict(),
        "world_size": dist_info.world_size,
        "torch": torch.__version__,
        "mpft": __version__,
    }
    for epoch in range(start_epoch, cfg.epochs):
        sampler.set_epoch(epoch)
        dataset.set_epoch(epoch)
        model.train()
        gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch * 7919 + dist_info.rank)
        bar = tqdm(
            total=steps_per_epoch,
            desc=f"epoch {epoch + 1}/{cfg.epochs}",
            disable=not (progress and dist_info.is_main),
            dynamic_ncols=True,
            leave=False,
        )
        t0, losses, seen = time.perf_counter(), [], 0
        for batch in loader:
            for idx, reason in batch.errors:
                path = str(train_samples[int(idx)].path)
                # decode errors start with the path; the summary prints "path: reason" once
                skipped[path] = reason[len(path) + 2 :] if reason.startswith(f"{path}: ") else reason
            pixels = batch.pixels.to(device, non_blocking=True)
            labels = batch.labels.to(device)
            if pixels.shape[0] == 0 and not dist_info.enabled:
                bar.update(1)
                continue
            enc = model.encoder
            pixels, keep = apply_mask(pixels, cfg.mask, enc.patch_size, fill=enc.mean, generator=gen)
            with autocast_for(device):
                logits = ddp_model(pixels, keep=keep)
            loss = loss_fn(logits.float(), labels) if pixels.shape[0] else logits.sum() * 0.0
            optim.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.clip_grad > 0:
                torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], cfg.clip_grad)
            optim.step()
            sched.step()
            losses.append(float(loss.detach()))
            seen += pixels.shape[0]
            dt = time.perf_counter() - t0
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.4f}", img_s=f"{seen * dist_info.world_size / dt:.1f}")
            bar.update(1)
        bar.close()
        epoch_seconds = time.perf_counter() - t0
        train_seconds += epoch_seconds
        images_seen += seen * dist_info.world_size
        record = {
            "epoch": epoch + 1,
            "loss": float(np.mean(losses)) if losses else float("nan"),
            "seconds": round(epoch_seconds, 2),
            "images_per_second": round(seen * dist_info.world_size / max(epoch_seconds, 1e-9), 2),
        }
        if dist_info.enabled:
            torch.distributed.barrier()
        if dist_info.is_main:
            if val_samples is not None:
                record["val"] = validate(model, val_samples, cfg, device)
            history.append(record)
            log.info("epoch %d: %s", epoch + 1, json.dumps(record))
            summary = dict(
                training_summary,
                history=history,
                skipped_files=skipped,
                train_seconds=round(train_seconds, 2),
            )
            ckpt_cfg = _make_config(cfg, model, summary)
            save_checkpoint(out / "last", model, ckpt_cfg)
            key = (record["val"]["ap"], record["val"]["acc"]) if "val" in record else (epoch,)
            if best_key is None or tuple(key) >= tuple(best_key):
                best_key = list(key)
                save_checkpoint(out / "best", model, _make_config(cfg, model, dict(summary, best_epoch=epoch + 1)))
            _atomic_torch_save(
                {
                    "identity": cfg.identity(),
                    "epoch": epoch,
                    "trainable": model.trainable_state_dict(),
                    "optimizer": optim.state_dict(),
                    "scheduler": sched.state_dict(),
                    "history": history,
                    "skipped": skipped,
                    "best_key": best_key,
                    "seconds": train_seconds,
                    "images": images_seen,
                },
                resume_path,
            )
        if dist_info.enabled:
            torch.distributed.barrier()
    if skipped and dist_info.is_main:
        log.warning(
            "%d training files were skipped:\n%s",
            len(skipped),
            "\n".join(f"  {p}: {r}" for p, r in sorted(skipped.items())),
        )
    if dist_info.enabled:
        torch.distributed.destroy_process_group()
    return TrainResult(
        out=out,
        best=out / "best",
        last=out / "last",
        history=history,
        skipped=skipped,
        seconds=train_seconds,
        images_per_second=images_seen / max(train_seconds, 1e-9),
    )
