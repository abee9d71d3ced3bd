"""Which images form each generator row: per-generator real images, or one shared real pool."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from mpft.errors import ConfigError, DataError

__all__ = ["REAL_POOLS", "RESERVED_ROWS", "generator_groups", "resolve_real_pool"]

REAL_POOLS = ("auto", "per-generator", "shared")
#: Row names of the summary rows of :func:`mpft.evaluation.metrics.group_metrics`; no generator may use them.
RESERVED_ROWS = ("mean", "overall")


def _as_names(generators: Any, n: int) -> np.ndarray:
    g = np.asarray(generators, dtype=object).reshape(-1) if not isinstance(generators, str) else None
    if g is None or g.size != n:
        got = "a single string" if g is None else f"{g.size} names"
        raise DataError(f"generators must give one name per image: {n} images, got {got}")
    return np.array([str(x) for x in g], dtype=object)


def resolve_real_pool(labels: Any, generators: Sequence[str] | np.ndarray, real_pool: str = "auto") -> str:
    """Decide how real images are assigned to generator rows; returns "per-generator" or "shared".

    "auto" picks "shared" when every generator group holds a single class and there are both
    real-only and fake-only groups (a folder of real photos next to folders of fakes), otherwise
    "per-generator" (GenImage style: each generator folder has its own real images).
    """
    if real_pool not in REAL_POOLS:
        raise ConfigError(f"real_pool must be one of {', '.join(REAL_POOLS)}; got {real_pool!r}")
    if real_pool != "auto":
        return real_pool
    y = np.asarray(labels)
    g = _as_names(generators, y.size)
    has_real, has_fake = set(g[y == 0].tolist()), set(g[y == 1].tolist())
    mixed = has_real & has_fake
    return "shared" if (not mixed and has_real and has_fake) else "per-generator"


def generator_groups(
    labels: Any, generators: Sequence[str] | np.ndarray, real_pool: str = "auto"
) -> tuple[str, dict[str, np.ndarray]]:
    """Index sets of the per-generator rows.

    Args:
        labels: shape ``(n,)`` in {0, 1}.
        generators: shape ``(n,)``, the generator (folder) name of every image.
        real_pool: "per-generator", "shared" or "auto" (see :func:`resolve_real_pool`).

    Returns:
        ``(resolved_mode, {generator: indices (m,)})`` in order of first appearance. In "shared"
        mode only generators with fakes get a row, and each row is its fakes plus every real
        image (label 0), whatever generator name the real image carries.
    """
    y = np.asarray(labels)
    g = _as_names(generators, y.size)
    mode = resolve_real_pool(y, g, real_pool)
    names = list(dict.fromkeys(g.tolist()))
    clash = [r for r in RESERVED_ROWS if r in names]
    if clash:
        raise DataError(
            f"generator name(s) {', '.join(clash)} clash with the summary rows; rename those folders"
        )
    if mode == "per-generator":
        return mode, {name: np.flatnonzero(g == name) for name in names}
    real_idx = np.flatnonzero(y == 0)
    groups = {}
    for name in names:
        fake_idx = np.flatnonzero((g == name) & (y == 1))
        if fake_idx.size:
            groups[name] = np.sort(np.concatenate([fake_idx, real_idx]))
    if not groups:
        raise DataError("real_pool='shared' needs generated images (label 1); found only real images")
    return mode, groups
