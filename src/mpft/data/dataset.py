"""A torch Dataset over :class:`~mpft.data.layouts.Sample` lists that never crashes an epoch.

An image that cannot be decoded becomes an error entry (``pixels`` None, ``error`` the
reason); :func:`collate` drops it from the batch and reports it in ``Batch.errors``.
Per-item randomness depends only on (seed, epoch, index), so results are identical for any
number of workers.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from mpft.data.images import DEFAULT_MAX_PIXELS, decode_image
from mpft.data.layouts import Sample
from mpft.data.transforms import (
    Augment,
    Perturbation,
    PreprocessPolicy,
    draft_side,
    parse_reencode,
    prepare,
    reencode,
    to_tensor,
)
from mpft.errors import ConfigError, ImageDecodeError

__all__ = ["Batch", "EpochShuffleSampler", "ImageDataset", "collate", "make_loader"]

log = logging.getLogger(__name__)


class ImageDataset(Dataset):
    """Decode, normalise format, perturb and preprocess images on the fly.

    Items are dicts ``{"pixels": uint8 tensor (3, S, S) | None, "label": int, "index": int,
    "error": str | None, "size": S}``; ``size`` lets :func:`collate` shape an all-failed batch.
    """

    def __init__(
        self,
        samples: Sequence[Sample],
        policy: PreprocessPolicy,
        *,
        train: bool,
        augment: Augment | None = None,
        perturbation: Perturbation | None = None,
        normalize_format: str | None = None,
        seed: int = 0,
        max_pixels: int = DEFAULT_MAX_PIXELS,
    ):
        if normalize_format is not None:
            parse_reencode(normalize_format)  # fail at construction, not in a worker mid-epoch
        if max_pixels <= 0:
            raise ConfigError(f"max_pixels must be > 0, got {max_pixels}")
        self.samples = tuple(samples)
        self.policy = policy
        self.train = train
        self.augment = augment
        self.perturbation = perturbation
        self.normalize_format = normalize_format
        self.seed = int(seed)
        self.max_pixels = max_pixels
        # reduced-scale JPEG decoding only where the pixels are downscaled untouched: training
        # augments and perturbations act on the full-size image
        plain = not train and perturbation is None and normalize_format is None
        self._draft = draft_side(policy) if plain else None
        # Shared memory so that set_epoch() reaches persistent DataLoader workers, which hold
        # their own copy of the dataset object.
        self._epoch = torch.zeros(1, dtype=torch.int64).share_memory_()

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def epoch(self) -> int:
        return int(self._epoch[0])

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch used for per-item randomness; call before iterating the loader."""
        self._epoch[0] = int(epoch)

    def __getitem__(self, i: int) -> dict:
        sample = self.samples[i]
        size = self.policy.size
        try:
            img = decode_image(sample.path, max_pixels=self.max_pixels, draft_min_side=self._draft).image
            if self.normalize_format is not None:
                img = reencode(img, self.normalize_format)
            if self.perturbation is not None:
                img = self.perturbation.apply(img)
            rng = np.random.default_rng([self.seed, self.epoch, int(i)])
            arr = prepare(img, self.policy, train=self.train, rng=rng, augment=self.augment)
        except ImageDecodeError as exc:
            log.warning("skipping undecodable image: %s", exc)
            return {"pixels": None, "label": sample.label, "index": i, "error": str(exc), "size": size}
        except OSError as exc:
            # Re-encoding for format normalisation or perturbation can still fail on odd data.
            reason = f"{sample.path}: processing failed: {exc}"
            log.warning("skipping image: %s", reason)
            return {"pixels": None, "label": sample.label, "index": i, "error": reason, "size": size}
        return {"pixels": to_tensor(arr), "label": sample.label, "index": i, "error": None, "size": size}


@dataclass
class Batch:
    """A collated batch of the items that decoded.

    Attributes:
        pixels: uint8 tensor (B, 3, S, S); B may be 0.
        labels: float tensor (B,), 0.0 real, 1.0 generated.
        indices: long tensor (B,), dataset indices of the rows of ``pixels``.
        errors: (index, reason) of the items left out.
    """

    pixels: torch.Tensor
    labels: torch.Tensor
    indices: torch.Tensor
    errors: list[tuple[int, str]]

    def __len__(self) -> int:
        return int(self.pixels.shape[0])


def collate(items: Sequence[dict]) -> Batch:
    """Stack the decoded items of a batch; failed items go to ``Batch.errors``.

    An all-failed batch has pixels of shape (0, 3, S, S) with S from the items' ``size``.
    """
    good = [it for it in items if it["error"] is None]
    errors = [(int(it["index"]), str(it["error"])) for it in items if it["error"] is not None]
    if good:
        pixels = torch.stack([it["pixels"] for it in good])
    else:
        size = int(items[0].get("size", 0)) if items else 0
        pixels = torch.zeros((0, 3, size, size), dtype=torch.uint8)
    labels = torch.tensor([float(it["label"]) for it in good], dtype=torch.float32)
    indices = torch.tensor([int(it["index"]) for it in good], dtype=torch.long)
    return Batch(pixels=pixels, labels=labels, indices=indices, errors=errors)


class EpochShuffleSampler(Sampler[int]):
    """Shuffled indices that are a function of (seed, epoch) only.

    torch's RandomSampler shares the loader's generator, which the loader also draws worker
    seeds from once per iterator; with persistent workers that happens once, without workers
    every epoch, so the order would depend on the worker count. The epoch is read from
    ``dataset.epoch`` when present (resuming at epoch k gives epoch k's order), else counted.
    """

    def __init__(self, dataset: Dataset, seed: int):
        self.dataset = dataset
        self.seed = int(seed)
        self._iterations = 0

    def __len__(self) -> int:
        return len(self.dataset)

    def __iter__(self):
        epoch = getattr(self.dataset, "epoch", None)
        if epoch is None:
            epoch = self._iterations
        self._iterations += 1
        order = np.random.default_rng([self.seed, int(epoch)]).permutation(len(self.dataset))
        return iter(order.tolist())


def make_loader(
    dataset: Dataset,
    batch_size: int,
    *,
    shuffle: bool,
    workers: int,
    seed: int,
    sampler: Sampler | None = None,
) -> DataLoader:
    """A DataLoader using :func:`collate`, a seeded shuffle and persistent workers.

    With ``shuffle`` the order comes from :class:`EpochShuffleSampler` (seed, epoch), so it
    is the same for any worker count. Call ``dataset.set_epoch(e)`` before each epoch.

    Raises:
        ConfigError: bad batch size or worker count, or both ``shuffle`` and ``sampler``.
    """
    if batch_size <= 0:
        raise ConfigError(f"batch size must be > 0, got {batch_size}")
    if workers < 0:
        raise ConfigError(f"workers must be >= 0, got {workers}")
    if sampler is not None and shuffle:
        raise ConfigError("pass either shuffle=True or a sampler, not both")
    if shuffle:
        sampler = EpochShuffleSampler(dataset, seed)
    generator = torch.Generator()
    generator.manual_seed(int(seed))
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=workers,
        collate_fn=collate,
        persistent_workers=workers > 0,
        generator=generator,
    )
