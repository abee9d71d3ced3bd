"""Scoring a dataset for an evaluation: in chunks (so Ctrl-C keeps what was scored) and sharded under torchrun.

The forward passes themselves are :func:`mpft.inference.score_dataset` (the one Scorer); this
module decides which indices each call and each process gets, and gathers the results on rank 0.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from tqdm import tqdm

from mpft.data.dataset import ImageDataset
from mpft.inference import score_dataset
from mpft.model import DetectorModel
from mpft.runtime import DistInfo
from mpft.tam import MaskConfig

__all__ = ["CHUNK_SECONDS", "FIRST_CHUNK_BATCHES", "Scored", "score_chunked", "strip_source"]


def strip_source(path: str, reason: str) -> str:
    """A decode failure's reason without the file path it starts with."""
    # ImageDecodeError messages start with the path; dropping it lets skipped files group by cause.
    return reason[len(path) + 2 :] if reason.startswith(f"{path}: ") else reason


#: Seconds of scoring per chunk: what a Ctrl-C can lose at most, and the spacing of fresh DataLoaders.
CHUNK_SECONDS = 30.0
#: Batches in the first chunk, before the scoring speed is known.
FIRST_CHUNK_BATCHES = 1


@dataclass
class Scored:
    """Scores (n,) with NaN where not scored, failure reasons by index, and whether Ctrl-C cut it short."""

    scores: np.ndarray
    errors: dict[int, str]
    interrupted: bool = False

    def attempted(self) -> int:
        return int((~np.isnan(self.scores)).sum()) + len(self.errors)


def _mask_is_random(mask: MaskConfig | None) -> bool:
    # score_dataset seeds one generator per call: chunks would draw different random masks than one
    # call, so random masks are scored in one piece (as before chunking) to keep results unchanged.
    return mask is not None and mask.active and (mask.strategy == "random" or mask.temperature > 0)


def score_chunked(
    model: DetectorModel,
    dataset: ImageDataset,
    *,
    dist_info: DistInfo,
    desc: str,
    progress: bool,
    **kw: Any,
) -> Scored | None:
    """Score ``dataset`` in chunks; None on ranks other than 0 (under torchrun rank 0 gathers).

    Each chunk is a whole number of batches, so batches (and the float bits of the scores) are
    those of one pass over the data. Chunks grow to about :data:`CHUNK_SECONDS` of work: a Ctrl-C
    in a single-process run loses at most the chunk in flight, and everything scored before it
    is returned with ``interrupted=True``. Under torchrun an interrupt is raised as it is (the
    other ranks cannot be gathered any more).
    """
    n = len(dataset)
    mine = list(range(dist_info.rank, n, dist_info.world_size)) if dist_info.enabled else list(range(n))
    batch_size = int(kw.get("batch_size", 32))
    result = Scored(np.full(n, np.nan, dtype=np.float64), {})
    chunk = len(mine) if _mask_is_random(kw.get("mask")) else batch_size * FIRST_CHUNK_BATCHES
    bar = tqdm(total=len(mine), desc=desc, unit="img", disable=not (progress and dist_info.is_main),
               leave=False, dynamic_ncols=True)
    start = 0
    try:
        while start < len(mine):
            idx = mine[start : start + max(chunk, 1)]
            t0 = time.perf_counter()
            scores, errors = score_dataset(model, dataset, indices=idx, desc=desc, progress=False, **kw)
            result.scores[idx] = scores[idx]
            result.errors.update(errors)
            start += len(idx)
            bar.update(len(idx))
            rate = len(idx) / max(time.perf_counter() - t0, 1e-9)
            chunk = batch_size * max(1, math.ceil(rate * CHUNK_SECONDS / batch_size))
    except KeyboardInterrupt:
        if dist_info.enabled:
            raise
        result.interrupted = True
    finally:
        bar.close()
    if not dist_info.enabled:
        return result
    import torch.distributed as dist

    part = (mine, result.scores[mine].tolist(), result.errors)
    gathered: list[Any] | None = [None] * dist_info.world_size if dist_info.is_main else None
    dist.gather_object(part, gathered, dst=0)
    if not dist_info.is_main:
        return None
    full = Scored(np.full(n, np.nan, dtype=np.float64), {})
    for idx, vals, errs in gathered or []:
        full.scores[np.asarray(idx, dtype=np.int64)] = np.asarray(vals, dtype=np.float64)
        full.errors.update(errs)
    return full

