"""A torch Dataset over :class:`~mpft.data.samples.Sample` lists that never crashes an epoch.

An image that cannot be decoded becomes an error entry (``pixels`` None, ``error`` the
reason); :func:`collate` drops it from the batch and reports it in ``Batch.errors``.
Per-item randomness depends only on (seed, epoch, index), so results are identical for any
number of workers.
"""

from __future__ import annotations

import logging
import math
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Sampler

from mpft.data.limits import DEFAULT_MAX_PIXELS
from mpft.data.samples import Sample
from mpft.data.transforms import (
    Augment,
    Perturbation,
    PreprocessPolicy,
    parse_reencode,
    prepare,
    reencode,
    to_tensor,
)
from mpft.errors import ConfigError, ImageDecodeError
from mpft.pipeline import Preprocessor, view_pixels
from mpft.views import ViewConfig

__all__ = ["BALANCE_MODES", "Batch", "BalancedSampler", "EpochShuffleSampler", "ImageDataset", "balance_weights",
           "chosen_view", "collate", "make_loader", "view_rng"]

BALANCE_MODES = ("none", "source", "generator")

log = logging.getLogger(__name__)


def view_rng(seed: int, path: object, view: int) -> np.random.Generator:
    """The random stream of fixed augmented view ``view`` of the image at ``path``.

    A function of (seed, path, view) only, so a feature cache and the pixel loop draw the same
    views whatever the order, subset or data arguments a run has.
    """
    return np.random.default_rng([int(seed), zlib.crc32(str(path).encode("utf-8")), int(view), 0xF1E])


def chosen_view(seed: int, epoch: int, draw: int, n_views: int) -> int:
    """Which of an image's ``n_views`` fixed views the draw ``draw`` of epoch ``epoch`` trains on."""
    return int(np.random.default_rng([int(seed), int(epoch), int(draw), 0x71E]).integers(n_views))


