"""The Markdown report (report.md), laid out as papers print their tables."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from mpft.display import display_name
from mpft.evaluation.cells import pct, pct_ci, signed_pp, thr
from mpft.evaluation.io import write_text
from mpft.evaluation.metrics import MEAN_METHOD
from mpft.evaluation.schema import (
    CLEAN,
    SUMMARY_ROWS,
    Condition,
    EvalReport,
    ReportMeta,
    generator_names,
    has_figure,
    ordered_rows,
)
from mpft.evaluation.sweep import sweep_conditions

__all__ = ["render_markdown", "write_markdown"]


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
            pct_ci(m.real_acc, m.real_acc_ci),
            pct_ci(m.fake_acc, m.fake_acc_ci),
            pct_ci(m.acc, m.acc_ci),
            pct_ci(m.ap, m.ap_ci),
            pct_ci(m.auc, m.auc_ci),
            pct(m.tpr_at_fpr_1),
            pct(m.tpr_at_fpr_5),
        ]
        for name, m in ordered_rows(cond.rows)
    ]
    return _md_table(header, body)


def _threshold_table(cond: Condition, calibration: str | None) -> list[str]:
    rows = cond.rows
    cal, oracle = has_figure(rows, "threshold_cal"), has_figure(rows, "oracle_acc")
    if not (cal or oracle):
        return []
    t = next(m.threshold for m in rows.values())
    header = ["generator", f"acc @{thr(t)}", f"real acc @{thr(t)}", f"fake acc @{thr(t)}"]
    if cal:
        tc = next(m.threshold_cal for m in rows.values() if m.threshold_cal is not None)
        header += [f"acc @cal {thr(tc)}", f"real acc @cal {thr(tc)}", f"fake acc @cal {thr(tc)}"]
    if oracle:
        header += ["oracle threshold (not a result)", "oracle acc (not a result)"]
    body = []
    for name, m in ordered_rows(rows):
        r = [_row_label(name), pct(m.acc), pct(m.real_acc), pct(m.fake_acc)]
        if cal:
            r += [
                pct_ci(m.acc_cal, m.acc_cal_ci),
                pct_ci(m.real_acc_cal, m.real_acc_cal_ci),
                pct_ci(m.fake_acc_cal, m.fake_acc_cal_ci),
            ]
        if oracle:
            r += [thr(m.oracle_threshold), pct(m.oracle_acc)]
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


def _sweep_tables(report: EvalReport) -> list[str]:
    clean, kinds = sweep_conditions(report)
    if not kinds:
        return []
    ref = clean or next(c for items in kinds.values() for _, c in items)
    gens = generator_names(ref.rows) + ["mean"]
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
            body.append([c.name] + [pct(getattr(c.rows[g], attr)) if g in c.rows else "–" for g in gens])
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
    for g, m in ordered_rows(base.rows):
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
                pct(m.acc),
                pct(n.acc),
                signed_pp(d_acc),
                pct(m.ap),
                pct(n.ap),
                signed_pp(d_ap),
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


def _meta_lines(meta: ReportMeta) -> list[str]:
    items = [
        ("checkpoint", meta.checkpoint),
        ("model", meta.model_id),
        ("data", ", ".join(meta.data_paths) if meta.data_paths else None),
        (
            "thresholds",
            ", ".join(f"{k}={thr(v)}" for k, v in meta.thresholds.items() if v is not None) or None,
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
    return write_text(path, render_markdown(report))
