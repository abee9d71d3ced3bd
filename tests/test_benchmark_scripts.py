"""The benchmark scripts run in their quick modes, resume, and their reports render; their private fast
paths give the scores of the library's one inference path (``mpft.pipeline.Scorer``)."""

from __future__ import annotations

import csv
import json
import shlex

import numpy as np
import pytest

from tests.kit import load_script


@pytest.mark.slow
def test_paper_claims_quick_runs_and_resumes(tmp_path, data_root):
    claims = load_script("paper_claims")
    out = tmp_path / "claims"
    assert claims.main(["--quick", "--out", str(out)]) == 0
    rows = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
    assert [r["key"] for r in rows] == [r.key for r in claims.grid(quick=True)]
    for r in rows:
        assert 0 <= r["id"]["acc"] <= 1 and 0 <= r["ood"]["recall"] <= 1
        assert r["ood"]["n_fake"] == 62 and r["ood"]["n_real"] == 8
    assert (out / "frozen_features.json").is_file() and (out / "tsne_frozen.png").stat().st_size > 0
    # a rerun finds everything done and measures nothing new
    assert claims.main(["--quick", "--out", str(out)]) == 0
    assert len((out / "results.jsonl").read_text().splitlines()) == len(rows)
    report = load_script("claims_report")
    assert report.main(["--results", str(out), "--out", str(tmp_path / "doc")]) == 0
    tables = (tmp_path / "doc" / "tables.md").read_text()
    assert "linear probe (UnivFD)" in tables and "Claim (a)" in tables


