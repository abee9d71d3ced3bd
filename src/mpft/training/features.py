"""The feature cache of frozen-backbone runs (``--tune linear`` without masking).

A frozen backbone maps an augmented view to the same head input every time, so with a finite
set of views per image (``--train-views N``, fixed per seed: :func:`mpft.data.dataset.view_rng`)
the backbone runs once per (image, view) and the head trains on the stored features. The loop is
the pixel loop's: the same sampler, batches, optimiser, schedule, clipping and checkpoints; a
draw takes the features of the view the pixel loop would have cropped
(:func:`mpft.data.dataset.chosen_view`). What differs from the pixel loop is only the floating
point of batching (a view's features are computed in another batch): the heads agree to float32
rounding (tests/training/test_feature_cache.py).

What is stored is what any choice of feature blocks needs: with ``--feature-blocks`` the CLS tokens
of every block (V, L, D), from which a run takes its blocks and layer-normalises them as the model
does (:func:`mpft.model.block_features`), so runs that compare depths (blocks 6-7, 6-12, ...) share
one extraction; without, the final embedding (V, E).

On disk, ``DIR/<settings hash>/`` holds ``identity.json`` (what the features depend on: backbone
and its weights, which features, preprocessing, augmentation, seed, views, precision) and one
``<image hash>.npy`` float32 per image, keyed by the file's path, size and mtime. Each file
is written atomically, so an interrupted extraction resumes where it stopped, and runs that share
these settings (benchmark folds on subsets of the same images) share the files.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from mpft.data.dataset import ImageDataset, chosen_view, collate
from mpft.fsutil import atomic_file, atomic_write_text
from mpft.model import DetectorModel, block_features
from mpft.precision import autocast_for

__all__ = ["CACHE_VERSION", "CacheReport", "FeatureDataset", "cache_identity", "cached_features", "head_inputs",
           "image_key"]

log = logging.getLogger(__name__)

# raise when what a stored feature means changes: older folders are then never read
CACHE_VERSION = 2
# views per backbone forward pass during extraction (memory, not results: each view is independent)
_VIEWS_PER_FORWARD = 32


@dataclass
class CacheReport:
    """Where the features came from, for the ``training`` record of ``config.json``."""

    folder: str
    reused: int
    extracted: int
    failed: int
    seconds: float

    def to_dict(self) -> dict:
        return {"folder": self.folder, "reused": self.reused, "extracted": self.extracted, "failed": self.failed,
                "seconds": round(self.seconds, 2)}


def cache_identity(dataset: ImageDataset, model: DetectorModel, backbone: str, precision: str) -> dict:
    """Everything a stored feature depends on besides the image itself (a JSON-able dict)."""
    return {
        "version": CACHE_VERSION,
        "backbone": backbone,
        "backbone_sha256": model.encoder.weights_sha256,
        # every block's CLS serves any --feature-blocks; the embedding is a different feature
        "features": "cls-of-every-block" if model.tune.feature_blocks else "embedding",
        "preprocess": dataset.policy.to_dict(),
        "augment": dataset.augment.to_dict() if dataset.augment is not None else None,
        "seed": dataset.seed,
        "train_views": dataset.train_views,
        "max_pixels": dataset.max_pixels,
        "precision": precision,
    }


def cache_folder(root: Path, identity: dict) -> Path:
    """``root/<hash of identity>``, with ``identity.json`` written the first time."""
    text = json.dumps(identity, sort_keys=True)
    folder = Path(root) / hashlib.sha256(text.encode()).hexdigest()[:16]
    if not (folder / "identity.json").is_file():
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_text(folder / "identity.json", json.dumps(identity, indent=1, sort_keys=True) + "\n")
    return folder


def image_key(path: Path) -> str:
    """An image file's cache name: its absolute path, size and modification time (a changed file is re-read)."""
    p = Path(path).absolute()
    try:
        st = p.stat()
        stamp = f"{st.st_size}:{st.st_mtime_ns}"
    except OSError:
        stamp = "missing"
    return hashlib.sha256(f"{p}\0{stamp}".encode()).hexdigest()[:24]


class _FixedViews(Dataset):
    """The images of ``dataset`` at ``indices``, each with all its fixed views."""

    def __init__(self, dataset: ImageDataset, indices: list[int]):
        self.dataset, self.indices = dataset, indices

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, k: int) -> dict:
        return self.dataset.fixed_views(self.indices[k])


@torch.inference_mode()
def _stored_features(model: DetectorModel, pixels: torch.Tensor, device: torch.device, precision: str) -> torch.Tensor:
    """(B, 3, S, S) uint8 -> what the cache stores: (B, L, D) CLS of every block, or (B, E) embeddings."""
    x = model.encoder.normalize(pixels.to(device).float().div_(255.0))
    with autocast_for(device, precision):
        if model.tune.feature_blocks:
            feats = model.encoder.block_tokens(x, tuple(range(1, model.encoder.num_layers + 1)))
        else:
            feats = model.features(x)
    return feats.float().cpu()


