"""The data of a training run: which samples it trains and validates on (several data arguments
pooled, splits, ``--shots``, the validation subset), the training dataset, and how batches draw
from it (a shared shuffle or a balanced draw, the same for 1 or N processes)."""

from __future__ import annotations

import csv
import logging
import os
from collections.abc import Sequence
from pathlib import Path

from torch.utils.data import DataLoader, Dataset
from torch.utils.data.distributed import DistributedSampler

from mpft.data.dataset import BalancedSampler, ImageDataset, balance_weights, make_loader
from mpft.data.layouts import discover, has_splits
from mpft.data.samples import Sample, balanced_subset, limit_per_class, require_both_classes
from mpft.data.transforms import PreprocessPolicy
from mpft.errors import DataError
from mpft.runtime import DistInfo
from mpft.training.config import TrainConfig

log = logging.getLogger(__name__)


def data_roots(cfg: TrainConfig) -> list[str]:
    """The data arguments of a run, as a list (``cfg.data`` holds one path or several)."""
    return list(cfg.data) if isinstance(cfg.data, list) else [cfg.data]


def read_exclusions(entries: Sequence[str]) -> set[Path]:
    """The absolute paths ``--exclude`` names: image paths as given, and the ``path`` column of each
    ``.csv`` entry (relative to the CSV's folder, as in a manifest)."""
    out: set[Path] = set()
    for entry in entries:
        p = Path(entry)
        if p.suffix.lower() != ".csv":
            out.add(_normal(p))
            continue
        try:
            with open(p, newline="", encoding="utf-8-sig") as fh:
                rows = list(csv.DictReader(fh))
        except OSError as exc:
            raise DataError(f"--exclude: cannot read {p} ({exc.strerror or exc})") from None
        if rows and "path" not in rows[0]:
            raise DataError(f"--exclude: {p} has no 'path' column (its header: {sorted(rows[0])})")
        out.update(_normal(p.parent / r["path"].strip()) for r in rows if (r.get("path") or "").strip())
    return out


def _normal(path: str | Path) -> Path:
    # absolute and with "." / ".." folded, so "a/../b/x.png" in one manifest matches "b/x.png" in another
    # (symlinks are left alone: a link and its target stay different images)
    return Path(os.path.abspath(path))


def _drop_excluded(samples: list[Sample], excluded: set[Path]) -> list[bool]:
    return [_normal(s.path) not in excluded for s in samples]


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
    if cfg.exclude:
        excluded = read_exclusions(cfg.exclude)
        keep = _drop_excluded(train, excluded)
        log.info("--exclude: %d of %d training images left out", keep.count(False), len(train))
        train = [s for s, k in zip(train, keep, strict=True) if k]
        sources = [src for src, k in zip(sources, keep, strict=True) if k]
        if val:
            val = [s for s, k in zip(val, _drop_excluded(val, excluded), strict=True) if k]
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
            val = limit_per_class(val, cfg.val_limit, cfg.seed)
    return train, val, sources


def make_sampler(
    cfg: TrainConfig, dataset: Dataset, samples: list[Sample], sources: list[int], dist: DistInfo
) -> DistributedSampler | BalancedSampler:
    """The sampler ``cfg.balance`` asks for, sharded over ``dist``'s processes."""
    # one sampler type for 1 or N processes: N shards of a shared permutation (or of a shared
    # weighted draw) form the same global batches
    if cfg.balance == "none":
        return DistributedSampler(
            dataset, num_replicas=dist.world_size, rank=dist.rank, shuffle=True, seed=cfg.seed, drop_last=False
        )
    # generator: generated images grouped by generator, real ones by their source (Sample.group)
    keys = sources if cfg.balance == "source" else [s.group for s in samples]
    weights = balance_weights(keys, [s.label for s in samples])
    return BalancedSampler(dataset, weights, cfg.seed, rank=dist.rank, world_size=dist.world_size)


def training_dataset(cfg: TrainConfig, samples: list[Sample], policy: PreprocessPolicy) -> ImageDataset:
    """The training images, decoded and augmented (``train_views`` fixed views each, or fresh ones)."""
    return ImageDataset(samples, policy, train=True, augment=cfg.augment, seed=cfg.seed, train_views=cfg.train_views)


def make_training_loader(
    cfg: TrainConfig, dataset: Dataset, samples: list[Sample], sources: list[int], dist: DistInfo, *, workers: int
) -> tuple[DistributedSampler | BalancedSampler, DataLoader]:
    """(sampler, loader) of the training set (images or their cached features); each process loads
    ``batch_size / world_size`` items a step."""
    sampler = make_sampler(cfg, dataset, samples, sources, dist)
    per_rank = cfg.batch_size // dist.world_size
    loader = make_loader(dataset, per_rank, shuffle=False, workers=workers, seed=cfg.seed, sampler=sampler)
    return sampler, loader


def record_skipped(errors: list[tuple[int, str]], samples: list[Sample], skipped: dict[str, str]) -> None:
    """Add a batch's decoding failures to ``skipped`` ({path: reason})."""
    for idx, reason in errors:
        path = str(samples[int(idx)].path)
        # decode errors start with the path; the summary prints "path: reason" once
        skipped[path] = reason[len(path) + 2 :] if reason.startswith(f"{path}: ") else reason