@pytest.mark.parametrize("strategy", ["linear", "last-k"])
def test_paper_claims_cached_prefix_gives_the_scorers_scores(tmp_path, strategy):
    """paper_claims' one private scoring path (frozen prefix states cached once, only the tuned suffix run
    per model) gives the Scorer's probabilities for a checkpoint loaded as the script loads it."""
    import torch

    from mpft.backbones import load_backbone
    from mpft.checkpoint import DetectorConfig, save_checkpoint
    from mpft.data.transforms import PreprocessPolicy
    from mpft.detector import Detector
    from mpft.model import TuneConfig, create_model
    from mpft.pipeline import Scorer
    from mpft.tam import MaskConfig

    claims = load_script("paper_claims")
    enc = load_backbone("random:tiny")
    torch.manual_seed(0)
    trained = create_model(enc, TuneConfig(strategy, layers=2))
    with torch.no_grad():  # as if trained: tuned blocks move away from the shared backbone's, logits spread
        for p in trained.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.2)
        torch.nn.init.normal_(trained.head.weight, std=2.0)
    cfg = DetectorConfig(backbone="random:tiny", backbone_sha256=enc.weights_sha256, tune=trained.tune.to_dict(),
                         mask=MaskConfig().to_dict(), preprocess=PreprocessPolicy(size=32).to_dict())
    det = Detector.load(save_checkpoint(tmp_path / "ckpt", trained, cfg), encoder=enc)

    prefix = enc.num_layers - (0 if strategy == "linear" else 2)
    assert claims.prefix_usable(det.model, prefix)
    pixels = torch.randint(0, 256, (11, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    es = claims.EvalSet("t", pixels, np.zeros(11, int), [f"img{i}" for i in range(11)])
    es.caches[prefix] = claims.cached_prefix(tmp_path / "cache", "random:tiny", es, prefix, enc)
    assert torch.equal(claims.cached_prefix(tmp_path / "cache", "random:tiny", es, prefix, enc), es.caches[prefix])

    fast = claims.score(det.scorer(batch_size=4), es, prefix)
    reference = Scorer(det.model, batch_size=5).score(list(pixels.unsqueeze(1)))
    assert reference.std() > 0.05  # spread probabilities, or agreement would prove little
    assert np.abs(fast - reference).max() < 1e-5
    assert np.array_equal(claims.score(det.scorer(batch_size=5), es, None), reference)


def test_paper_claims_cached_prefix_refuses_models_it_does_not_fit():
    from mpft.backbones import load_backbone
    from mpft.model import TuneConfig, create_model

    claims = load_script("paper_claims")
    enc = load_backbone("random:tiny")
    assert not claims.prefix_usable(create_model(enc, TuneConfig("last-k", layers=2)), enc.num_layers - 1)
    assert not claims.prefix_usable(create_model(enc, TuneConfig("linear", feature_blocks=(2, 4))), 4)


def _record(key, tune, mask, shots=256, seed=0, group="main", ratio=0.5, acc=0.8, recall=0.3):
    return {
        "key": key,
        "run": {"group": group, "tune": tune, "mask": mask, "ratio": ratio, "texture": "gradient", "layers": 4,
                "shots": shots, "seed": seed},
        "id": {"acc": acc, "acc_ci": [acc - 0.05, acc + 0.05], "auc": 0.9, "ap": 0.9, "n": 200},
        "ood": {"recall": recall, "recall_ci": [recall - 0.1, recall + 0.1], "fpr_test": 0.05,
                "fpr_test_ci": [0.02, 0.09], "auc_confounded": 0.7, "threshold": 0.6, "n_real": 200, "n_fake": 62},
        "train_seconds": 100.0, "train_images_per_second": 3.0,
    }


def test_claims_report_tables_and_plots(tmp_path):
    report = load_script("claims_report")
    res = tmp_path / "res"
    res.mkdir()
    recs = [
        _record("a", "linear", "none", acc=0.7),
        _record("b", "last-k", "tam", recall=0.42),
        _record("c", "last-k", "tam", shots=64, group="shots", recall=0.2),
        _record("d", "last-k", "tam", seed=1, group="seeds", acc=0.9),
        _record("e", "last-k", "none", recall=0.1),
        _record("f", "last-k", "tam", ratio=0.25, group="ratio"),
    ]
    (res / "results.jsonl").write_text("\n".join(json.dumps(r) for r in recs) + "\n")
    assert report.main(["--results", str(res), "--out", str(tmp_path / "doc")]) == 0
    tables = (tmp_path / "doc" / "tables.md").read_text()
    assert "| linear probe (UnivFD) | 256 | 0 | 70.0 [65.0, 75.0]" in tables
    assert "42.0 [32.0, 52.0]" in tables
    # two seeds of last-k + TAM at 256 shots: mean of 80 and 90
    assert "| last-k K=4, tam rho=0.5 | 2 | 85.0 ± 7.1 |" in tables
    for png in ("shots.png", "ood_recall.png", "mask_ratio.png"):
        assert (tmp_path / "doc" / png).stat().st_size > 1000
    assert len((tmp_path / "doc" / "results.csv").read_text().splitlines()) == len(recs) + 1


def test_int8_variants_script_runs(tmp_path, tiny_ckpt):
    """benchmarks/int8_variants.py on the tiny detector: every variant row, fp32 exact, errors finite."""
    import numpy as np
    from PIL import Image

    photos = tmp_path / "photos"
    photos.mkdir()
    rng = np.random.default_rng(0)
    for i in range(6):
        Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(photos / f"{i}.jpg")
    mod = load_script("int8_variants")
    out = tmp_path / "v.json"
    assert mod.main(["--model", str(tiny_ckpt), "--images", str(photos), "--n", "4", "--n-calib", "2",
                     "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert {"fp32", "dynamic-7bit", "dynamic-8bit", "w8a8-per-token", "w8a8-smooth-0.5"} <= set(rows)
    assert {f"dynamic-8bit-skip-{layer}" for layer in mod.LAYERS} <= set(rows)
    assert rows["fp32"]["max_abs_dp"] == 0
    for name, r in rows.items():
        assert 0 <= r["max_abs_dp"] < 0.5 and r["images_per_s"] > 0, name
    # the variants are really different computations
    assert rows["dynamic-7bit"]["max_abs_dlogit"] != rows["dynamic-8bit"]["max_abs_dlogit"]


@pytest.mark.slow
def test_unseen_generators_quick_holds_out_whole_families_and_resumes(tmp_path, data_root):
    ug = load_script("unseen_generators")
    out = tmp_path / "unseen"
    args = ["--quick", "--out", str(out), "--methods", "linear", "rine", "last-k-tam0.25"]
    assert ug.main(args) == 0
    rows = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
    assert {(r["method"], r["fold"]) for r in rows} == {(m, f) for m in args[4:] for f in ug.FOLDS}
    items = ug.load_items(6, quick=True)
    for r in rows:
        assert r["n_test_gen"] > 0 and r["n_test_real"] > 0
        c = r["conditions"]["jpeg95"]["center"]
        assert 0 <= c["auc"] <= 1 and c["auc_ci"][0] <= c["auc"] <= c["auc_ci"][1]
        assert c["recall_ci"][0] <= c["recall"] <= c["recall_ci"][1]
        if r["method"] != "last-k-tam0.25":
            assert set(r["audit"]) >= {"png_vs_jpeg95", "size_full_vs_half"}
    # whole families are held out: every image of the fold's families is a test image, none trains
    for r in rows:
        fams = ug.FOLDS[r["fold"]]
        assert r["n_test_gen"] == sum(it.label == 1 and it.family in fams for it in items)
        native_train = [it for it in items if it.label == 1 and it.source == "native" and it.family not in fams]
        assert r["n_train_gen"] == len(native_train)
    split = ug.split_reals(items, 0, "camera")
    assert all(items[i].source == "camera" for i in split["test"])
    assert not any(items[i].source == "camera" for i in np.r_[split["train"], split["calib"]].astype(int))
    # a rerun finds everything done
    assert ug.main(args) == 0
    assert len((out / "results.jsonl").read_text().splitlines()) == len(rows)
    assert "rine" in ug.report(out / "results.jsonl")


def test_unseen_generators_feature_cache_gives_the_scorers_scores():
    """unseen_generators' feature cache (also make_default_detector's training features) scores like the
    library: a probe on cached CLS tokens = DetectorModel(linear, feature_blocks) through the Scorer, a
    suffix on cached prefix states = the matching last-K model, and the stored views with their
    distinct flags combine like mpft.views' view specs (fp32; the cache stores float16)."""
    import torch
    from PIL import Image

    from mpft.backbones import load_backbone
    from mpft.data.transforms import PreprocessPolicy
    from mpft.model import create_model
    from mpft.pipeline import Scorer, view_pixels
    from mpft.views import parse_views

    ug = load_script("unseen_generators")
    enc = load_backbone("random:tiny").eval()
    size, layers, k = enc.image_size, enc.num_layers, 2
    rng = np.random.default_rng(0)
    # smaller than the input (upscaled, repeated crops), exactly the input, wide, tall
    images = [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
              for w, h in ((20, 24), (32, 32), (70, 40), (33, 90))]
    names = ug.VIEW_NAMES
    stored = [ug.test_views(img, size, names) for img in images]
    feats = [ug.encode(enc, views, layers - k, "fp32") for views, _ in stored]
    distinct = np.stack([d for _, d in stored])
    specs = {"center": "center", "whole": "whole", "grid2": "grid:2", "grid2-max": "grid:2@max",
             "grid2+whole": "grid:2+whole", "center+whole": "center+whole"}

    def check(model, view_logits):
        for view_set, spec in specs.items():
            fast = ug.combine(view_logits, distinct.copy(), names, view_set)
            views = parse_views(spec)
            pixels = [view_pixels(img, PreprocessPolicy(size=size), views) for img in images]
            scorer = Scorer(model, combine=views.combine, batch_size=3)
            reference = scorer.combined_logits(pixels).numpy()
            assert np.abs(fast - reference).max() < 1e-4, view_set
            assert np.abs(ug.sigmoid(fast) - scorer.score(pixels)).max() < 1e-5, view_set
            assert reference.std() > 0.1  # logits that differ between images, or agreement would prove little

    torch.manual_seed(0)
    blocks = (2, 4)
    probe = create_model(enc, {"strategy": "linear", "feature_blocks": list(blocks)})
    torch.nn.init.normal_(probe.head.weight, std=1.0)
    with torch.no_grad():
        cls = torch.stack([torch.from_numpy(f["cls"][:, [b - 1 for b in blocks]]) for f in feats])
        logits = probe.head(ug.block_features(cls.flatten(0, 1))).view(len(images), len(names))
    check(probe, logits.numpy())

    suffix = ug.Suffix(enc, layers - k, lora=False, seed=0)
    with torch.no_grad():  # as if trained: the tuned blocks leave the backbone's weights
        for prm in suffix.parameters():
            if prm.requires_grad:
                prm.add_(torch.randn_like(prm) * 0.2)
        torch.nn.init.normal_(suffix.head.weight, std=1.0)
    last_k = create_model(enc, {"strategy": "last-k", "layers": k})
    with torch.no_grad():
        tuned = [(last_k.encoder.block_parameters(i), suffix.enc.block_parameters(i))
                 for i in range(layers - k, layers)]
        tuned.append((last_k.encoder.head_side_parameters(), suffix.enc.head_side_parameters()))
        for dst, src in tuned:
            for a, b in zip(dst, src, strict=True):
                a.copy_(b)
        last_k.head.load_state_dict(suffix.head.state_dict())
        prefix = torch.stack([torch.from_numpy(f["prefix"]) for f in feats])
        logits = suffix.eval()(prefix.flatten(0, 1)).view(len(images), len(names))
    check(last_k, logits.numpy())


@pytest.mark.slow
def test_make_default_detector_quick_writes_a_calibrated_checkpoint(tmp_path, data_root):
    mk = load_script("make_default_detector")
    out = tmp_path / "det"
    cache = tmp_path / "cache"
    assert mk.main(["--quick", "--out", str(out), "--cache", str(cache)]) == 0
    from mpft.detector import Detector

    det = Detector.load(out)
    # the field benchmark's winner: a linear head on the final embedding, the shipped views
    assert det.views.spec == "grid:2+whole" and det.config.tune["strategy"] == "linear"
    assert not det.config.tune["feature_blocks"]
    assert 0 < det.threshold < 1 and det.config.thresholds["calibrated"]["target_fpr"] == 0.05
    assert "leave one real source group out" in det.config.thresholds["calibrated"]["how"]
    # the training is `mpft train` itself, on cached features, and it says how
    training = det.config.training
    command = shlex.split(training["command"])
    assert command[:3] == ["mpft", "train", str(cache / "train.csv")]
    assert command[command.index("--train-views") + 1] == "2" and "--feature-cache" in command
    assert training["settings"]["balance"] == "generator" and training["feature_cache"]["extracted"] > 0
    assert training["wrapper"].startswith("python benchmarks/make_default_detector.py")
    # the manifest: no held-out family; photo rows name their source, generated rows their family
    with open(cache / "train.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert rows and not any(r["generator"] == "sd3" for r in rows)
    assert {r["generator"] for r in rows if r["label"] == "nature"} >= {"camera", "imagenet"}
    # every photo group was scored by a model trained without it, and nothing else set the threshold
    metrics = training["metrics_at_calibrated_threshold"]
    groups = set(metrics["loso_fpr_by_group"])
    assert groups == {r["source"] for r in rows if r["label"] == "nature"}
    for g in groups:
        kept = {(cache / "loso" / g / r["path"]).resolve()
                for r in csv.DictReader((cache / "loso" / g / "exclude.csv").read_text().splitlines())}
        inner = Detector.load(cache / "loso" / g / "run" / "last").config.training["n_train"]
        assert inner["real"] == sum(r["label"] == "nature" and r["source"] != g for r in rows), g
        assert len(kept) == sum(r["source"] == g for r in rows)
    rates = [v["rate"] for v in metrics["loso_fpr_by_group"].values()]
    assert sum(rates) / len(rates) <= 0.05 + 1e-9
    with open(data_root / "native.csv", newline="") as f:
        n_sd3 = sum(r["generator"] == "sd3" for r in csv.DictReader(f))
    assert 0 < metrics["heldout_family_recall"]["n"] <= n_sd3  # --quick keeps two per family
    # a rerun reuses each group's scores; another training setting recomputes them
    scores = cache / "loso" / "camera" / "scores.json"
    stamp = scores.stat().st_mtime_ns
    assert mk.main(["--quick", "--out", str(out), "--cache", str(cache)]) == 0
    assert scores.stat().st_mtime_ns == stamp
    assert mk.main(["--quick", "--out", str(out), "--cache", str(cache), "--epochs", "3"]) == 0
    assert scores.stat().st_mtime_ns != stamp and "--epochs 3" in json.loads(scores.read_text())["command"]
