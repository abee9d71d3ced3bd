"""The rich console table ``mpft eval`` prints: one condition's per-generator figures."""

from __future__ import annotations

from rich.table import Table

from mpft.display import display_name
from mpft.evaluation.cells import pct
from mpft.evaluation.schema import EvalReport, generator_names, has_figure, ordered_rows

__all__ = ["console_table"]


def console_table(report: EvalReport, condition: str | None = None) -> Table:
    """A rich table of one condition (default: "clean", else the first) for the CLI to print."""
    cond = report.condition(condition)
    rows = cond.rows
    cal, oracle = has_figure(rows, "threshold_cal"), has_figure(rows, "oracle_acc")
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
    gens = generator_names(rows)
    for name, m in ordered_rows(rows):
        cells = [
            display_name(name) if name != "mean" else "mean (unweighted)",
            str(m.n_real),
            str(m.n_fake),
            pct(m.real_acc),
            pct(m.fake_acc),
            pct(m.acc),
            pct(m.ap),
            pct(m.auc),
        ]
        if cal:
            cells.append(pct(m.acc_cal))
        if oracle:
            cells.append(pct(m.oracle_acc))
        # A rule between the generator rows and the summary rows.
        table.add_row(*cells, end_section=bool(gens) and name == gens[-1])
    return table
