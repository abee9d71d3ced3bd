"""Detection metrics of a labelled score set and of its per-generator rows: arrays in, dataclasses out.

Conventions used throughout :mod:`mpft.evaluation`:

- ``labels``: shape ``(n,)``, values in ``{0, 1}``; 1 = generated (fake), 0 = real.
- ``scores``: shape ``(n,)``, finite floats in ``[0, 1]``; the probability that an image is generated.
- An image is *flagged* as generated when ``score >= threshold`` (the same rule everywhere:
  accuracy, calibrated threshold, oracle threshold, ECE's predicted class).
- Accuracies are fractions in ``[0, 1]`` (the report renders them as percentages).
- A figure that needs a class that is absent (e.g. AP on a fake-only folder) is ``None``, never NaN
  and never an exception, so a :class:`Metrics` always serialises to strict JSON.

The ranking metrics (AP, AUC, ROC) and accuracy come from scikit-learn; ECE is computed here, the
intervals in :mod:`~mpft.evaluation.intervals`, the operating points in
:mod:`~mpft.evaluation.thresholds` and the generator rows in :mod:`~mpft.evaluation.groups`. Their
public functions are re-exported here, so ``from mpft.evaluation.metrics import wilson_interval``
(training validation, benchmarks) keeps working.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np
from sklearn.metrics import accuracy_score, average_precision_score, roc_auc_score

from mpft.config import DEFAULT_THRESHOLD
from mpft.errors import ConfigError
from mpft.evaluation.checks import check_confidence, validate_inputs
from mpft.evaluation.groups import REAL_POOLS, RESERVED_ROWS, generator_groups, resolve_real_pool
from mpft.evaluation.intervals import Interval, bootstrap_interval, wilson_interval
from mpft.evaluation.thresholds import best_threshold, threshold_at_fpr, tpr_at_fpr

log = logging.getLogger(__name__)

__all__ = [
    "MEAN_METHOD",
    "MEAN_FIELDS",
    "REAL_POOLS",
    "RESERVED_ROWS",
    "Metrics",
    "best_threshold",
    "bootstrap_interval",
    "compute_metrics",
    "expected_calibration_error",
    "generator_groups",
    "group_metrics",
    "resolve_real_pool",
    "threshold_at_fpr",
    "tpr_at_fpr",
    "validate_inputs",
    "wilson_interval",
]

MEAN_METHOD = "unweighted mean over generators"
#: Figures the "mean" row of :func:`group_metrics` averages over the per-generator rows.
MEAN_FIELDS: tuple[str, ...] = (
    "acc",
    "real_acc",
    "fake_acc",
    "balanced_acc",
    "ap",
    "auc",
    "tpr_at_fpr_1",
    "tpr_at_fpr_5",
    "acc_cal",
    "real_acc_cal",
    "fake_acc_cal",
)


def expected_calibration_error(labels: Any, probs: Any, n_bins: int = 15) -> float:
    """Expected calibration error, binary form, equal-width bins.

    For each image the predicted class is ``prob >= 0.5`` (generated), its confidence is
    ``max(p, 1 - p)`` and it is correct when the predicted class equals the label. Confidences are
    put in ``n_bins`` equal-width bins over [0, 1] (right-closed, as in Guo et al. 2017; only the
    upper half is ever used) and ``ECE = sum_b (|B_b| / n) * |acc(B_b) - conf(B_b)|``.

    Args:
        labels: shape ``(n,)`` in {0, 1}.
        probs: shape ``(n,)`` in [0, 1].
        n_bins: number of bins, >= 1.
    """
    if n_bins < 1:
        raise ConfigError(f"n_bins must be >= 1, got {n_bins}")
    y, p = validate_inputs(labels, probs)
    pred = (p >= 0.5).astype(np.int64)
    conf = np.maximum(p, 1.0 - p)
    correct = (pred == y).astype(np.float64)
    # Right-closed bins (lo, hi]; conf is >= 0.5 > 0, so index ceil(conf * n_bins) - 1 is in range.
    bins = np.clip(np.ceil(conf * n_bins).astype(np.int64) - 1, 0, n_bins - 1)
    counts = np.bincount(bins, minlength=n_bins).astype(np.float64)
    acc_sum = np.bincount(bins, weights=correct, minlength=n_bins)
    conf_sum = np.bincount(bins, weights=conf, minlength=n_bins)
    used = counts > 0
    gap = np.abs(acc_sum[used] - conf_sum[used]) / counts[used]
    return float(np.sum(counts[used] / y.shape[0] * gap))


# --------------------------------------------------------------------------------------------------
# Metrics of one score set
# --------------------------------------------------------------------------------------------------


@dataclass
class Metrics:
    """Metrics of one set of images (one generator, the pooled set, or the mean row).

    Accuracies are fractions in [0, 1]; ``*_ci`` are ``(low, high)`` intervals (Wilson for
    accuracies, stratified percentile bootstrap for AP/AUC). A field is ``None`` when it is not
    defined for this set (a class is absent, no calibrated threshold given, oracle not requested,
    or an interval on the mean row).

    ``oracle_*`` fields pick the threshold on the test labels themselves: an upper bound,
    never a result.
    """

    n_real: int
    n_fake: int
    threshold: float
    acc: float | None = None
    acc_ci: Interval | None = None
    real_acc: float | None = None
    real_acc_ci: Interval | None = None
    fake_acc: float | None = None
    fake_acc_ci: Interval | None = None
    #: (real_acc + fake_acc) / 2; the class-balanced accuracy some papers report as "mean acc".
    balanced_acc: float | None = None
    ap: float | None = None
    ap_ci: Interval | None = None
    auc: float | None = None
    auc_ci: Interval | None = None
    tpr_at_fpr_1: float | None = None
    tpr_at_fpr_5: float | None = None
    ece: float | None = None
    threshold_cal: float | None = None
    acc_cal: float | None = None
    acc_cal_ci: Interval | None = None
    real_acc_cal: float | None = None
    real_acc_cal_ci: Interval | None = None
    fake_acc_cal: float | None = None
    fake_acc_cal_ci: Interval | None = None
    oracle_threshold: float | None = None
    oracle_acc: float | None = None
    #: Only on rows from :func:`group_metrics`: how real images were assigned to generator rows.
    real_pool: str | None = None
    #: Only on the "mean" row: how it was averaged (:data:`MEAN_METHOD`) and over how many rows.
    mean_method: str | None = None
    n_generators: int | None = None

    @property
    def n(self) -> int:
        return self.n_real + self.n_fake

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-safe dict: intervals become 2-lists, any non-finite float becomes ``None``."""
        return {k: _json_safe(v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Metrics:
        """Inverse of :meth:`to_dict` (unknown keys are ignored so older/newer files still load)."""
        names = {f.name for f in fields(cls)}
        kw = {k: v for k, v in d.items() if k in names}
        for k, v in kw.items():
            if k.endswith("_ci") and v is not None:
                kw[k] = (float(v[0]), float(v[1]))
        return cls(**kw)


def _json_safe(v: Any) -> Any:
    if isinstance(v, float | np.floating):
        return float(v) if math.isfinite(v) else None
    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, tuple | list):
        items = [_json_safe(x) for x in v]
        return None if any(x is None for x in items) else items
    return v


def _acc_with_ci(correct: np.ndarray, confidence: float) -> tuple[float | None, Interval | None]:
    """Accuracy and Wilson interval of a boolean array, shape ``(m,)``; ``(None, None)`` if empty."""
    m = int(correct.size)
    if m == 0:
        return None, None
    k = int(correct.sum())
    return k / m, wilson_interval(k, m, confidence)


def compute_metrics(
    labels: Any,
    scores: Any,
    *,
    threshold: float = DEFAULT_THRESHOLD,
    calibrated_threshold: float | None = None,
    oracle: bool = False,
    n_boot: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> Metrics:
    """All metrics of one labelled score set.

    Args:
        labels: shape ``(n,)`` in {0, 1} (1 = generated).
        scores: shape ``(n,)`` in [0, 1].
        threshold: decision threshold for ``acc``/``real_acc``/``fake_acc`` (flag ``score >= t``).
        calibrated_threshold: if given (e.g. from :func:`threshold_at_fpr` on held-back reals),
            also report ``acc_cal``, ``real_acc_cal``, ``fake_acc_cal`` at it.
        oracle: also report ``oracle_threshold``/``oracle_acc`` (see :func:`best_threshold`).
        n_boot: bootstrap resamples for the AP/AUC intervals; 0 skips them (``None``).
        seed: bootstrap seed.
        confidence: coverage of every interval.

    Returns:
        A :class:`Metrics`; class-dependent figures are ``None`` when a class is absent.
    """
    check_confidence(confidence)
    if n_boot < 0:
        raise ConfigError(f"n_boot must be >= 0, got {n_boot}")
    for name, t in (("threshold", threshold), ("calibrated_threshold", calibrated_threshold)):
        if t is not None and not math.isfinite(t):
            raise ConfigError(f"{name} must be a finite number, got {t}")
    y, s = validate_inputs(labels, scores)
    is_fake = y == 1
    n_fake = int(is_fake.sum())
    n_real = int(y.size - n_fake)

    flagged = s >= threshold
    m = Metrics(n_real=n_real, n_fake=n_fake, threshold=float(threshold))
    m.acc = float(accuracy_score(y, flagged.astype(np.int64)))
    m.acc_ci = wilson_interval(int((flagged == is_fake).sum()), y.size, confidence)
    m.real_acc, m.real_acc_ci = _acc_with_ci(~flagged[~is_fake], confidence)
    m.fake_acc, m.fake_acc_ci = _acc_with_ci(flagged[is_fake], confidence)
    m.ece = expected_calibration_error(y, s)

    if n_real and n_fake:
        m.balanced_acc = (m.real_acc + m.fake_acc) / 2.0
        m.ap = float(average_precision_score(y, s))
        m.auc = float(roc_auc_score(y, s))
        if n_boot > 0:
            boot = {"n_boot": n_boot, "seed": seed, "confidence": confidence, "stratified": True}
            m.ap_ci = bootstrap_interval(average_precision_score, y, s, **boot)
            m.auc_ci = bootstrap_interval(roc_auc_score, y, s, **boot)
        m.tpr_at_fpr_1 = tpr_at_fpr(y, s, 0.01)
        m.tpr_at_fpr_5 = tpr_at_fpr(y, s, 0.05)

    if calibrated_threshold is not None:
        flagged_cal = s >= calibrated_threshold
        m.threshold_cal = float(calibrated_threshold)
        m.acc_cal, m.acc_cal_ci = _acc_with_ci(flagged_cal == is_fake, confidence)
        m.real_acc_cal, m.real_acc_cal_ci = _acc_with_ci(~flagged_cal[~is_fake], confidence)
        m.fake_acc_cal, m.fake_acc_cal_ci = _acc_with_ci(flagged_cal[is_fake], confidence)

    if oracle:
        m.oracle_threshold, m.oracle_acc = best_threshold(y, s)
    return m


# --------------------------------------------------------------------------------------------------
# Per-generator rows
# --------------------------------------------------------------------------------------------------


def _mean_row(rows: list[Metrics], overall: Metrics) -> Metrics:
    mean = Metrics(
        n_real=overall.n_real,
        n_fake=overall.n_fake,
        threshold=overall.threshold,
        threshold_cal=overall.threshold_cal,
        mean_method=MEAN_METHOD,
        n_generators=len(rows),
        real_pool=overall.real_pool,
    )
    for name in MEAN_FIELDS:
        vals = [getattr(r, name) for r in rows if getattr(r, name) is not None]
        # Rows where a figure is undefined (e.g. AP of a fake-only folder) are left out of its mean.
        setattr(mean, name, float(np.mean(vals)) if vals else None)
    return mean


def group_metrics(
    labels: Any,
    scores: Any,
    generators: Sequence[str] | np.ndarray,
    *,
    real_pool: str = "auto",
    **kw: Any,
) -> dict[str, Metrics]:
    """Per-generator metrics plus a "mean" and an "overall" row.

    Args:
        labels: shape ``(n,)`` in {0, 1}.
        scores: shape ``(n,)`` in [0, 1].
        generators: shape ``(n,)``, generator/folder name of each image.
        real_pool: "per-generator" (each row = that generator's images, real and fake),
            "shared" (each row = that generator's fakes + all real images; real images may carry any
            name, e.g. "real"), or "auto" (see :func:`resolve_real_pool`).
        **kw: passed to :func:`compute_metrics` (threshold, calibrated_threshold, oracle, n_boot, seed).

    Returns:
        ``{generator: Metrics, ..., "mean": Metrics, "overall": Metrics}``. "mean" is the
        **unweighted mean over generators** of the per-generator figures in :data:`MEAN_FIELDS`
        (as GenImage/UniversalFakeDetect report a mean over test sets, so a large folder does not
        dominate); a row where a figure is undefined is left out of that figure's mean. The mean
        row has no intervals, no ECE and no oracle figures, and carries
        ``mean_method="unweighted mean over generators"``. "overall" pools all images once.
    """
    y, s = validate_inputs(labels, scores)
    mode, groups = generator_groups(y, generators, real_pool)
    log.debug("group_metrics: real_pool=%s (asked %s), %d generator rows", mode, real_pool, len(groups))
    rows: dict[str, Metrics] = {}
    for name, idx in groups.items():
        rows[name] = compute_metrics(y[idx], s[idx], **kw)
        rows[name].real_pool = mode
    overall = compute_metrics(y, s, **kw)
    overall.real_pool = mode
    rows["mean"] = _mean_row([rows[n] for n in groups], overall)
    rows["overall"] = overall
    return rows
