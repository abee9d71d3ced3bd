"""Detection metrics: arrays in, plain dataclasses out, no I/O.

Conventions used throughout:

- ``labels``: shape ``(n,)``, values in ``{0, 1}``; 1 = generated (fake), 0 = real.
- ``scores``: shape ``(n,)``, finite floats in ``[0, 1]``; the probability that an image is generated.
- An image is *flagged* as generated when ``score >= threshold`` (the same rule everywhere:
  accuracy, calibrated threshold, oracle threshold, ECE's predicted class).
- Accuracies are fractions in ``[0, 1]`` (the report renders them as percentages).
- A figure that needs a class that is absent (e.g. AP on a fake-only folder) is ``None``, never NaN
  and never an exception, so a :class:`Metrics` always serialises to strict JSON.

The ranking metrics (AP, AUC, ROC) and accuracy come from scikit-learn; only the confidence
intervals, the threshold search and ECE (which scikit-learn does not provide) are computed here.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields
from statistics import NormalDist
from typing import Any

import numpy as np
import sklearn
from sklearn.metrics import accuracy_score, average_precision_score, roc_auc_score, roc_curve

from mpft.config import DEFAULT_THRESHOLD
from mpft.errors import ConfigError, DataError

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
REAL_POOLS = ("auto", "per-generator", "shared")
RESERVED_ROWS = ("mean", "overall")

Interval = tuple[float, float]


# --------------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------------


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


def _check_confidence(confidence: float) -> None:
    if not 0.0 < confidence < 1.0:
        raise ConfigError(f"confidence must be in (0, 1), got {confidence}")


def _check_rate(name: str, value: float) -> None:
    if not (math.isfinite(value) and 0.0 <= value <= 1.0):
        raise ConfigError(f"{name} must be in [0, 1], got {value}")


def _both_classes(labels: np.ndarray) -> bool:
    return bool((labels == 1).any() and (labels == 0).any())


# --------------------------------------------------------------------------------------------------
# Intervals
# --------------------------------------------------------------------------------------------------


def wilson_interval(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion ``k / n``.

    Preferred over the normal approximation because it stays inside [0, 1] and is sensible at
    ``k = 0`` or ``k = n`` (a detector that gets every fake right still gets an interval).

    Returns:
        ``(low, high)``; ``(nan, nan)`` when ``n == 0``.

    Raises:
        ConfigError: ``k`` outside ``[0, n]``, negative ``n``, or ``confidence`` outside (0, 1).
    """
    _check_confidence(confidence)
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
    _check_confidence(confidence)
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
    both = _both_classes(y)
    # Inputs are validated above; skipping sklearn's per-call re-validation saves ~10% of the
    # n_boot calls, which dominate compute_metrics' run time.
    with sklearn.config_context(assume_finite=True, skip_parameter_validation=True):
        for idx in resamples:
            # A non-stratified resample can draw a single class from a two-class set; AP/AUC are
            # undefined there (sklearn returns a warning and a misleading number), so drop it.
            if both and not _both_classes(y[idx]):
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


# --------------------------------------------------------------------------------------------------
# Thresholds and operating points
# --------------------------------------------------------------------------------------------------


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
    _check_rate("fpr", fpr)
    y, s = validate_inputs(labels, scores)
    if not _both_classes(y):
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
    _check_rate("fpr", fpr)
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
    _check_confidence(confidence)
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
