"""Evaluation of a detector on labelled datasets: metrics, reports and the orchestration.

- :func:`evaluate`: checkpoint + dataset folders in, :class:`EvalReport` (and report files) out;
  ``mpft eval`` is a thin wrapper around it.
- :mod:`mpft.evaluate.metrics`: metrics on arrays (no I/O).
- :mod:`mpft.evaluate.report`: JSON/CSV/Markdown/PNG writers and the console table.
"""

from __future__ import annotations

from mpft.evaluate.metrics import MEAN_METHOD, Metrics, compute_metrics, group_metrics, threshold_at_fpr
from mpft.evaluate.report import Condition, EvalReport, ReportMeta, ScoreRow, SkippedFile, write_all
from mpft.evaluate.runner import (
    DEFAULT_SWEEP_N_BOOT,
    EvalData,
    eval_split,
    evaluate,
    parse_mask,
    resolve_checkpoint_dir,
    resolve_eval_data,
)

__all__ = [
    "DEFAULT_SWEEP_N_BOOT",
    "MEAN_METHOD",
    "Condition",
    "EvalData",
    "EvalReport",
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
