"""The report directory: every file of an evaluation written at once (:func:`write_all`)."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from mpft.errors import ConfigError
from mpft.evaluation.io import write_csv, write_json, write_scores_csv
from mpft.evaluation.markdown import write_markdown
from mpft.evaluation.plots import plot_histograms, plot_roc, plot_sweep
from mpft.evaluation.schema import EvalReport, ScoreRow

log = logging.getLogger(__name__)

__all__ = ["write_all"]


def _arrays_from_scores(report: EvalReport) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    if not report.scores:
        return None
    base = report.condition().name
    rows = [r for r in report.scores if r.condition == base]
    if not rows:
        return None
    return (
        np.array([r.label for r in rows]),
        np.array([r.score for r in rows]),
        np.array([r.generator for r in rows], dtype=object),
    )


def write_all(
    report: EvalReport,
    out_dir: str | os.PathLike[str],
    *,
    labels: Any = None,
    scores: Any = None,
    generators: Any = None,
    real_pool: str | None = None,
) -> dict[str, Path]:
    """Write metrics.json, metrics.csv, report.md, scores.csv, roc.png, histograms.png, sweep.png.

    ``labels``/``scores``/``generators`` (shape ``(n,)`` each, the clean condition) feed the ROC
    and histogram plots; when left out they are taken from ``report.scores`` of the baseline
    condition. Without either, scores.csv and those two plots are skipped (logged).

    Returns:
        ``{file name: path written}``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = {
        "metrics.json": write_json(report, out / "metrics.json"),
        "metrics.csv": write_csv(report, out / "metrics.csv"),
        "report.md": write_markdown(report, out / "report.md"),
    }
    if labels is None and scores is None and generators is None:
        arrays = _arrays_from_scores(report)
    elif labels is None or scores is None or generators is None:
        raise ConfigError("write_all needs labels, scores and generators together (or none of them)")
    else:
        arrays = (np.asarray(labels), np.asarray(scores), np.asarray(generators, dtype=object))

    if report.scores is not None:
        written["scores.csv"] = write_scores_csv(report.scores, out / "scores.csv")
    elif arrays is not None:
        base = report.condition().name
        rows = (ScoreRow("", str(g), int(y), float(s), base) for y, s, g in zip(*arrays, strict=True))
        written["scores.csv"] = write_scores_csv(rows, out / "scores.csv")

    if arrays is not None:
        y, s, g = arrays
        pool = real_pool or report.meta.real_pool or "auto"
        thresholds = {k: v for k, v in report.meta.thresholds.items() if v is not None}
        written["roc.png"] = plot_roc(y, s, g, out / "roc.png", real_pool=pool)
        written["histograms.png"] = plot_histograms(y, s, out / "histograms.png", thresholds=thresholds)
    else:
        log.warning("no per-image scores given: skipping scores.csv, roc.png and histograms.png")
    written["sweep.png"] = plot_sweep(report, out / "sweep.png")
    return written
