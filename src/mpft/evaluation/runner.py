"""Evaluation orchestration: checkpoint + datasets in, :class:`EvalReport` (and report files) out.

The settings are checked in :mod:`~mpft.evaluation.settings`, the files found by
:mod:`~mpft.evaluation.inputs`, scored by :mod:`~mpft.evaluation.scoring`, the second threshold chosen
by :mod:`~mpft.evaluation.calibration`, the figures computed by :mod:`~mpft.evaluation.metrics` and the
files written by :mod:`~mpft.evaluation.outputs`; this module runs those steps under each condition
(clean, perturbations, format normalisation) and handles Ctrl-C.

Determinism: nothing here draws random numbers except the seeded ``limit`` subset and the seeded
bootstrap, so two runs with the same inputs give the same ``metrics.json`` (apart from
``meta.created``). Under ``torchrun`` each process scores indices ``rank::world`` and rank 0
gathers the scores, computes the metrics and writes the report; other ranks write nothing.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from mpft.config import DEFAULT_THRESHOLD
from mpft.data.dataset import ImageDataset
from mpft.data.samples import Sample, summarize
from mpft.errors import DataError
from mpft.evaluation.calibration import calibrate
from mpft.evaluation.inputs import EvalInputs, gather_inputs
from mpft.evaluation.metrics import group_metrics
from mpft.evaluation.outputs import write_all
from mpft.evaluation.schema import CLEAN, Condition, EvalReport, ReportMeta, ScoreRow, SkippedFile
from mpft.evaluation.scoring import Scored, score_chunked, strip_source
from mpft.evaluation.settings import ConditionPlan, EvalSettings, parse_mask, plan_conditions
from mpft.precision import check_precision, resolve_precision
from mpft.runtime import DistInfo, init_distributed, local_device, resolve_device, seed_everything

log = logging.getLogger(__name__)

__all__ = ["EvalInterrupted", "evaluate"]


class EvalInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped :func:`evaluate`; ``report`` holds what was scored (``report.meta.partial`` says how far).

    A KeyboardInterrupt, so code that stops on Ctrl-C still stops (``mpft eval`` exits 130); the
    partial report has already been written to ``out`` when one was given.
    """

    def __init__(self, report: EvalReport) -> None:
        super().__init__(report.meta.partial)
        self.report = report


@dataclass
class _Runtime:
    """Where and how this process scores: resolved device and precision, torchrun rank, the backbone."""

    device: torch.device
    dist_info: DistInfo
    precision: str
    precision_requested: str
    encoder: Any
    progress: bool


def evaluate(
    checkpoint: str | os.PathLike[str],
    data: Sequence[str | os.PathLike[str]],
    *,
    out: str | os.PathLike[str] | None,
    settings: EvalSettings | None = None,
    encoder: Any = None,
    progress: bool | None = None,
    **options: Any,
) -> EvalReport | None:
    """Evaluate a detector checkpoint on one or more labelled datasets.

    Args:
        checkpoint: checkpoint directory, or a training run directory holding ``best/``.
        data: dataset roots (any layout), or with ``settings.real`` folders of generated images.
        out: directory for metrics.json, metrics.csv, report.md, scores.csv and the PNG plots;
            None writes nothing.
        settings: the evaluation options (:class:`~mpft.evaluation.settings.EvalSettings`, which
            holds their defaults and meanings); None: the defaults.
        encoder: an already-loaded backbone (skips loading it again).
        progress: progress bar on stderr; default when stderr is a terminal.
        options: single settings by name, over ``settings`` (``evaluate(ckpt, data, out=None,
            n_boot=0, device="cpu")``); an unknown name is a ConfigError naming the valid ones.

    Returns:
        The report; None on torchrun ranks other than 0 (they only score their share).

    Interrupts: Ctrl-C in a single-process run stops scoring, writes what was scored (at most the
    last ~30 s of work is lost; ``meta.partial`` says where it stopped; the interrupted condition
    has no bootstrap intervals) and raises :class:`EvalInterrupted`, a KeyboardInterrupt carrying
    the report. Under torchrun, or before any test image was scored, a plain KeyboardInterrupt.

    Raises:
        ConfigError: bad option values or specs. DataError: missing or unusable data.
        CheckpointError: missing or unreadable checkpoint.
    """
    # Cheap checks first, so a typo fails before any model or data is loaded.
    settings = EvalSettings.with_options(settings, **options)
    precision = settings.precision
    inputs = gather_inputs(checkpoint, data, settings)
    device0 = resolve_device(settings.run_device)
    was_initialised = torch.distributed.is_available() and torch.distributed.is_initialized()
    dist_info = init_distributed(device0)
    runtime = _Runtime(
        device=local_device(device0, dist_info),
        dist_info=dist_info,
        precision=resolve_precision(precision, device0),
        precision_requested=check_precision(precision),
        encoder=encoder,
        progress=sys.stderr.isatty() if progress is None else progress,
    )
    try:
        return _run(settings, inputs, runtime, out)
    finally:
        if dist_info.enabled and not was_initialised:
            torch.distributed.destroy_process_group()


