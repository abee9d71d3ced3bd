"""How a figure is written in a table cell (percent, interval, threshold, delta), the same in every table."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["pct", "pct_ci", "signed_pp", "thr"]


def pct(v: float | None) -> str:
    """A fraction as a percentage with one decimal; "–" when undefined."""
    return "–" if v is None else f"{100 * v:.1f}"


def pct_ci(v: float | None, ci: Sequence[float] | None) -> str:
    """A fraction and its interval, e.g. "93.1 [90.2, 95.3]"."""
    if v is None:
        return "–"
    if ci is None:
        return pct(v)
    return f"{100 * v:.1f} [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]"


def thr(v: float | None) -> str:
    """A threshold with four significant digits."""
    return "–" if v is None else f"{v:.4g}"


def signed_pp(d: float | None) -> str:
    """A difference of fractions in percentage points, with its sign."""
    return "–" if d is None else f"{100 * d:+.1f}"
