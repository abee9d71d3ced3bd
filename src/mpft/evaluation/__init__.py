"""Evaluation of a detector on labelled datasets: metrics, reports and the orchestration.

- :func:`evaluate`: checkpoint + dataset folders in, :class:`EvalReport` (and report files) out;
  ``mpft eval`` is a thin wrapper around it. The run: :mod:`~mpft.evaluate.settings` (options,
  checked), :mod:`~mpft.evaluate.inputs` (files), :mod:`~mpft.evaluate.scoring` (chunked, sharded
  scoring), :mod:`~mpft.evaluate.calibration` (second threshold), :mod:`~mpft.evaluate.runner`.
- metrics on arrays, no I/O: :mod:`~mpft.evaluate.metrics` (per-generator :class:`Metrics`),
  :mod:`~mpft.evaluate.intervals`, :mod:`~mpft.evaluate.thresholds`, :mod:`~mpft.evaluate.groups`,
  :mod:`~mpft.evaluate.checks`.
- the report: :mod:`~mpft.evaluate.schema` (data model), :mod:`~mpft.evaluate.io` (JSON/CSV),
  :mod:`~mpft.evaluate.markdown`, :mod:`~mpft.evaluate.plots`, :mod:`~mpft.evaluate.console`,
  :mod:`~mpft.evaluate.sweep` (perturbed conditions in order), :mod:`~mpft.evaluate.outputs`
  (:func:`write_all`).
"""

from __future__ import annotations

from mpft.evaluate.inputs import EvalData, eval_split, resolve_checkpoint_dir, resolve_eval_data
from mpft.evaluate.metrics import MEAN_METHOD, Metrics, compute_metrics, group_metrics, threshold_at_fpr
from mpft.evaluate.outputs import write_all
from mpft.evaluate.runner import evaluate
from mpft.evaluate.schema import Condition, EvalReport, ReportMeta, ScoreRow, SkippedFile
from mpft.evaluate.settings import DEFAULT_SWEEP_N_BOOT, EvalSettings, parse_mask

__all__ = [
    "DEFAULT_SWEEP_N_BOOT",
    "MEAN_METHOD",
    "Condition",
    "EvalData",
    "EvalReport",
    "EvalSettings",
    "Metrics",
    "ReportMeta",
    "ScoreRow",
    "SkippedFile",
    "compute_metrics",
    "eval_split",
    "evaluate",
    "group_metrics",
    "parse_mask",
    "resolve_checkpoint_dir",
    "resolve_eval_data",
    "threshold_at_fpr",
    "write_all",
]
