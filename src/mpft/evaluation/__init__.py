"""Evaluation of a detector on labelled datasets: metrics, reports and the orchestration.

- :func:`evaluate`: checkpoint + dataset folders in, :class:`EvalReport` (and report files) out;
  ``mpft eval`` is a thin wrapper around it. The run: :mod:`~mpft.evaluation.settings` (options,
  checked), :mod:`~mpft.evaluation.inputs` (files), :mod:`~mpft.evaluation.scoring` (chunked, sharded
  scoring), :mod:`~mpft.evaluation.calibration` (second threshold), :mod:`~mpft.evaluation.runner`.
- metrics on arrays, no I/O: :mod:`~mpft.evaluation.metrics` (per-generator :class:`Metrics`),
  :mod:`~mpft.evaluation.intervals`, :mod:`~mpft.evaluation.thresholds`, :mod:`~mpft.evaluation.groups`,
  :mod:`~mpft.evaluation.checks`.
- the report: :mod:`~mpft.evaluation.schema` (data model), :mod:`~mpft.evaluation.io` (JSON/CSV),
  :mod:`~mpft.evaluation.markdown`, :mod:`~mpft.evaluation.plots`, :mod:`~mpft.evaluation.console`,
  :mod:`~mpft.evaluation.sweep` (perturbed conditions in order), :mod:`~mpft.evaluation.outputs`
  (:func:`write_all`).
"""

from __future__ import annotations

from mpft.evaluation.inputs import EvalData, eval_split, resolve_checkpoint_dir, resolve_eval_data
from mpft.evaluation.metrics import MEAN_METHOD, Metrics, compute_metrics, group_metrics, threshold_at_fpr
from mpft.evaluation.outputs import write_all
from mpft.evaluation.runner import evaluate
from mpft.evaluation.schema import Condition, EvalReport, ReportMeta, ScoreRow, SkippedFile
from mpft.evaluation.settings import DEFAULT_SWEEP_N_BOOT, EvalSettings, parse_mask

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
