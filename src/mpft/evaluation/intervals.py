"""Confidence intervals: Wilson for proportions, percentile bootstrap for any score-set metric."""

from __future__ import annotations

import math
from collections.abc import Callable
from statistics import NormalDist
from typing import Any

import numpy as np
import sklearn

from mpft.errors import ConfigError
from mpft.evaluation.checks import both_classes, check_confidence, validate_inputs

__all__ = ["Interval", "bootstrap_interval", "wilson_interval"]

Interval = tuple[float, float]


def wilson_interval(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion ``k / n``.

    Preferred over the normal approximation because it stays inside [0, 1] and is sensible at
    ``k = 0`` or ``k = n`` (a detector that gets every fake right still gets an interval).

    Returns:
        ``(low, high)``; ``(nan, nan)`` when ``n == 0``.

    Raises:
        ConfigError: ``k`` outside ``[0, n]``, negative ``n``, or ``confidence`` outside (0, 1).
    """
    check_confidence(confidence)
    if n < 0 or k < 0 or k > n:
        raise ConfigError(f"wilson_interval needs 0 <= k <= n, got k={k}, n={n}")
    if n == 0:
        return (math.nan, math.nan)
    z = NormalDist().inv_cdf(0.5 + confidence / 2.0)
    p = k / n
    z2 = z * z
    denom = 1.0 + z2 / n
    centre = (p + z2 / (2.0 * n)) / denom
    half = (z / denom) * math.sqrt(p * (1.0 - p) / n + z2 / (4.0 * n * n))
    # Clamp rounding noise: at k = 0 / k = n the bound is exactly 0 / 1.
    return (max(0.0, centre - half), min(1.0, centre + half))


def bootstrap_interval(
    metric_fn: Callable[[np.ndarray, np.ndarray], float],
    labels: Any,
    scores: Any,
    *,
    n_boot: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
    stratified: bool = True,
) -> tuple[float, float]:
    """Percentile bootstrap interval of ``metric_fn(labels, scores)``.

    Args:
        metric_fn: ``f(labels (m,), scores (m,)) -> float``, e.g. ``sklearn.metrics.roc_auc_score``.
        labels: shape ``(n,)`` in {0, 1}.
        scores: shape ``(n,)`` in [0, 1].
        n_boot: number of resamples.
        seed: seed of the resampling; the same seed gives the same interval.
        confidence: two-sided coverage, e.g. 0.95 -> 2.5th and 97.5th percentiles.
        stratified: resample within each class, keeping the class counts, so every resample holds
            both classes (needed for AP/AUC on small or unbalanced sets). When False, resamples
            drawing a single class from a two-class set, or where the metric is NaN or raises
            ValueError, are dropped.

    Returns:
        ``(low, high)``; ``(nan, nan)`` when no resample gives a defined value.
    """
    check_confidence(confidence)
    if n_boot < 1:
        raise ConfigError(f"n_boot must be >= 1, got {n_boot}")
    y, s = validate_inputs(labels, scores)
    rng = np.random.default_rng(seed)
    n = y.shape[0]
    if stratified:
        class_idx = [np.flatnonzero(y == c) for c in (0, 1)]
        class_idx = [idx for idx in class_idx if idx.size]
        # One draw per class for all resamples at once: (n_boot, n_c) indices into that class.
        draws = [idx[rng.integers(0, idx.size, size=(n_boot, idx.size))] for idx in class_idx]
        resamples = np.concatenate(draws, axis=1)
    else:
        resamples = rng.integers(0, n, size=(n_boot, n))

    values = []
    both = both_classes(y)
    # Inputs are validated above; skipping sklearn's per-call re-validation saves ~10% of the
    # n_boot calls, which dominate compute_metrics' run time.
    with sklearn.config_context(assume_finite=True, skip_parameter_validation=True):
        for idx in resamples:
            # A non-stratified resample can draw a single class from a two-class set; AP/AUC are
            # undefined there (sklearn returns a warning and a misleading number), so drop it.
            if both and not both_classes(y[idx]):
                continue
            try:
                v = float(metric_fn(y[idx], s[idx]))
            except ValueError:
                continue
            if math.isfinite(v):
                values.append(v)
    if not values:
        return (math.nan, math.nan)
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(np.asarray(values), [alpha, 1.0 - alpha])
    return (float(low), float(high))