def _run(
    settings: EvalSettings, inputs: EvalInputs, runtime: _Runtime, out: str | os.PathLike[str] | None
) -> EvalReport | None:
    from mpft.detector import Detector

    seed_everything(settings.seed)
    # the one loader: eval scores the graph predict and serve run (LoRA merged, same precision, views)
    detector = Detector.load(
        inputs.ckpt_dir, device=str(runtime.device), encoder=runtime.encoder, precision=runtime.precision,
        views=settings.views,
    )
    policy = detector.policy  # the checkpoint's resize rule at the backbone's input size
    mask_cfg = parse_mask(settings.mask, detector.config.mask)
    score_kw: dict[str, Any] = {
        "batch_size": settings.batch_size, "workers": settings.workers, "device": runtime.device,
        "mask": mask_cfg, "combine": detector.views.combine,
    }

    def score(samples: list[Sample], desc: str, **dataset_kw: Any) -> Scored | None:
        ds = ImageDataset(samples, policy, train=False, seed=settings.seed, views=detector.views, **dataset_kw)
        return score_chunked(
            detector.model, ds, dist_info=runtime.dist_info, desc=desc, progress=runtime.progress, **score_kw
        )

    cal = calibrate(detector, inputs.cal_samples, settings, score)
    plans = plan_conditions(settings)
    samples = inputs.samples
    labels = np.array([s.label for s in samples], dtype=np.int64)
    generators = np.array([s.generator for s in samples], dtype=object)
    paths = [str(s.path) for s in samples]
    skipped = dict(cal.skipped)
    conditions: list[Condition] = []
    score_rows: list[ScoreRow] = []
    n_scored: dict[str, int] = {}
    n_failed: dict[str, int] = {}
    seconds = 0.0
    # Set when Ctrl-C stops a single-process run: what was scored is still reported, marked partial.
    partial: str | None = None
    pending: tuple[ConditionPlan, Scored] | None = None  # scored, metrics not computed yet

    def add_condition(plan: ConditionPlan, got: Scored, n_boot: int) -> None:
        ok = ~np.isnan(got.scores)
        if not ok.any():
            if got.interrupted:
                return
            raise DataError(f"no image could be scored under condition {plan.name!r} ({len(got.errors)} failed)")
        rows = group_metrics(
            labels[ok], got.scores[ok], generators[ok], real_pool=inputs.eval_data.real_pool,
            threshold=DEFAULT_THRESHOLD, calibrated_threshold=cal.threshold, oracle=settings.oracle,
            n_boot=n_boot, seed=settings.seed,
        )
        conditions.append(Condition(plan.name, plan.perturbation.name if plan.perturbation else None, rows))
        score_rows.extend(
            ScoreRow(paths[i], str(generators[i]), int(labels[i]), float(got.scores[i]), plan.name)
            for i in np.flatnonzero(ok)
        )

    try:
        for plan in plans:
            t0 = time.perf_counter()
            got = score(samples, plan.name, perturbation=plan.perturbation, normalize_format=plan.normalize_format)
            seconds += time.perf_counter() - t0
            if got is None:
                continue
            for i, reason in sorted(got.errors.items()):
                if paths[i] in skipped:
                    continue
                why = strip_source(paths[i], reason)
                skipped[paths[i]] = why if plan.name == CLEAN else f"{plan.name}: {why}"
            n_scored[plan.name] = int((~np.isnan(got.scores)).sum())
            n_failed[plan.name] = len(got.errors)
            if got.interrupted:
                partial = (f"interrupted during condition {plan.name!r} after {got.attempted()} of "
                           f"{len(samples)} images")
                pending = (plan, got)
                break
            pending = (plan, got)
            add_condition(plan, got, plan.n_boot)
            pending = None
    except KeyboardInterrupt:
        if runtime.dist_info.enabled:
            raise
        # Ctrl-C while computing a finished condition's intervals: report its scores without them
        partial = partial or (f"interrupted while computing the metrics of {pending[0].name!r}"
                              if pending else "interrupted")
    if partial is not None:
        if pending is not None:
            # intervals skipped: the user asked to stop, and 1000 resamples cost ~2 s per row
            add_condition(pending[0], pending[1], 0)
        if not conditions:
            log.warning("%s: no image was scored, nothing written", partial)
            raise KeyboardInterrupt
    if not runtime.dist_info.is_main:
        return None

    n_attempted = sum(n_scored.values()) + sum(n_failed.values())
    log.info(
        "scored %d of %d images (%d could not be read) in %.1f s (%.1f images/s)",
        sum(n_scored.values()), n_attempted, sum(n_failed.values()), seconds,
        sum(n_scored.values()) / max(seconds, 1e-9),
    )
    meta = ReportMeta(
        checkpoint=str(inputs.ckpt_dir),
        model_id=detector.model_id,
        data_paths=inputs.data + ([str(settings.real)] if settings.real is not None else []),
        thresholds=cal.thresholds(),
        calibration=cal.note,
        seed=settings.seed,
        limit=settings.limit,
        real_pool=inputs.eval_data.real_pool,
        normalize_format_condition=plans[-1].name if settings.normalize_format is not None else None,
        skipped=[SkippedFile(p, r) for p, r in sorted(skipped.items())],
        partial=partial,
        extra={
            "layout": settings.layout if settings.real is None else "fake folders + shared real pool",
            "splits": {k: v for k, v in inputs.eval_data.splits.items() if v is not None} or None,
            "real_folder": str(settings.real) if settings.real is not None else None,
            "calibrate_on": str(settings.calibrate_on) if settings.calibrate_on is not None else None,
            "target_fpr": settings.target_fpr if settings.calibrate_on is not None else None,
            "perturbations": [p.name for p in settings.perturbations],
            "normalize_format": settings.normalize_format,
            "mask_at_inference": mask_cfg.to_dict() if mask_cfg is not None else None,
            "precision": runtime.precision,
            "views": detector.views.spec,
            "precision_requested": (
                runtime.precision_requested if runtime.precision_requested != runtime.precision else None
            ),
            "n_boot": settings.n_boot,
            "sweep_n_boot": settings.sweep_resamples if len(plans) > 1 else None,
            "counts": summarize(samples),
            "n_scored": n_scored,
            "n_failed": n_failed,
            "conditions_planned": [p.name for p in plans] if partial is not None else None,
        },
    )
    meta.extra = {k: v for k, v in meta.extra.items() if v is not None}
    report = EvalReport(meta=meta, conditions=conditions, scores=score_rows)
    if out is not None:
        write_all(report, out, real_pool=inputs.eval_data.real_pool)
    if skipped:
        log.warning("%d files were skipped (listed in metrics.json under meta.skipped)", len(skipped))
    if partial is not None:
        where = f" to {out}" if out is not None else ""
        log.warning("%s; partial report (marked partial) written%s", partial, where)
        raise EvalInterrupted(report)
    return report
