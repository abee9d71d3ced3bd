"""Checks of a labelled score set, shared by every metric function.

One place decides what a valid input is (labels in {0, 1}, finite scores in [0, 1], equal
lengths) and what the error says, so :mod:`~mpft.evaluation.intervals`,
:mod:`~mpft.evaluation.thresholds` and :mod:`~mpft.evaluation.metrics` reject bad input the same way.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from mpft.errors import ConfigError, DataError

__all__ = ["both_classes", "check_confidence", "check_rate", "validate_inputs"]


def validate_inputs(labels: Any, scores: Any) -> tuple[np.ndarray, np.ndarray]:
    """Check and convert a labelled score set.

    Args:
        labels: shape ``(n,)``, values in ``{0, 1}`` (ints, bools or floats equal to 0/1).
        scores: shape ``(n,)``, finite floats in ``[0, 1]``.

    Returns:
        ``(labels, scores)`` as ``int64`` and ``float64`` arrays of shape ``(n,)``.

    Raises:
        DataError: empty input, different lengths, not 1-D, labels outside {0, 1}, scores not finite
            or outside [0, 1].
    """
    y = np.asarray(labels)
    s = np.asarray(scores)
    if y.ndim != 1 or s.ndim != 1:
        raise DataError(f"labels and scores must be 1-D arrays, got shapes {y.shape} and {s.shape}")
    if y.shape[0] != s.shape[0]:
        raise DataError(f"labels and scores have different lengths: {y.shape[0]} labels, {s.shape[0]} scores")
    if y.shape[0] == 0:
        raise DataError("no images to evaluate: labels and scores are empty")
    try:
        s = s.astype(np.float64)
        y_float = y.astype(np.float64)
    except (TypeError, ValueError) as exc:
        raise DataError(f"labels and scores must be numeric: {exc}") from exc
    bad_labels = ~np.isin(y_float, (0.0, 1.0))
    if bad_labels.any():
        found = sorted({str(v) for v in y[bad_labels][:5].tolist()})
        raise DataError(
            f"labels must be 0 (real) or 1 (generated); found {', '.join(found)} "
            f"({int(bad_labels.sum())} bad of {y.shape[0]})"
        )
    if not np.isfinite(s).all():
        raise DataError(f"scores must be finite; {int((~np.isfinite(s)).sum())} are NaN or infinite")
    if s.min() < 0.0 or s.max() > 1.0:
        raise DataError(
            f"scores must be probabilities in [0, 1]; found range [{s.min():.6g}, {s.max():.6g}] "
            "(pass probabilities, not logits)"
        )
    return y_float.astype(np.int64), s


def check_confidence(confidence: float) -> None:
    """Raise ConfigError unless an interval's coverage is in (0, 1)."""
    if not 0.0 < confidence < 1.0:
        raise ConfigError(f"confidence must be in (0, 1), got {confidence}")


def check_rate(name: str, value: float) -> None:
    """Raise ConfigError unless ``value`` (named ``name`` in the message) is a rate in [0, 1]."""
    if not (math.isfinite(value) and 0.0 <= value <= 1.0):
        raise ConfigError(f"{name} must be in [0, 1], got {value}")


def both_classes(labels: np.ndarray) -> bool:
    """Whether ``labels`` holds real and generated images (ranking metrics need both)."""
    return bool((labels == 1).any() and (labels == 0).any())
