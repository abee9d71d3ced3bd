"""Tests of mpft.evaluation.metrics against scikit-learn and hand-computed values."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import accuracy_score, average_precision_score, roc_auc_score

from mpft.errors import ConfigError, DataError
from mpft.evaluation.metrics import (
    MEAN_METHOD,
    Metrics,
    best_threshold,
    bootstrap_interval,
    compute_metrics,
    expected_calibration_error,
    group_metrics,
    resolve_real_pool,
    threshold_at_fpr,
    tpr_at_fpr,
    wilson_interval,
)

# Ties on purpose: 0.5 and 0.7 occur in both classes.
Y_TIES = np.array([0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 0])
S_TIES = np.array([0.1, 0.5, 0.5, 0.7, 0.2, 0.5, 0.7, 0.9, 0.7, 0.3, 1.0, 0.0])

score_sets = st.integers(2, 60).flatmap(
    lambda n: st.tuples(
        st.lists(st.integers(0, 1), min_size=n, max_size=n),
        # Few distinct values so ties are common.
        st.lists(st.sampled_from([0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0]), min_size=n, max_size=n),
    )
)


# ------------------------------------------------------------------------------------------ wilson


def test_wilson_known_value():
    low, high = wilson_interval(8, 10)
    assert low == pytest.approx(0.4902, abs=1e-4)
    assert high == pytest.approx(0.9433, abs=1e-4)


def test_wilson_edges():
    # k = 0: low is 0, high = z^2/n / (1 + z^2/n) with z = 1.959964.
    z2 = 1.959963984540054**2
    assert wilson_interval(0, 10) == pytest.approx((0.0, (z2 / 10) / (1 + z2 / 10)))
    low, high = wilson_interval(10, 10)
    assert high == 1.0 and low == pytest.approx(1 - (z2 / 10) / (1 + z2 / 10))
    assert all(math.isnan(v) for v in wilson_interval(0, 0))
    # Wider at higher confidence.
    assert wilson_interval(8, 10, 0.99)[0] < wilson_interval(8, 10, 0.95)[0]


@pytest.mark.parametrize("k,n,conf", [(11, 10, 0.95), (-1, 10, 0.95), (1, 10, 1.0), (1, 10, 0.0)])
def test_wilson_rejects_bad_arguments(k, n, conf):
    with pytest.raises(ConfigError):
        wilson_interval(k, n, conf)


# --------------------------------------------------------------------------------------- bootstrap


def test_bootstrap_is_deterministic_given_seed():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 80)
    s = np.clip(0.3 * y + 0.7 * rng.random(80), 0, 1)
    a = bootstrap_interval(roc_auc_score, y, s, n_boot=200, seed=3)
    b = bootstrap_interval(roc_auc_score, y, s, n_boot=200, seed=3)
    c = bootstrap_interval(roc_auc_score, y, s, n_boot=200, seed=4)
    assert a == b
    assert a != c
    point = roc_auc_score(y, s)
    assert a[0] < point < a[1]


def test_bootstrap_stratified_keeps_both_classes():
    # One fake among 40 reals: a plain bootstrap would often draw no fake at all.
    y = np.array([1] + [0] * 40)
    s = np.linspace(0, 1, 41)
    seen = []

    def spy(yy, ss):
        seen.append(int(yy.sum()))
        return roc_auc_score(yy, ss)

    low, high = bootstrap_interval(spy, y, s, n_boot=50, seed=0)
    assert seen == [1] * 50  # class counts are preserved in every resample
    assert math.isfinite(low) and math.isfinite(high)


def test_bootstrap_unstratified_drops_single_class_resamples():
    y = np.array([1] + [0] * 9)
    s = np.linspace(0, 1, 10)
    seen = []

    def spy(yy, ss):
        seen.append(int(yy.sum()))
        return roc_auc_score(yy, ss)

    bootstrap_interval(spy, y, s, n_boot=100, seed=0, stratified=False)
    assert 0 < len(seen) < 100
    assert all(k > 0 for k in seen)


def test_bootstrap_rejects_bad_n_boot():
    with pytest.raises(ConfigError):
        bootstrap_interval(roc_auc_score, Y_TIES, S_TIES, n_boot=0)


# ------------------------------------------------------------------------------------ tpr / thresh


def test_tpr_at_fpr_constructed():
    reals = np.arange(100) / 100  # 0.00 .. 0.99
    fakes = np.array([0.995] * 50 + [0.5] * 50)
    y = np.r_[np.zeros(100), np.ones(100)]
    s = np.r_[reals, fakes]
    # FPR 1%: only the real at 0.99 may be flagged -> only the 50 fakes at 0.995 are caught.
    assert tpr_at_fpr(y, s, 0.01) == 0.5
    assert tpr_at_fpr(y, s, 0.05) == 0.5
    # Threshold 0.5 flags 50 reals (0.50 .. 0.99): FPR 0.50 is within budget and catches every fake;
    # one real fewer (threshold above 0.5) misses the 50 fakes at 0.5.
    assert tpr_at_fpr(y, s, 0.50) == 1.0
    assert tpr_at_fpr(y, s, 0.49) == 0.5
    assert tpr_at_fpr(y, s, 0.0) == 0.5


@settings(max_examples=60, deadline=None)
@given(score_sets, st.sampled_from([0.0, 0.01, 0.05, 0.2, 0.5, 1.0]))
def test_tpr_at_fpr_matches_brute_force(data, fpr):
    y, s = np.array(data[0]), np.array(data[1])
    if y.min() == y.max():
        with pytest.raises(DataError):
            tpr_at_fpr(y, s, fpr)
        return
    best = 0.0
    for t in np.r_[np.unique(s), 2.0]:
        flagged = s >= t
        if flagged[y == 0].mean() <= fpr:
            best = max(best, flagged[y == 1].mean())
    assert tpr_at_fpr(y, s, fpr) == pytest.approx(best)


def test_threshold_at_fpr_constructed():
    real = np.arange(1, 11) / 10  # 0.1 .. 1.0
    t = threshold_at_fpr(real, 0.2)
    assert 0.8 < t <= 0.9  # flags 0.9 and 1.0 only
    assert (real >= t).sum() == 2
    # All tied: any flagged real would be all ten, so nothing may be flagged.
    tied = np.full(10, 0.5)
    assert (tied >= threshold_at_fpr(tied, 0.05)).sum() == 0
    assert threshold_at_fpr(real, 1.0) == 0.1
    assert (real >= threshold_at_fpr(real, 0.0)).sum() == 0


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from([0.0, 0.2, 0.3, 0.5, 0.9, 1.0]), min_size=1, max_size=50), st.floats(0, 1))
def test_threshold_at_fpr_is_valid_and_smallest(real, fpr):
    real = np.array(real)
    t = threshold_at_fpr(real, fpr)
    assert (real >= t).mean() <= fpr + 1e-9
    # Any lower candidate threshold (a real score below t) would flag too many.
    lower = real[real < t]
    if lower.size:
        assert (real >= lower.max()).mean() > fpr


def test_threshold_at_fpr_errors():
    with pytest.raises(DataError):
        threshold_at_fpr([], 0.05)
    with pytest.raises(ConfigError):
        threshold_at_fpr([0.1, 0.2], 1.5)
    with pytest.raises(DataError):
        threshold_at_fpr([0.1, float("nan")], 0.05)


@settings(max_examples=60, deadline=None)
@given(score_sets)
def test_best_threshold_is_the_accuracy_maximum(data):
    y, s = np.array(data[0]), np.array(data[1])
    t, acc = best_threshold(y, s)
    assert acc == accuracy_score(y, (s >= t).astype(int))
    # No threshold at all (between or outside the scores) does better.
    cands = np.r_[-1.0, np.unique(s), (np.unique(s)[:-1] + np.unique(s)[1:]) / 2, 2.0]
    assert acc == max(accuracy_score(y, (s >= c).astype(int)) for c in cands)


# --------------------------------------------------------------------------------------------- ECE


def test_ece_perfectly_calibrated_is_zero():
    # p=0.8 with 8/10 fakes; p=0.3 with 3/10 fakes (predicted real, right 7/10 at confidence 0.7).
    y = np.array([1] * 8 + [0] * 2 + [1] * 3 + [0] * 7)
    p = np.array([0.8] * 10 + [0.3] * 10)
    assert expected_calibration_error(y, p) == pytest.approx(0.0)


def test_ece_hand_computed():
    # Bin 0.9: conf 0.9, acc 1 -> gap 0.1; bin 0.6: conf 0.6, acc 0 -> gap 0.6; weights 1/2 each.
    y = np.array([1] * 10 + [0] * 10)
    p = np.array([0.9] * 10 + [0.6] * 10)
    assert expected_calibration_error(y, p) == pytest.approx(0.35)
    # One bin over everything: |mean acc - mean conf| = |0.5 - 0.75|.
    assert expected_calibration_error(y, p, n_bins=1) == pytest.approx(0.25)


# --------------------------------------------------------------------------------- compute_metrics


def test_compute_metrics_matches_sklearn_with_ties():
    m = compute_metrics(Y_TIES, S_TIES, n_boot=100)
    assert m.n_real == 6 and m.n_fake == 6
    assert m.ap == pytest.approx(average_precision_score(Y_TIES, S_TIES))
    assert m.auc == pytest.approx(roc_auc_score(Y_TIES, S_TIES))
    pred = (S_TIES >= 0.5).astype(int)
    assert m.acc == pytest.approx(accuracy_score(Y_TIES, pred))
    # Reals at 0.1, 0.5, 0.5, 0.7, 0.2, 0.0: three (0.5, 0.5, 0.7) flagged.
    assert m.real_acc == pytest.approx(3 / 6)
    # Fakes at 0.5, 0.7, 0.9, 0.7, 0.3, 1.0: five flagged.
    assert m.fake_acc == pytest.approx(5 / 6)
    assert m.balanced_acc == pytest.approx(accuracy_score(Y_TIES, pred))  # balanced set
    assert m.acc_ci == pytest.approx(wilson_interval(8, 12))
    assert m.real_acc_ci == pytest.approx(wilson_interval(3, 6))
    assert m.ap_ci[0] <= m.ap_ci[1] and m.auc_ci[0] <= m.auc_ci[1]
    assert m.oracle_threshold is None and m.oracle_acc is None and m.threshold_cal is None


def test_compute_metrics_perfect_separation():
    y = np.array([0, 0, 0, 1, 1, 1])
    s = np.array([0.0, 0.1, 0.2, 0.8, 0.9, 1.0])
    m = compute_metrics(y, s, n_boot=50, oracle=True)
    assert m.ap == 1.0 and m.auc == 1.0 and m.acc == 1.0
    assert m.ap_ci == (1.0, 1.0) and m.auc_ci == (1.0, 1.0)
    assert m.tpr_at_fpr_1 == 1.0 and m.tpr_at_fpr_5 == 1.0
    assert m.oracle_acc == 1.0 and 0.2 < m.oracle_threshold <= 0.8


@pytest.mark.parametrize("label", [0, 1])
def test_compute_metrics_one_class_absent(label):
    y = np.full(5, label)
    s = np.array([0.1, 0.4, 0.5, 0.6, 0.9])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no sklearn "undefined metric" warnings either
        m = compute_metrics(y, s, calibrated_threshold=0.55, oracle=True)
    assert m.ap is None and m.auc is None and m.ap_ci is None and m.auc_ci is None
    assert m.tpr_at_fpr_1 is None and m.balanced_acc is None
    flagged = int((s >= 0.5).sum())
    if label == 1:
        assert m.real_acc is None and m.fake_acc == pytest.approx(flagged / 5)
        assert m.fake_acc_cal == pytest.approx(2 / 5) and m.real_acc_cal is None
    else:
        assert m.fake_acc is None and m.real_acc == pytest.approx((5 - flagged) / 5)
    assert m.acc == pytest.approx(m.fake_acc if label else m.real_acc)
    # Strict JSON: no NaN anywhere.
    json.dumps(m.to_dict(), allow_nan=False)


def test_compute_metrics_calibrated_threshold():
    m = compute_metrics(Y_TIES, S_TIES, calibrated_threshold=0.75, n_boot=0)
    assert m.ap_ci is None  # n_boot=0 skips the bootstrap
    assert m.threshold_cal == 0.75
    pred = (S_TIES >= 0.75).astype(int)
    assert m.acc_cal == pytest.approx(accuracy_score(Y_TIES, pred))
    assert m.real_acc_cal == 1.0  # no real scores >= 0.75
    assert m.fake_acc_cal == pytest.approx(2 / 6)


def test_metrics_dict_round_trip():
    m = compute_metrics(Y_TIES, S_TIES, n_boot=20, oracle=True)
    d = json.loads(json.dumps(m.to_dict(), allow_nan=False))
    assert Metrics.from_dict(d) == m


@pytest.mark.parametrize(
    "labels,scores",
    [
        ([0, 1, 1], [0.1, 0.2]),  # lengths differ
        ([0, 2], [0.1, 0.2]),  # label not in {0, 1}
        ([0, 1], [0.1, float("nan")]),
        ([0, 1], [0.1, 1.5]),  # logits, not probabilities
        ([0, 1], [-0.1, 0.5]),
        ([], []),
        ([[0, 1]], [[0.1, 0.2]]),
    ],
)
def test_compute_metrics_rejects_bad_data(labels, scores):
    with pytest.raises(DataError):
        compute_metrics(labels, scores)


def test_compute_metrics_rejects_bad_options():
    with pytest.raises(ConfigError):
        compute_metrics(Y_TIES, S_TIES, n_boot=-1)
    with pytest.raises(ConfigError):
        compute_metrics(Y_TIES, S_TIES, calibrated_threshold=float("nan"))
    with pytest.raises(ConfigError):
        tpr_at_fpr(Y_TIES, S_TIES, 2.0)


# ---------------------------------------------------------------------------------- group_metrics


def _toy(seed: int = 0):
    """Per-generator layout: every folder has reals and fakes, folders of different sizes."""
    rng = np.random.default_rng(seed)
    sizes = {"adm": 30, "biggan": 80, "sd14": 50}
    g = np.concatenate([[name] * n for name, n in sizes.items()])
    y = rng.integers(0, 2, g.size)
    y[[0, 1, 30, 31, 110, 111]] = [0, 1, 0, 1, 0, 1]  # both classes everywhere
    shift = {"adm": 0.1, "biggan": 0.4, "sd14": 0.25}
    s = np.clip(rng.random(g.size) * 0.6 + y * np.array([shift[x] for x in g]), 0, 1)
    return y, s, g


def test_group_metrics_per_generator():
    y, s, g = _toy()
    rows = group_metrics(y, s, g, real_pool="per-generator", n_boot=20)
    assert list(rows) == ["adm", "biggan", "sd14", "mean", "overall"]
    for name in ("adm", "biggan", "sd14"):
        sel = g == name
        assert rows[name].ap == pytest.approx(average_precision_score(y[sel], s[sel]))
        assert rows[name].n_real + rows[name].n_fake == sel.sum()
        assert rows[name].real_pool == "per-generator"
    assert rows["overall"].auc == pytest.approx(roc_auc_score(y, s))
    assert rows["overall"].n_real + rows["overall"].n_fake == y.size


def test_mean_row_is_unweighted_mean():
    y, s, g = _toy()
    rows = group_metrics(y, s, g, real_pool="per-generator", n_boot=0, calibrated_threshold=0.5)
    gens = ["adm", "biggan", "sd14"]
    mean = rows["mean"]
    for attr in ("acc", "real_acc", "fake_acc", "ap", "auc", "acc_cal", "tpr_at_fpr_1", "tpr_at_fpr_5"):
        assert getattr(mean, attr) == pytest.approx(np.mean([getattr(rows[n], attr) for n in gens]))
    # Folder sizes differ, so the pooled accuracy is not the mean of the folders.
    assert mean.acc != pytest.approx(rows["overall"].acc)
    assert mean.mean_method == MEAN_METHOD == "unweighted mean over generators"
    assert mean.n_generators == 3
    assert mean.acc_ci is None and mean.ap_ci is None and mean.ece is None
    assert rows["overall"].mean_method is None


def test_group_metrics_shared_real_pool():
    rng = np.random.default_rng(2)
    g = np.array(["real"] * 40 + ["dalle"] * 10 + ["glide"] * 20)
    y = (g != "real").astype(int)
    s = np.clip(rng.random(70) * 0.7 + 0.3 * y, 0, 1)
    assert resolve_real_pool(y, g) == "shared"
    rows = group_metrics(y, s, g, n_boot=0)  # auto -> shared
    assert list(rows) == ["dalle", "glide", "mean", "overall"]  # no row for the real folder
    for name in ("dalle", "glide"):
        sel = (g == name) | (g == "real")
        assert rows[name].n_real == 40 and rows[name].n_fake == (g == name).sum()
        assert rows[name].auc == pytest.approx(roc_auc_score(y[sel], s[sel]))
        assert rows[name].real_pool == "shared"
    # The real pool is the same for every row.
    assert rows["dalle"].real_acc == rows["glide"].real_acc == rows["overall"].real_acc


def test_group_metrics_shared_mode_on_mixed_folders_uses_all_reals():
    y, s, g = _toy()
    rows = group_metrics(y, s, g, real_pool="shared", n_boot=0)
    n_real = int((y == 0).sum())
    assert all(rows[n].n_real == n_real for n in ("adm", "biggan", "sd14"))


def test_auto_real_pool_falls_back_to_per_generator():
    y, s, g = _toy()
    assert resolve_real_pool(y, g) == "per-generator"
    rows = group_metrics(y, s, g, n_boot=0)
    assert rows["adm"].real_pool == "per-generator"
    # Fake-only folders without any real folder: per-generator, each row fake-only, never crashes.
    g2 = np.array(["a"] * 5 + ["b"] * 5)
    rows2 = group_metrics(np.ones(10), np.linspace(0, 1, 10), g2, n_boot=10)
    assert rows2["a"].ap is None and rows2["mean"].ap is None
    assert rows2["mean"].fake_acc == pytest.approx((rows2["a"].fake_acc + rows2["b"].fake_acc) / 2)


def test_group_metrics_errors():
    y, s, g = _toy()
    with pytest.raises(ConfigError):
        group_metrics(y, s, g, real_pool="pooled")
    with pytest.raises(DataError):
        group_metrics(y, s, g[:-1])
    g_bad = g.copy()
    g_bad[:30] = "mean"
    with pytest.raises(DataError, match="mean"):
        group_metrics(y, s, g_bad)
    with pytest.raises(DataError):
        group_metrics(np.zeros(4), np.full(4, 0.2), ["r"] * 4, real_pool="shared")