class ImageDataset(Dataset):
    """Decode, normalise format, perturb and preprocess images on the fly.

    Decoding, the hook (format normalisation, then the perturbation) and the views are the
    :class:`~mpft.pipeline.Preprocessor`'s, the one inference path; training draws an augmented
    crop instead of the views. Items are dicts ``{"pixels": uint8 tensor (3, S, S) (or (V, 3, S, S)
    with ``views``) | None, "label": int, "index": int, "error": str | None, "size": S}``; ``size``
    lets :func:`collate` shape an all-failed batch.

    ``train_views``: 0 draws a fresh augmentation at every draw; N >= 1 gives each image N fixed
    augmented views (:func:`view_rng`) and each draw one of them (:func:`chosen_view`): what a
    feature cache stores (:mod:`mpft.training.features`, via :meth:`fixed_views`).
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
        views: ViewConfig | None = None,
        train_views: int = 0,
    ):
        if normalize_format is not None:
            parse_reencode(normalize_format)  # fail at construction, not in a worker mid-epoch
        if max_pixels <= 0:
            raise ConfigError(f"max_pixels must be > 0, got {max_pixels}")
        if views is not None and train:
            raise ConfigError("views are for scoring; training draws random crops")
        if train_views < 0:
            raise ConfigError(f"train views must be >= 0, got {train_views}")
        self.samples = tuple(samples)
        self.policy = policy
        self.train = train
        self.augment = augment
        self.perturbation = perturbation
        self.normalize_format = normalize_format
        self.seed = int(seed)
        self.max_pixels = max_pixels
        self.train_views = int(train_views)
        # several views per image (eval): items carry (V, 3, S, S) pixels and collate records V
        self.views = views
        # reduced-scale JPEG decoding only where the pixels are downscaled untouched: training
        # augments act on the full-size image (the hook turns it off for perturbations)
        hook = self._hook if perturbation is not None or normalize_format is not None or train else None
        self.preprocessor = Preprocessor(policy, views or ViewConfig(), max_pixels, hook=hook)
        # Shared memory so that set_epoch() reaches persistent DataLoader workers, which hold
        # their own copy of the dataset object.
        self._epoch = torch.zeros(1, dtype=torch.int64).share_memory_()

    @property
    def _draft(self) -> int | None:
        return self.preprocessor.draft_min_side

    def _hook(self, img: Image.Image) -> Image.Image:
        if self.normalize_format is not None:
            img = reencode(img, self.normalize_format)
        if self.perturbation is not None:
            img = self.perturbation.apply(img)
        return img

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def epoch(self) -> int:
        return int(self._epoch[0])

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch used for per-item randomness; call before iterating the loader."""
        self._epoch[0] = int(epoch)

    def __getitem__(self, i: int) -> dict:
        # A sampler drawing with replacement passes ``index + k * len(self)`` for the k-th repeat of
        # an index within an epoch: the same image, fresh augmentation randomness.
        draw, i = int(i), int(i) % len(self.samples)
        sample = self.samples[i]

        def pixels_of(img: Image.Image) -> torch.Tensor:
            if not self.train:
                pixels = view_pixels(img, self.policy, self.preprocessor.views)
                return pixels if self.views is not None else pixels[0]
            if self.train_views:
                rng = view_rng(self.seed, sample.path, chosen_view(self.seed, self.epoch, draw, self.train_views))
            else:
                rng = np.random.default_rng([self.seed, self.epoch, draw])
            return to_tensor(prepare(img, self.policy, train=True, rng=rng, augment=self.augment))

        return self._item(i, pixels_of)

    def fixed_views(self, i: int) -> dict:
        """Item ``i`` with all ``train_views`` fixed augmented views: pixels (V, 3, S, S) uint8."""
        if not (self.train and self.train_views):
            raise ConfigError("fixed views need a training dataset with train_views >= 1")
        path = self.samples[i].path

        def pixels_of(img: Image.Image) -> torch.Tensor:
            return torch.stack([
                to_tensor(prepare(img, self.policy, train=True, rng=view_rng(self.seed, path, v), augment=self.augment))
                for v in range(self.train_views)
            ])

        return self._item(i, pixels_of)

    def _item(self, i: int, pixels_of: Callable[[Image.Image], torch.Tensor]) -> dict:
        sample, size = self.samples[i], self.policy.side
        try:
            pixels = pixels_of(self.preprocessor.image(sample.path).image)
        except ImageDecodeError as exc:
            log.warning("skipping undecodable image: %s", exc)
            return {"pixels": None, "label": sample.label, "index": i, "error": str(exc), "size": size}
        except OSError as exc:
            # Re-encoding for format normalisation or perturbation can still fail on odd data.
            reason = f"{sample.path}: processing failed: {exc}"
            log.warning("skipping image: %s", reason)
            return {"pixels": None, "label": sample.label, "index": i, "error": reason, "size": size}
        return {"pixels": pixels, "label": sample.label, "index": i, "error": None, "size": size}


@dataclass
class Batch:
    """A collated batch of the items that decoded.

    Attributes:
        pixels: uint8 tensor (B, 3, S, S); B may be 0.
        labels: float tensor (B,), 0.0 real, 1.0 generated.
        indices: long tensor (B,), dataset indices of the rows of ``pixels``.
        errors: (index, reason) of the items left out.
        counts: views per image when the dataset scores several views (``pixels`` then has
            sum(counts) rows, image after image, and ``labels``/``indices`` one row per image).
    """

    pixels: torch.Tensor
    labels: torch.Tensor
    indices: torch.Tensor
    errors: list[tuple[int, str]]
    counts: list[int] | None = None

    def __len__(self) -> int:
        return int(self.indices.shape[0])

    def view_stacks(self) -> list[torch.Tensor]:
        """Per-image (V, 3, S, S) stacks (V = 1 for a single-view batch)."""
        if self.counts is None:
            return list(self.pixels.unsqueeze(1))
        return list(torch.split(self.pixels, self.counts))


