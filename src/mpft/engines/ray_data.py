"""Scoring with Ray Data: ``mpft predict --engine ray`` and a callable class for your own pipelines.

``mpft predict --engine ray`` builds this pipeline (one row per batch of ``--batch-size`` inputs,
the batches ``Detector.predict_iter`` would make):

    paths --ray.data.from_items--> batches --map(decode_batch), tasks--> views or per-file errors
          --map(BatchScorer), actors--> prediction rows --iter_rows (input order)--> the writer

Decoding runs in Ray tasks (0.5 CPU each), scoring in ``actors`` actors that each load the detector
once (:class:`DetectorSpec`), and every batch's views go through one ``Detector.score_batch`` call,
as in the local engine: the probabilities are identical, bit for bit. The input files must be
readable at the same path on every node that runs a task (a shared file system on a cluster).

For pipelines of your own, :class:`MpftPredictor` is a callable class for ``Dataset.map_batches``:

    ds = ray.data.read_binary_files("s3://bucket/photos/", include_paths=True)
    ds = ds.map_batches(MpftPredictor, fn_constructor_kwargs={"precision": "auto"}, batch_size=16,
                        concurrency=4, num_cpus=1)
    ds.write_parquet("s3://bucket/scores/")
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from mpft.engines.spec import DetectorSpec

__all__ = ["BatchScorer", "MpftPredictor", "decode_batch", "predict_iter", "OUTPUT_COLUMNS"]

log = logging.getLogger(__name__)

#: The columns :class:`MpftPredictor` returns: those of every ``mpft predict`` format.
OUTPUT_COLUMNS = ("path", "probability", "verdict", "threshold", "model_id", "error", "notes")
#: Logical CPUs a decoding task asks Ray for: two decode beside one scoring actor.
DECODE_CPUS = 0.5


def _decode(pre, sources: Sequence) -> list[tuple]:
    """Sources (paths or bytes) -> [(Prepared or None, error or None)] through the one Preprocessor."""
    from mpft.errors import ImageDecodeError

    out = []
    for src in sources:
        try:
            out.append((pre(src), None))
        except ImageDecodeError as exc:
            out.append((None, exc.reason))  # the row carries the path; the local engine's message
    return out


def decode_batch(row: dict, pre) -> dict:
    """Ray ``map`` function: a row ``{"index", "paths"}`` (JSON list) -> the batch's views and errors.

    Returns ``pixels`` (all good images' views stacked, (sum V_i, 3, S, S) uint8), and JSON lists
    ``counts`` (views per good image), ``errors`` (None or the message, per input) and ``notes``.
    """
    names = json.loads(row["paths"])
    decoded = _decode(pre, names)
    good = [prep for prep, _ in decoded if prep is not None]
    side = pre.policy.side
    pixels = (np.concatenate([p.pixels.numpy() for p in good]) if good
              else np.zeros((0, 3, side, side), np.uint8))
    return {
        "index": row["index"],
        "paths": row["paths"],
        "pixels": pixels,
        "counts": json.dumps([int(p.pixels.shape[0]) for p in good]),
        "errors": json.dumps([err for _, err in decoded]),
        "notes": json.dumps([list(prep.notes) if prep is not None else [] for prep, _ in decoded]),
    }


def _prepared(row: dict) -> list[tuple]:
    """The inverse of :func:`decode_batch`: [(Prepared or None, error or None)] per input."""
    import torch

    from mpft.pipeline import Prepared

    pixels = torch.from_numpy(np.ascontiguousarray(row["pixels"]))
    counts, errors, notes = (json.loads(row[k]) for k in ("counts", "errors", "notes"))
    views = iter(torch.split(pixels, counts)) if counts else iter(())
    return [(None, err) if err is not None else (Prepared(next(views), tuple(n)), None)
            for err, n in zip(errors, notes, strict=True)]


def _set_threads(threads: int | None) -> None:
    if threads:
        import torch

        torch.set_num_threads(threads)


class BatchScorer:
    """Ray actor for ``map``: decoded batches (:func:`decode_batch`) -> ``{"index", "rows"}`` (JSON rows)."""

    def __init__(self, spec: DetectorSpec, batch_size: int, threads: int | None = None):
        _set_threads(threads)
        self.det = spec.load()
        self.scorer = self.det.batch_scorer(batch_size)

    def __call__(self, row: dict) -> dict:
        from mpft.predict_io import prediction_row

        preds = self.det.score_batch(json.loads(row["paths"]), _prepared(row), self.scorer)
        return {"index": row["index"], "rows": json.dumps([prediction_row(p) for p in preds])}


class MpftPredictor:
    """A callable class for ``Dataset.map_batches``: loads the detector once per actor, then scores
    each batch through the one Preprocessor / Scorer path.

    Input columns: ``path`` (str), and optionally ``bytes`` (the encoded file, as
    ``ray.data.read_binary_files(..., include_paths=True)`` gives): without it each path is read.
    Output columns: :data:`OUTPUT_COLUMNS` (``probability`` NaN and ``error`` set for an unreadable
    image; ``notes`` a list of strings), one row per input row, in order.

    Keyword arguments: those of :class:`DetectorSpec` (``model`` a checkpoint folder readable on
    every node, None for the shipped detector) and ``threads`` (torch threads per actor; match
    the actor's ``num_cpus``). Probabilities equal ``mpft predict``'s when the batches are the same
    images (``batch_size`` and order); other batchings differ by float rounding only (~1e-9).
    """

    def __init__(self, model: str | None = None, *, threads: int | None = None, **spec):
        _set_threads(threads)
        self.det = DetectorSpec(model=model, **spec).load()
        self.pre = self.det.preprocessor
        self.scorer = None

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from mpft.errors import ConfigError

        if "path" not in batch:
            raise ConfigError(f"MpftPredictor needs a 'path' column; the batch has {sorted(batch)}")
        names = [str(p) for p in batch["path"]]
        sources = [bytes(b) for b in batch["bytes"]] if "bytes" in batch else names
        if self.scorer is None:
            self.scorer = self.det.batch_scorer(len(names))
        preds = self.det.score_batch(names, _decode(self.pre, sources), self.scorer)
        return {
            "path": np.array(names, dtype=object),
            "probability": np.array([np.nan if p.probability is None else p.probability for p in preds]),
            "verdict": np.array([p.verdict for p in preds], dtype=object),
            "threshold": np.array([p.threshold for p in preds]),
            "model_id": np.array([p.model_id for p in preds], dtype=object),
            "error": np.array([p.error for p in preds], dtype=object),
            "notes": _object_column([list(p.notes) for p in preds]),
        }


def _object_column(values: list) -> np.ndarray:
    """A 1-D object array of ``values`` (np.array would make a 2-D array of equal-length lists)."""
    col = np.empty(len(values), dtype=object)
    for i, v in enumerate(values):
        col[i] = v
    return col


def start_ray(address: str | None, actors: int) -> bool:
    """Join the cluster at ``address``, or start a local Ray; True when this call started it."""
    import ray

    if ray.is_initialized():
        return False
    kwargs = dict(include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
    if address:
        ray.init(address=address, **kwargs)
    else:
        # logical CPUs: one per actor plus room for decoding tasks, which overlap the forward passes
        ray.init(num_cpus=max(os.cpu_count() or 1, actors + 1), **kwargs)
    return True


def predict_iter(spec: DetectorSpec, pre, inputs: Sequence[Path], *, batch_size: int = 16, actors: int = 1,
                 address: str | None = None, threads: int | None = None) -> Iterator:
    """Score ``inputs`` with Ray Data; yields ``Prediction`` objects in input order.

    ``pre``: the detector's Preprocessor (decoding settings for the tasks); ``threads``: torch
    threads per actor (None: this process's count when Ray runs locally, which keeps the rows
    identical to the local engine's; torch's default of each node on a cluster).
    """
    import ray
    import ray.data

    from mpft.detector import Prediction

    # Ray Data narrates each run at INFO on the console; mpft's own summary says what matters
    logging.getLogger("ray").setLevel(max(logging.WARNING, logging.getLogger().level))
    started = start_ray(address, actors)
    try:
        ctx = ray.data.DataContext.get_current()
        ctx.execution_options.preserve_order = True  # rows in input order, like the local engine
        ctx.enable_progress_bars = False
        if threads is None and not address:
            # as many threads as this process (and so the local engine) uses: oneDNN's kernels may round
            # differently with another thread count (measured: 4e-11 on one image of a 3-image batch),
            # and the rows must be the local engine's bit for bit
            import torch

            threads = torch.get_num_threads()
        names = [str(p) for p in inputs]
        items = [{"index": i // batch_size, "paths": json.dumps(names[i:i + batch_size])}
                 for i in range(0, len(names), batch_size)]
        # one block per batch for small runs (every batch can decode in parallel); at most 1024 blocks,
        # so a million images do not become 62k tiny tasks (a block's batches decode one after another)
        ds = ray.data.from_items(items, override_num_blocks=max(1, min(len(items), 1024)))
        ds = ds.map(decode_batch, fn_kwargs={"pre": pre}, num_cpus=DECODE_CPUS)
        ds = ds.map(BatchScorer, fn_constructor_kwargs={"spec": spec, "batch_size": batch_size, "threads": threads},
                    compute=ray.data.ActorPoolStrategy(size=actors), num_cpus=1)
        for row in ds.iter_rows():
            for d in json.loads(row["rows"]):
                d["notes"] = tuple(d["notes"])
                yield Prediction(source=d.pop("path"), **d)
    finally:
        if started:
            ray.shutdown()