def head_inputs(stored: torch.Tensor, feature_blocks: tuple[int, ...]) -> torch.Tensor:
    """Stored features (N, V, L, D) or (N, V, E) -> the head's inputs (N, V, F), as the model's forward
    makes them: the chosen blocks' CLS, each layer-normalised without parameters, concatenated."""
    if not feature_blocks:
        return stored
    n, v = stored.shape[:2]
    picked = stored[:, :, [b - 1 for b in feature_blocks]]
    return block_features(picked.flatten(0, 1)).view(n, v, -1)


def cached_features(
    dataset: ImageDataset,
    model: DetectorModel,
    root: Path,
    *,
    backbone: str,
    device: torch.device,
    precision: str = "fp32",
    workers: int = 0,
    progress: bool = False,
) -> tuple[torch.Tensor, dict[int, str], CacheReport]:
    """The head inputs of every fixed view of ``dataset``'s images, from the cache or computed into it.

    Returns (head inputs (N, V, F) float32, {index: reason} of images that failed to decode, report).
    """
    t0 = time.perf_counter()
    folder = cache_folder(root, cache_identity(dataset, model, backbone, precision))
    n, v = len(dataset), dataset.train_views
    files = [folder / f"{image_key(s.path)}.npy" for s in dataset.samples]
    feats: list[np.ndarray | None] = [None] * n
    for i, f in enumerate(files):
        if f.is_file():
            arr = np.load(f, allow_pickle=False)
            if arr.shape[0] == v:  # anything else is a damaged file: computed again
                feats[i] = arr
    todo = [i for i in range(n) if feats[i] is None]
    errors: dict[int, str] = {}
    if todo:
        log.info("feature cache %s: extracting %d of %d images (%d views each)", folder, len(todo), n, v)
        was_training = model.training
        model.eval()
        loader = DataLoader(_FixedViews(dataset, todo), batch_size=max(1, _VIEWS_PER_FORWARD // v),
                            num_workers=workers, collate_fn=collate)
        bar = tqdm(total=len(todo), desc="features", disable=not progress, dynamic_ncols=True, leave=False)
        for batch in loader:
            for idx, reason in batch.errors:
                errors[idx] = reason
            if len(batch):
                out = _stored_features(model, batch.pixels, device, precision)
                out = out.view(len(batch), v, *out.shape[1:]).numpy()
                for row, idx in enumerate(batch.indices.tolist()):
                    feats[idx] = out[row]
                    with atomic_file(files[idx]) as tmp, open(tmp, "wb") as fh:
                        np.save(fh, out[row])
            bar.update(len(batch) + len(batch.errors))
        bar.close()
        model.train(was_training)
    shape = next((a.shape[1:] for a in feats if a is not None), (0,))
    table = torch.zeros((n, v, *shape), dtype=torch.float32)
    for i, a in enumerate(feats):
        if a is not None:
            table[i] = torch.from_numpy(a)
    table = head_inputs(table, model.tune.feature_blocks)
    report = CacheReport(str(folder), n - len(todo), len(todo) - len(errors), len(errors), time.perf_counter() - t0)
    log.info("feature cache: %s", json.dumps(report.to_dict()))
    return table, errors, report


class FeatureDataset(Dataset):
    """Cached head inputs in place of pixels, with :class:`ImageDataset`'s indexing and epochs.

    Item ``draw`` (``index + k * N`` for the k-th repeat of a balanced draw) is the features of the
    view :func:`chosen_view` picks for (seed, epoch, draw): the view the pixel loop would crop.
    Items are ``{"pixels": (F,) float32 | None, "label", "index", "error", "size"}``.
    """

    def __init__(self, features: torch.Tensor, labels: list[int], errors: dict[int, str], seed: int):
        self.features, self.labels, self.errors, self.seed = features, list(labels), dict(errors), int(seed)
        self.train_views = int(features.shape[1])
        self._epoch = 0

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def epoch(self) -> int:
        return self._epoch

    def set_epoch(self, epoch: int) -> None:
        self._epoch = int(epoch)

    def __getitem__(self, draw: int) -> dict:
        draw = int(draw)
        i = draw % len(self.labels)
        if i in self.errors:
            return {"pixels": None, "label": self.labels[i], "index": i, "error": self.errors[i], "size": 0}
        view = chosen_view(self.seed, self._epoch, draw, self.train_views)
        return {"pixels": self.features[i, view], "label": self.labels[i], "index": i, "error": None, "size": 0}