def collate(items: Sequence[dict]) -> Batch:
    """Stack the decoded items of a batch; failed items go to ``Batch.errors``.

    An all-failed batch has pixels of shape (0, 3, S, S) with S from the items' ``size``.
    """
    good = [it for it in items if it["error"] is None]
    errors = [(int(it["index"]), str(it["error"])) for it in items if it["error"] is not None]
    counts = None
    if good and good[0]["pixels"].dim() == 4:
        counts = [int(it["pixels"].shape[0]) for it in good]
        pixels = torch.cat([it["pixels"] for it in good])
    elif good:
        pixels = torch.stack([it["pixels"] for it in good])
    else:
        size = int(items[0].get("size", 0)) if items else 0
        pixels = torch.zeros((0, 3, size, size), dtype=torch.uint8)
    labels = torch.tensor([float(it["label"]) for it in good], dtype=torch.float32)
    indices = torch.tensor([int(it["index"]) for it in good], dtype=torch.long)
    return Batch(pixels=pixels, labels=labels, indices=indices, errors=errors, counts=counts)


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


def balance_weights(groups: Sequence[object], labels: Sequence[int]) -> np.ndarray:
    """Sampling probabilities that give every group of a class the same share, and both classes half.

    groups: one hashable group key per sample (e.g. its data source or generator); labels: 0/1.
    Returns (N,) float64 summing to 1. A class with no samples leaves its half to the other.
    """
    groups, labels = list(groups), np.asarray(labels)
    if len(groups) != len(labels):
        raise ConfigError(f"{len(groups)} group keys for {len(labels)} labels")
    w = np.zeros(len(groups), dtype=np.float64)
    present = [c for c in (0, 1) if (labels == c).any()]
    for c in present:
        keys = sorted({g for g, y in zip(groups, labels, strict=True) if y == c}, key=str)
        for key in keys:
            members = [j for j, (g, y) in enumerate(zip(groups, labels, strict=True)) if y == c and g == key]
            w[members] = 1.0 / (len(present) * len(keys) * len(members))
    return w / w.sum()


class BalancedSampler(Sampler[int]):
    """Draws ``num_samples`` indices per epoch with replacement, with probabilities ``weights``.

    The draw is a function of (seed, epoch) only, so N processes share one global order and take
    every N-th index (``rank``, ``world_size``); a repeated index comes back as ``index + k * n``
    so that :class:`ImageDataset` gives each repeat its own augmentation.
    """

    def __init__(self, dataset: Dataset, weights: np.ndarray, seed: int, *, num_samples: int | None = None,
                 rank: int = 0, world_size: int = 1):
        self.dataset, self.weights = dataset, np.asarray(weights, dtype=np.float64)
        self.n = len(self.weights)
        if self.n != len(dataset) or not np.isclose(self.weights.sum(), 1.0) or (self.weights < 0).any():
            raise ConfigError("balanced sampler: weights must be one probability per dataset item, summing to 1")
        self.seed, self.rank, self.world_size = int(seed), int(rank), int(world_size)
        total = int(num_samples or self.n)
        self.per_rank = math.ceil(total / self.world_size)
        self._epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self._epoch = int(epoch)

    def __len__(self) -> int:
        return self.per_rank

    def __iter__(self):
        epoch = getattr(self.dataset, "epoch", self._epoch)
        rng = np.random.default_rng([self.seed, int(epoch), 0xBA1])
        draws = rng.choice(self.n, size=self.per_rank * self.world_size, replace=True, p=self.weights)
        seen: dict[int, int] = {}
        virtual = []
        for d in draws.tolist():
            k = seen.get(d, 0)
            seen[d] = k + 1
            virtual.append(d + k * self.n)
        return iter(virtual[self.rank :: self.world_size])


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
