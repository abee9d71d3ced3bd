"""benchmarks/field_folds.py: folds hold out whole photo sources and generator families, the
leave-one-source-out threshold, resumable runs and the report."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.kit import load_script


def test_balanced_threshold_averages_the_groups_false_positive_rates():
    ff = load_script("field_folds")
    big = np.linspace(0, 0.5, 100)  # 100 photos, all below 0.5
    small = np.array([0.1, 0.2, 0.9, 0.95])  # 4 photos, two of them high
    t = ff.balanced_threshold({"big": big, "small": small}, 0.05)
    rates = [(big >= t).mean(), (small >= t).mean()]
    assert np.mean(rates) <= 0.05 + 1e-12
    # the smallest such threshold: one step lower breaks the target
    lower = np.max(np.concatenate([big, small])[np.concatenate([big, small]) < t])
    assert np.mean([(big >= lower).mean(), (small >= lower).mean()]) > 0.05
    # each group counts once, whatever its size: pooling would put the threshold lower
    pooled = np.sort(np.concatenate([big, small]))[::-1][int(0.05 * 104)]
    assert t > pooled


def test_every_group_is_held_out_once_per_seed_and_never_trains():
    ff = load_script("field_folds")
    items = ff.load_items(4, quick=True)
    for seed in (0, 1):
        reals, gens = set(), set()
        for k in range(len(ff.REAL_ORDER)):
            fd = ff.make_fold(items, k, seed)
            reals.add(fd.real)
            gens.add(fd.gen)
            assert len(fd.test_real) and len(fd.test_gen)
            trained = np.concatenate([fd.train_real, fd.calib, fd.insource_test, fd.train_gen])
            assert not {items[i].group for i in trained} & {fd.real, fd.gen}
            assert {items[i].group for i in fd.test_real} == {fd.real}
            assert {items[i].group for i in fd.test_gen} == {fd.gen}
            # LOSO inner models: each training real group's photos are all in that group
            for g, idx in fd.by_group.items():
                assert {items[i].group for i in idx} == {g} and g != fd.real
        assert reals == set(ff.REAL_GROUPS) and gens == set(ff.GEN_GROUPS)


@pytest.mark.slow
def test_field_folds_quick_runs_resumes_and_reports(tmp_path, data_root):
    ff = load_script("field_folds")
    out = tmp_path / "field"
    args = ["--quick", "--out", str(out), "--methods", "linear", "blocks2-3-nsp16", "last-k-tam25",
            "--folds", "0", "3"]
    assert ff.main(args) == 0
    rows = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
    assert {(r["method"], r["fold"]) for r in rows} == {(m, f) for m in args[4:7] for f in (0, 3)}
    for r in rows:
        v = r["views"]["grid2+whole"]
        assert 0 <= v["auc"] <= 1 and v["auc_ci"][0] <= v["auc"] <= v["auc_ci"][1]
        assert set(v["at"]) == ({"in-source"} if r["method"] == "last-k-tam25" else {"in-source", "loso"})
        for at in v["at"].values():
            assert at["fpr"]["n"] == r["n_test_real"] and at["recall"]["n"] == r["n_test_gen"]
            assert sum(x["k"] for x in at["fpr_by_source"].values()) == at["fpr"]["k"]
        assert len(v["scores_real"]) == r["n_test_real"]
    assert ff.main(args) == 0  # a rerun finds everything done
    assert len((out / "results.jsonl").read_text().splitlines()) == len(rows)
    text = load_script("field_report").report(out / "results.jsonl")
    assert "blocks2-3-nsp16" in text and "LOSO" in text


def test_shipped_baseline_marks_what_the_detector_trained_on(tmp_path):
    ff = load_script("field_folds")
    manifest = tmp_path / "train.csv"
    manifest.write_text("path,label,generator,source\na.png,ai,flux,flux\nb.png,nature,imagenet,imagenet\n"
                        "c.png,nature,old_scans_msft,scans+heic\n")
    real, gen = ff._seen({"data": [str(manifest)]})
    assert real == {"imagenet", "old_scans_msft"} and gen == {"flux"}
    # a detector without a manifest: the one shipped before the field benchmark
    real, gen = ff._seen({"data": ["../shared/data/native.csv", "../shared/data/comfyui_t2i"]})
    assert real == {"camera", "imagenet"} and "comfyui" in gen and "nano-banana-pro" not in gen
