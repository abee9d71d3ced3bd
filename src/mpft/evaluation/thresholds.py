"""Operating points of a score set: TPR at an FPR budget, the calibrated and the oracle threshold.

An image is flagged as generated when ``score >= threshold``, as everywhere in
:mod:`mpft.evaluation`.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from sklearn.metrics import accuracy_score, roc_curve

from mpft.errors import DataError
from mpft.evaluation.checks import both_classes, check_rate, validate_inputs

__all__ = ["best_threshold", "threshold_at_fpr", "tpr_at_fpr"]


def tpr_at_fpr(labels: Any, scores: Any, fpr: float) -> float:
    """True-positive rate at the ROC operating point with the highest FPR that is still ``<= fpr``.

    Uses ``sklearn.metrics.roc_curve`` (all thresholds kept). Along the ROC curve thresholds
    decrease while FPR and TPR increase, so this is the lowest threshold whose FPR stays within the
    budget, i.e. the best TPR achievable at that false-positive budget (the usual "TPR@FPR=x%").

    Args:
        labels: shape ``(n,)`` in {0, 1}; both classes must be present.
        scores: shape ``(n,)`` in [0, 1].
        fpr: false-positive budget in [0, 1], e.g. 0.01 for TPR@1%FPR.

    Raises:
        DataError: a class is absent (the ROC curve is undefined).
        ConfigError: ``fpr`` outside [0, 1].
    """
    check_rate("fpr", fpr)
    y, s = validate_inputs(labels, scores)
    if not both_classes(y):
        raise DataError("tpr_at_fpr needs both real and generated images")
    fprs, tprs, _ = roc_curve(y, s, drop_intermediate=False)
    # Small tolerance: fpr=0.05 with 20 reals gives a curve point at 1/20 that float division
    # may put a hair above 0.05.
    within = fprs <= fpr + 1e-12
    return float(tprs[within].max())


def threshold_at_fpr(real_scores: Any, fpr: float) -> float:
    """Smallest threshold that flags at most ``fpr`` of the given real images.

    Calibrates a detector on held-back real photos: with ``t = threshold_at_fpr(real, 0.05)``,
    at most ``floor(0.05 * n)`` of ``real`` have ``score >= t``. With ``k = floor(fpr * n)`` allowed
    false positives, ``t`` is the next float above the ``(k+1)``-th largest real score (ties are
    kept together, so fewer than ``k`` may be flagged). ``fpr = 1`` gives ``min(real_scores)``.

    Args:
        real_scores: shape ``(n,)``, scores of real images in [0, 1].
        fpr: allowed fraction of flagged real images, in [0, 1].

    Raises:
        DataError: no real scores, or scores not finite in [0, 1].
        ConfigError: ``fpr`` outside [0, 1].
    """
    check_rate("fpr", fpr)
    s = np.asarray(real_scores, dtype=np.float64).reshape(-1)
    if s.size == 0:
        raise DataError("threshold_at_fpr needs at least one real image score")
    validate_inputs(np.zeros(s.size, dtype=np.int64), s)
    n = s.size
    # Tolerance so that e.g. 0.07 * 100 = 7.000000000000001 still allows 7, not 6.
    k = math.floor(fpr * n + 1e-9)
    if k >= n:
        return float(s.min())
    desc = np.sort(s)[::-1]
    return float(np.nextafter(desc[k], np.inf))


def best_threshold(labels: Any, scores: Any) -> tuple[float, float]:
    """Oracle threshold: the one maximising accuracy on these very labels, and that accuracy.

    This peeks at the test labels, so it is an upper bound on what any fixed threshold could do,
    not a result. Candidates are every distinct score (flag ``score >= t``) plus one just above the
    maximum (flag nothing). Ties go to the largest threshold.

    Args:
        labels: shape ``(n,)`` in {0, 1}.
        scores: shape ``(n,)`` in [0, 1].

    Returns:
        ``(threshold, accuracy)``; the accuracy is recomputed with ``sklearn.metrics.accuracy_score``.
    """
    y, s = validate_inputs(labels, scores)
    pos = np.sort(s[y == 1])
    neg = np.sort(s[y == 0])
    cands = np.append(np.unique(s), np.nextafter(s.max(), np.inf))
    tp = pos.size - np.searchsorted(pos, cands, side="left")
    tn = np.searchsorted(neg, cands, side="left")
    correct = tp + tn
    # argmax returns the first maximum; search from the top so ties favour the larger threshold.
    best = cands.size - 1 - int(np.argmax(correct[::-1]))
    t = float(cands[best])
    return t, float(accuracy_score(y, (s >= t).astype(np.int64)))
