"""Evaluation reports: JSON, CSV, Markdown, PNG plots and a rich console table.

This is the I/O edge of :mod:`mpft.evaluate`: the figures come from :mod:`mpft.evaluate.metrics`,
this module only lays them out and writes them. Every writer is atomic (temp file in the target
directory, then ``os.replace``), so an interrupted run never leaves a half-written report behind.

Plots use Matplotlib's object API with the Agg canvas (no pyplot, no display, no global state).
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from rich.table import Table
from sklearn.metrics import roc_auc_score, roc_curve

from mpft.display import display_name
from mpft.errors import ConfigError, DataError
from mpft.evaluate.metrics import MEAN_METHOD, Metrics, generator_groups, validate_inputs
from mpft.fsutil import atomic_file

log = logging.getLogger(__name__)

__all__ = [
    "Condition",
    "EvalReport",
    "ReportMeta",
    "ScoreRow",
    "SkippedFile",
    "console_table",
    "display_name",
    "parse_perturbation",
    "plot_histograms",
    "plot_roc",
    "plot_sweep",
    "render_markdown",
    "write_all",
    "write_csv",
    "write_json",
    "write_markdown",
    "write_scores_csv",
]

CLEAN = "clean"
SUMMARY_ROWS = ("mean", "overall")
SCORE_COLUMNS = ("path", "generator", "label", "score", "condition")
#: Direction of increasing degradation per perturbation kind, so a sweep reads clean -> harshest.
#: True: a larger value is harsher (blur sigma); False: a smaller value is harsher (JPEG quality).
_HARSHER_WHEN_LARGER = {
    "blur": True,
    "noise": True,
    "jpeg": False,
    "webp": False,
    "resize": False,
    "lowres": False,
    "crop": False,
}
_PERTURBATION_RE = re.compile(r"^\s*([A-Za-z][\w-]*)\s*:\s*([-+]?\d*\.?\d+(?:[eE][-+]?\d+)?)\s*$")


# --------------------------------------------------------------------------------------------------
# Report structure
# --------------------------------------------------------------------------------------------------


@dataclass
class SkippedFile:
    """An input file that was not scored, and why (e.g. "decode error: truncated")."""

    path: str
    reason: str


def _mpft_version() -> str:
    from mpft import __version__

    return __version__


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass
class ReportMeta:
    """Provenance of an evaluation run.

    ``thresholds`` maps a name to a threshold, e.g. ``{"decision": 0.5, "calibrated": 0.83}``;
    ``calibration`` may describe how the calibrated one was obtained. Set
    ``normalize_format_condition`` to the name of the condition that re-ran the clean data with
    file formats normalised (all images re-encoded the same way); the Markdown report then compares
    it against the clean condition. ``extra`` holds anything else worth recording.
    ``partial`` is None for a finished run; a run stopped early (Ctrl-C) says there how far it got,
    and every output marks it.
    """

    checkpoint: str | None = None
    model_id: str | None = None
    data_paths: list[str] = field(default_factory=list)
    thresholds: dict[str, float | None] = field(default_factory=dict)
    calibration: str | None = None
    seed: int | None = None
    limit: int | None = None
    real_pool: str | None = None
    normalize_format_condition: str | None = None
    mpft_version: str = field(default_factory=_mpft_version)
    created: str = field(default_factory=_now)
    skipped: list[SkippedFile] = field(default_factory=list)
    partial: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def skipped_by_reason(self) -> dict[str, int]:
        return dict(Counter(s.reason for s in self.skipped).most_common())

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["n_skipped"] = len(self.skipped)
        d["skipped_by_reason"] = self.skipped_by_reason
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ReportMeta:
        names = {f.name for f in fields(cls)}
        kw = {k: v for k, v in d.items() if k in names}
        kw["skipped"] = [SkippedFile(**s) for s in d.get("skipped", [])]
        return cls(**kw)


@dataclass
class Condition:
    """Metrics of the test data under one condition ("clean", "jpeg:75", ...).

    ``rows`` is the output of :func:`mpft.evaluate.metrics.group_metrics`: one :class:`Metrics`
    per generator plus "mean" and "overall".
    """

    name: str
    perturbation: str | None
    rows: dict[str, Metrics]

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "perturbation": self.perturbation,
            "rows": {k: m.to_dict() for k, m in self.rows.items()},
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Condition:
        rows = {k: Metrics.from_dict(v) for k, v in d["rows"].items()}
        return cls(name=d["name"], perturbation=d.get("perturbation"), rows=rows)


@dataclass
class ScoreRow:
    """The score of one image under one condition."""

    path: str
    generator: str
    label: int
    score: float
    condition: str = CLEAN


@dataclass
class EvalReport:
    """Everything an evaluation produced: provenance, metrics per condition, optional per-image scores."""

    meta: ReportMeta
    conditions: list[Condition]
    scores: list[ScoreRow] | None = None

    def to_dict(self, *, include_scores: bool = False) -> dict[str, Any]:
        """JSON-safe dict. Per-image scores are left out unless asked (they go to scores.csv)."""
        d: dict[str, Any] = {
            "meta": self.meta.to_dict(),
            "mean_method": MEAN_METHOD,
            "conditions": [c.to_dict() for c in self.conditions],
        }
        if include_scores and self.scores is not None:
            d["scores"] = [asdict(r) for r in self.scores]
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> EvalReport:
        scores = [ScoreRow(**r) for r in d["scores"]] if d.get("scores") is not None else None
        return cls(
            meta=ReportMeta.from_dict(d.get("meta", {})),
            conditions=[Condition.from_dict(c) for c in d["conditions"]],
            scores=scores,
        )

    def condition(self, name: str | None = None) -> Condition:
        """The named condition; by default "clean", else the first one."""
        if not self.conditions:
            raise DataError("the report has no conditions")
        if name is None:
            return next((c for c in self.conditions if c.name == CLEAN), self.conditions[0])
        for c in self.conditions:
            if c.name == name:
                return c
        known = ", ".join(c.name for c in self.conditions)
        raise ConfigError(f"unknown condition {name!r}; the report has: {known}")


# --------------------------------------------------------------------------------------------------
# Atomic writes
# --------------------------------------------------------------------------------------------------


def _atomic_write(path: str | os.PathLike[str], write: Callable[[IO[Any]], None], *, binary: bool) -> Path:
    """Call ``write(f)`` on a temp file beside ``path``, then move it into place."""
    target = Path(path)
    with atomic_file(target) as tmp:
        kw = {} if binary else {"encoding": "utf-8", "newline": ""}
        with open(tmp, "wb" if binary else "w", **kw) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
    return target


def _write_text(path: str | os.PathLike[str], text: str) -> Path:
    return _atomic_write(path, lambda f: f.write(text), binary=False)


# --------------------------------------------------------------------------------------------------
# JSON / CSV
# --------------------------------------------------------------------------------------------------


def write_json(report: EvalReport, path: str | os.PathLike[str], *, include_scores: bool = False) -> Path:
    """Write ``report.to_dict()`` as strict JSON (no NaN/Infinity)."""
    text = json.dumps(report.to_dict(include_scores=include_scores), indent=2, allow_nan=False)
    return _write_text(path, text + "\n")


def _flat_columns() -> list[str]:
    cols = []
    for f in fields(Metrics):
        if f.name.endswith("_ci"):
            cols += [f"{f.name}_low", f"{f.name}_high"]
        else:
            cols.append(f.name)
    return cols


def _flatten(m: Metrics) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in m.to_dict().items():
        if k.endswith("_ci"):
            out[f"{k}_low"], out[f"{k}_high"] = v if v is not None else (None, None)
        else:
            out[k] = v
    return out


def write_csv(report: EvalReport, path: str | os.PathLike[str]) -> Path:
    """One row per condition x generator (including "mean" and "overall"); empty cell = undefined."""
    columns = ["condition", "perturbation", "generator", *_flat_columns()]

    def write(f: IO[str]) -> None:
        w = csv.DictWriter(f, fieldnames=columns)
        w.writeheader()
        for cond in report.conditions:
            for gen, m in cond.rows.items():
                row = {"condition": cond.name, "perturbation": cond.perturbation or "", "generator": gen}
                row.update({k: ("" if v is None else v) for k, v in _flatten(m).items()})
                w.writerow(row)

    return _atomic_write(path, write, binary=False)


def write_scores_csv(rows: Iterable[ScoreRow | Mapping[str, Any]], path: str | os.PathLike[str]) -> Path:
    """Per-image scores, columns ``path, generator, label, score, condition``."""

    def write(f: IO[str]) -> None:
        w = csv.DictWriter(f, fieldnames=list(SCORE_COLUMNS), extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow(asdict(r) if isinstance(r, ScoreRow) else dict(r))

    return _atomic_write(path, write, binary=False)


# --------------------------------------------------------------------------------------------------
# Markdown
# --------------------------------------------------------------------------------------------------


def _pct(v: float | None) -> str:
    return "–" if v is None else f"{100 * v:.1f}"


def _pct_ci(v: float | None, ci: Sequence[float] | None) -> str:
    if v is None:
        return "–"
    if ci is None:
        return _pct(v)
    return f"{100 * v:.1f} [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]"


def _thr(v: float | None) -> str:
    return "–" if v is None else f"{v:.4g}"


def _md_cell(s: str) -> str:
    return display_name(s).replace("|", "\\|")


def _md_table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(_md_cell(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_md_cell(c) for c in r) + " |" for r in rows]
    return lines


def _row_label(name: str) -> str:
    if name == "mean":
        return f"**mean** ({MEAN_METHOD})"
    if name == "overall":
        return "**overall** (all images pooled)"
    return name


def _ordered_rows(rows: Mapping[str, Metrics]) -> list[tuple[str, Metrics]]:
    gens = [(k, m) for k, m in rows.items() if k not in SUMMARY_ROWS]
    return gens + [(k, rows[k]) for k in SUMMARY_ROWS if k in rows]


def _generators(rows: Mapping[str, Metrics]) -> list[str]:
    return [k for k in rows if k not in SUMMARY_ROWS]


def _has(rows: Mapping[str, Metrics], attr: str) -> bool:
    return any(getattr(m, attr) is not None for m in rows.values())


def _main_table(cond: Condition) -> list[str]:
    header = [
        "generator",
        "real",
        "fake",
        "real acc",
        "fake acc",
        "acc",
        "AP",
        "AUC",
        "TPR@1%FPR",
        "TPR@5%FPR",
    ]
    body = [
        [
            _row_label(name),
            str(m.n_real),
            str(m.n_fake),
            _pct_ci(m.real_acc, m.real_acc_ci),
            _pct_ci(m.fake_acc, m.fake_acc_ci),
            _pct_ci(m.acc, m.acc_ci),
            _pct_ci(m.ap, m.ap_ci),
            _pct_ci(m.auc, m.auc_ci),
            _pct(m.tpr_at_fpr_1),
            _pct(m.tpr_at_fpr_5),
        ]
        for name, m in _ordered_rows(cond.rows)
    ]
    return _md_table(header, body)


def _threshold_table(cond: Condition, calibration: str | None) -> list[str]:
    rows = cond.rows
    cal, oracle = _has(rows, "threshold_cal"), _has(rows, "oracle_acc")
    if not (cal or oracle):
        return []
    t = next(m.threshold for m in rows.values())
    header = ["generator", f"acc @{_thr(t)}", f"real acc @{_thr(t)}", f"fake acc @{_thr(t)}"]
    if cal:
        tc = next(m.threshold_cal for m in rows.values() if m.threshold_cal is not None)
        header += [f"acc @cal {_thr(tc)}", f"real acc @cal {_thr(tc)}", f"fake acc @cal {_thr(tc)}"]
    if oracle:
        header += ["oracle threshold (not a result)", "oracle acc (not a result)"]
    body = []
    for name, m in _ordered_rows(rows):
        r = [_row_label(name), _pct(m.acc), _pct(m.real_acc), _pct(m.fake_acc)]
        if cal:
            r += [
                _pct_ci(m.acc_cal, m.acc_cal_ci),
                _pct_ci(m.real_acc_cal, m.real_acc_cal_ci),
                _pct_ci(m.fake_acc_cal, m.fake_acc_cal_ci),
            ]
        if oracle:
            r += [_thr(m.oracle_threshold), _pct(m.oracle_acc)]
        body.append(r)
    title = "## Decision threshold: fixed vs calibrated" if cal else "## Decision threshold"
    lines = [title, ""]
    if cal:
        lines.append(
            "The calibrated threshold is chosen on held-back real images only"
            + (f" ({calibration})" if calibration else "")
            + "; fixed-threshold figures are repeated for comparison."
        )
        lines.append("")
    if oracle:
        lines.append(
            "oracle (not a result): threshold picked on the test labels themselves; "
            "an upper bound for any fixed threshold, never a reportable accuracy."
        )
        lines.append("")
    return lines + _md_table(header, body) + [""]


def parse_perturbation(cond: Condition) -> tuple[str, float] | None:
    """``(kind, strength)`` of a "kind:value" condition (e.g. "jpeg:75" -> ("jpeg", 75.0)), else None."""
    for text in (cond.perturbation, cond.name):
        if text:
            m = _PERTURBATION_RE.match(text)
            if m:
                return m.group(1).lower(), float(m.group(2))
    return None


def _sweep(report: EvalReport) -> tuple[Condition | None, dict[str, list[tuple[float, Condition]]]]:
    """Baseline (clean) condition and, per perturbation kind, ``(strength, condition)`` from mild to harsh."""
    skip = {report.meta.normalize_format_condition}
    clean = next((c for c in report.conditions if c.name == CLEAN and c.name not in skip), None)
    kinds: dict[str, list[tuple[float, Condition]]] = {}
    for c in report.conditions:
        if c.name in skip or c.name == CLEAN:
            continue
        parsed = parse_perturbation(c)
        if parsed is None:
            log.info("condition %r is not a 'kind:strength' perturbation; left out of the sweep", c.name)
            continue
        kinds.setdefault(parsed[0], []).append((parsed[1], c))
    for kind, items in kinds.items():
        items.sort(key=lambda it: it[0], reverse=not _HARSHER_WHEN_LARGER.get(kind, True))
    return clean, kinds


def _sweep_tables(report: EvalReport) -> list[str]:
    clean, kinds = _sweep(report)
    if not kinds:
        return []
    ref = clean or next(c for items in kinds.values() for _, c in items)
    gens = _generators(ref.rows) + ["mean"]
    ordered = ([clean] if clean else []) + [c for items in kinds.values() for _, c in items]
    lines = [
        "## Robustness sweep",
        "",
        f"Rows: conditions from clean to harshest per perturbation; mean = {MEAN_METHOD}.",
        "",
    ]
    for title, attr in (("Accuracy (%)", "acc"), ("AP (%)", "ap")):
        body = []
        for c in ordered:
            body.append([c.name] + [_pct(getattr(c.rows[g], attr)) if g in c.rows else "–" for g in gens])
        lines += [f"### {title}", ""] + _md_table(["condition", *gens], body) + [""]
    return lines


def _format_section(report: EvalReport) -> list[str]:
    name = report.meta.normalize_format_condition
    if not name:
        return []
    base = next((c for c in report.conditions if c.name == CLEAN), None)
    norm = next((c for c in report.conditions if c.name == name), None)
    if base is None or norm is None:
        missing = CLEAN if base is None else name
        return ["## Format normalisation", "", f"Not compared: condition {missing!r} is missing.", ""]
    body, deltas = [], []
    for g, m in _ordered_rows(base.rows):
        n = norm.rows.get(g)
        if n is None:
            continue
        d_acc = None if m.acc is None or n.acc is None else n.acc - m.acc
        d_ap = None if m.ap is None or n.ap is None else n.ap - m.ap
        if g not in SUMMARY_ROWS:
            deltas += [abs(d) for d in (d_acc, d_ap) if d is not None]
        body.append(
            [
                _row_label(g),
                _pct(m.acc),
                _pct(n.acc),
                _signed_pp(d_acc),
                _pct(m.ap),
                _pct(n.ap),
                _signed_pp(d_ap),
            ]
        )
    worst = max(deltas) if deltas else 0.0
    verdict = (
        "negligible"
        if worst < 0.01
        else (
            "small"
            if worst < 0.03
            else "large: the detector may be reacting to file format rather than content"
        )
    )
    lines = [
        "## Format normalisation",
        "",
        f"Clean data re-run with file formats normalised (condition `{name}`). Δ = normalised − original, "
        "in percentage points.",
        "",
        *_md_table(["generator", "acc", "acc (normalised)", "Δacc", "AP", "AP (normalised)", "ΔAP"], body),
        "",
        f"**Verdict: results moved by {100 * worst:.1f} pp** "
        f"(largest |Δ| of acc/AP over generators; {verdict}).",
        "",
    ]
    return lines


def _signed_pp(d: float | None) -> str:
    return "–" if d is None else f"{100 * d:+.1f}"


def _meta_lines(meta: ReportMeta) -> list[str]:
    items = [
        ("checkpoint", meta.checkpoint),
        ("model", meta.model_id),
        ("data", ", ".join(meta.data_paths) if meta.data_paths else None),
        (
            "thresholds",
            ", ".join(f"{k}={_thr(v)}" for k, v in meta.thresholds.items() if v is not None) or None,
        ),
        ("calibration", meta.calibration),
        ("real images", meta.real_pool),
        ("seed", meta.seed),
        ("limit", meta.limit),
        ("mpft", meta.mpft_version),
        ("created", meta.created),
    ]
    lines = [f"- {k}: {display_name(str(v))}" for k, v in items if v is not None]
    for k, v in meta.extra.items():
        lines.append(f"- {k}: {display_name(str(v))}")
    if meta.skipped:
        by_reason = ", ".join(f"{r}: {n}" for r, n in meta.skipped_by_reason.items())
        lines.append(f"- skipped files: {len(meta.skipped)} ({by_reason})")
    else:
        lines.append("- skipped files: 0")
    return lines


def render_markdown(report: EvalReport) -> str:
    """The Markdown report as a string (see :func:`write_markdown`)."""
    base = report.condition()
    lines = ["# mpft evaluation report", ""]
    if report.meta.partial:
        lines += [f"**PARTIAL RESULTS**: {_md_cell(report.meta.partial)}. Figures cover only the images "
                  "scored before the run stopped; the interrupted condition has no intervals.", ""]
    lines += [*_meta_lines(report.meta), ""]
    lines += [
        f"## Per-generator results ({base.name})",
        "",
        "Figures in %; [low, high] = 95% interval (Wilson for accuracies, bootstrap for AP/AUC). "
        f"real/fake acc at the fixed threshold; mean = {MEAN_METHOD}, without intervals.",
        "",
        *_main_table(base),
        "",
    ]
    lines += _threshold_table(base, report.meta.calibration)
    lines += _sweep_tables(report)
    lines += _format_section(report)
    return "\n".join(lines).rstrip() + "\n"


def write_markdown(report: EvalReport, path: str | os.PathLike[str]) -> Path:
    """Write the report as Markdown tables laid out as papers print them.

    Sections: provenance; per-generator real/fake/overall accuracy, AP, AUC and TPR@FPR with
    intervals (mean row labelled with its averaging method); fixed vs calibrated threshold (and
    oracle columns, labelled "oracle (not a result)", only when computed); the robustness sweep
    (acc and AP per perturbation per generator); format normalisation deltas with a one-line verdict
    when ``meta.normalize_format_condition`` is set.
    """
    return _write_text(path, render_markdown(report))


# --------------------------------------------------------------------------------------------------
# Console
# --------------------------------------------------------------------------------------------------


def console_table(report: EvalReport, condition: str | None = None) -> Table:
    """A rich table of one condition (default: "clean", else the first) for the CLI to print."""
    cond = report.condition(condition)
    rows = cond.rows
    cal, oracle = _has(rows, "threshold_cal"), _has(rows, "oracle_acc")
    title = f"mpft evaluation: {display_name(cond.name)} (figures in %)"
    if report.meta.partial:
        title = f"PARTIAL ({display_name(report.meta.partial)}) - {title}"
    table = Table(title=title)
    for col in ("generator", "real", "fake", "real acc", "fake acc", "acc", "AP", "AUC"):
        table.add_column(col, justify="left" if col == "generator" else "right")
    if cal:
        table.add_column("acc @cal", justify="right")
    if oracle:
        table.add_column("oracle acc (not a result)", justify="right")
    gens = _generators(rows)
    for name, m in _ordered_rows(rows):
        cells = [
            display_name(name) if name != "mean" else "mean (unweighted)",
            str(m.n_real),
            str(m.n_fake),
            _pct(m.real_acc),
            _pct(m.fake_acc),
            _pct(m.acc),
            _pct(m.ap),
            _pct(m.auc),
        ]
        if cal:
            cells.append(_pct(m.acc_cal))
        if oracle:
            cells.append(_pct(m.oracle_acc))
        # A rule between the generator rows and the summary rows.
        table.add_row(*cells, end_section=bool(gens) and name == gens[-1])
    return table


# --------------------------------------------------------------------------------------------------
# Plots
# --------------------------------------------------------------------------------------------------


def _new_figure(figsize: tuple[float, float]) -> Figure:
    fig = Figure(figsize=figsize, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save_png(fig: Figure, path: str | os.PathLike[str]) -> Path:
    return _atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=110), binary=True)


def plot_roc(
    labels: Any,
    scores: Any,
    generators: Sequence[str] | np.ndarray,
    path: str | os.PathLike[str],
    real_pool: str = "auto",
) -> Path:
    """ROC curve per generator (rows as in :func:`~mpft.evaluate.metrics.group_metrics`) to a PNG.

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
    clean, kinds = _sweep(report)
    if not kinds:
        fig = _new_figure((5.0, 2.5))
        ax = fig.add_subplot()
        ax.axis("off")
        ax.text(0.5, 0.5, "no perturbation sweep in this report", ha="center", va="center")
        return _save_png(fig, path)
    ref = clean or next(c for items in kinds.values() for _, c in items)
    gens = _generators(ref.rows)
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


# --------------------------------------------------------------------------------------------------
# All at once
# --------------------------------------------------------------------------------------------------


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
