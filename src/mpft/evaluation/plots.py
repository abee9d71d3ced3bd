"""PNG plots of a report: ROC per generator, score histograms, the robustness sweep.

Matplotlib's object API with the Agg canvas (no pyplot, no display, no global state); every PNG is
written atomically through :func:`mpft.evaluation.io.write_atomic`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from sklearn.metrics import roc_auc_score, roc_curve

from mpft.evaluation.checks import validate_inputs
from mpft.evaluation.groups import generator_groups
from mpft.evaluation.io import write_atomic
from mpft.evaluation.metrics import Metrics
from mpft.evaluation.schema import EvalReport, generator_names
from mpft.evaluation.sweep import sweep_conditions

__all__ = ["plot_histograms", "plot_roc", "plot_sweep"]


def _new_figure(figsize: tuple[float, float]) -> Figure:
    fig = Figure(figsize=figsize, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save_png(fig: Figure, path: str | os.PathLike[str]) -> Path:
    return write_atomic(path, lambda f: fig.savefig(f, format="png", dpi=110), binary=True)


def plot_roc(
    labels: Any,
    scores: Any,
    generators: Sequence[str] | np.ndarray,
    path: str | os.PathLike[str],
    real_pool: str = "auto",
) -> Path:
    """ROC curve per generator (rows as in :func:`~mpft.evaluation.metrics.group_metrics`) to a PNG.

    Args:
        labels: shape ``(n,)`` in {0, 1}.
        scores: shape ``(n,)`` in [0, 1].
        generators: shape ``(n,)`` generator name per image.
        real_pool: how real images are assigned to generators ("auto", "per-generator", "shared").
    """
    y, s = validate_inputs(labels, scores)
    mode, groups = generator_groups(y, generators, real_pool)
    fig = _new_figure((6.0, 5.5))
    ax = fig.add_subplot()
    drawn = 0
    for name, idx in groups.items():
        yy, ss = y[idx], s[idx]
        if yy.min() == yy.max():
            continue
        fpr, tpr, _ = roc_curve(yy, ss)
        ax.plot(fpr, tpr, lw=1.5, label=f"{name} (AUC {roc_auc_score(yy, ss):.3f})")
        drawn += 1
    ax.plot([0, 1], [0, 1], ls="--", c="grey", lw=1)
    if not drawn:
        ax.text(0.5, 0.5, "ROC undefined:\nno generator row has both classes", ha="center", va="center")
    else:
        ax.legend(loc="lower right", fontsize="small")
    ax.set(
        xlim=(0, 1),
        ylim=(0, 1.01),
        xlabel="false positive rate (real flagged)",
        ylabel="true positive rate (generated flagged)",
        title=f"ROC per generator (real images: {mode})",
    )
    return _save_png(fig, path)


def plot_histograms(
    labels: Any, scores: Any, path: str | os.PathLike[str], *, thresholds: Mapping[str, float] | None = None
) -> Path:
    """Histograms of real vs generated scores (shape ``(n,)`` each) to a PNG, thresholds as lines."""
    y, s = validate_inputs(labels, scores)
    fig = _new_figure((6.5, 4.0))
    ax = fig.add_subplot()
    bins = np.linspace(0.0, 1.0, 41)
    for cls, name, color in ((0, "real", "tab:blue"), (1, "generated", "tab:red")):
        sel = s[y == cls]
        if sel.size:
            ax.hist(sel, bins=bins, alpha=0.55, color=color, label=f"{name} (n={sel.size})")
    for name, t in (thresholds or {}).items():
        if t is not None and math.isfinite(t):
            ax.axvline(t, ls="--", c="black", lw=1)
            ax.annotate(
                f"{name} {t:.3g}",
                (t, 1),
                xycoords=("data", "axes fraction"),
                rotation=90,
                va="top",
                ha="right",
                fontsize="small",
            )
    ax.set(xlim=(0, 1), xlabel="score (probability generated)", ylabel="images", title="Score distributions")
    ax.legend(fontsize="small")
    return _save_png(fig, path)


def plot_sweep(report: EvalReport, path: str | os.PathLike[str]) -> Path:
    """Accuracy and AP against perturbation strength to a PNG.

    One column of panels per perturbation kind (top: accuracy, bottom: AP), one line per generator
    plus the mean (thick black). The x axis runs from "clean" to the harshest strength.
    """
    clean, kinds = sweep_conditions(report)
    if not kinds:
        fig = _new_figure((5.0, 2.5))
        ax = fig.add_subplot()
        ax.axis("off")
        ax.text(0.5, 0.5, "no perturbation sweep in this report", ha="center", va="center")
        return _save_png(fig, path)
    ref = clean or next(c for items in kinds.values() for _, c in items)
    gens = generator_names(ref.rows)
    fig = _new_figure((4.2 * len(kinds), 6.5))
    axes = fig.subplots(2, len(kinds), squeeze=False, sharey="row")
    for col, (kind, items) in enumerate(kinds.items()):
        conds = ([clean] if clean else []) + [c for _, c in items]
        ticks = (["clean"] if clean else []) + [f"{v:g}" for v, _ in items]
        x = np.arange(len(conds))
        for row, (attr, label) in enumerate((("acc", "accuracy (%)"), ("ap", "AP (%)"))):
            ax = axes[row][col]
            for g in [*gens, "mean"]:
                ys = [_nan_pct(c.rows.get(g), attr) for c in conds]
                style = {"c": "black", "lw": 2.5, "zorder": 3} if g == "mean" else {"lw": 1.2, "alpha": 0.85}
                ax.plot(x, ys, marker="o", ms=3, label=g, **style)
            ax.set_xticks(x, ticks)
            ax.set_ylim(0, 101)
            ax.grid(alpha=0.3)
            if col == 0:
                ax.set_ylabel(label)
            if row == 0:
                ax.set_title(kind)
            else:
                ax.set_xlabel(f"{kind} strength")
    axes[0][0].legend(fontsize="x-small", loc="lower left")
    return _save_png(fig, path)


def _nan_pct(m: Metrics | None, attr: str) -> float:
    v = None if m is None else getattr(m, attr)
    return math.nan if v is None else 100.0 * v
