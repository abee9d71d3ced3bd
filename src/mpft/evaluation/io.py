"""Report files on disk: atomic writers, metrics.json, metrics.csv and scores.csv.

Every writer goes through :func:`write_atomic` (a temp file beside the target, fsync, then
:func:`mpft.fsutil.atomic_file` moves it into place), so an interrupted run never leaves a
half-written report behind. Text is always UTF-8 (the Markdown report holds "–" and "Δ").
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, fields
from pathlib import Path
from typing import IO, Any

from mpft.evaluation.metrics import Metrics
from mpft.evaluation.schema import EvalReport, ScoreRow
from mpft.fsutil import atomic_file

__all__ = ["SCORE_COLUMNS", "write_atomic", "write_text", "write_csv", "write_json", "write_scores_csv"]

#: Columns of scores.csv, in order.
SCORE_COLUMNS = ("path", "generator", "label", "score", "condition")


def write_atomic(path: str | os.PathLike[str], write: Callable[[IO[Any]], None], *, binary: bool) -> Path:
    """Call ``write(f)`` on a temp file beside ``path``, then move it into place.

    Text files are opened as UTF-8 with ``newline=""`` (the csv module writes its own line ends).
    """
    target = Path(path)
    with atomic_file(target) as tmp:
        kw = {} if binary else {"encoding": "utf-8", "newline": ""}
        with open(tmp, "wb" if binary else "w", **kw) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
    return target


def write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return write_atomic(path, lambda f: f.write(text), binary=False)


def write_json(report: EvalReport, path: str | os.PathLike[str], *, include_scores: bool = False) -> Path:
    """Write ``report.to_dict()`` as strict JSON (no NaN/Infinity)."""
    text = json.dumps(report.to_dict(include_scores=include_scores), indent=2, allow_nan=False)
    return write_text(path, text + "\n")


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

    return write_atomic(path, write, binary=False)


def write_scores_csv(rows: Iterable[ScoreRow | Mapping[str, Any]], path: str | os.PathLike[str]) -> Path:
    """Per-image scores, columns ``path, generator, label, score, condition``."""

    def write(f: IO[str]) -> None:
        w = csv.DictWriter(f, fieldnames=list(SCORE_COLUMNS), extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow(asdict(r) if isinstance(r, ScoreRow) else dict(r))

    return write_atomic(path, write, binary=False)
