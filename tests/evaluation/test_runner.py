"""Tests of mpft.evaluation.runner: data resolution, conditions, thresholds, files, determinism."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from mpft.checkpoint import update_config
from mpft.errors import CheckpointError, ConfigError, DataError
from mpft.evaluation import (
    EvalReport,
    eval_split,
    evaluate,
    group_metrics,
    parse_mask,
    resolve_checkpoint_dir,
    resolve_eval_data,
    threshold_at_fpr,
)
from mpft.evaluation.metrics import Metrics
from tests.evaluation.conftest import flat
from tests.kit import write_image

FILES = ("metrics.json", "metrics.csv", "report.md", "scores.csv", "roc.png", "histograms.png", "sweep.png")


def read_scores(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def rows_of(doc: dict, condition: str) -> dict[str, dict]:
    return next(c["rows"] for c in doc["conditions"] if c["name"] == condition)


def arrays(rows: list[dict], condition: str = "clean") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    sel = [r for r in rows if r["condition"] == condition]
    return (
        np.array([int(r["label"]) for r in sel]),
        np.array([float(r["score"]) for r in sel]),
        np.array([r["generator"] for r in sel], dtype=object),
    )


# --------------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------------


def test_checkpoint_dir_resolves_run_dir(eval_checkpoint: Path, tmp_path: Path) -> None:
    assert resolve_checkpoint_dir(eval_checkpoint) == eval_checkpoint
    assert resolve_checkpoint_dir(eval_checkpoint.parent) == eval_checkpoint  # run dir -> run/best
    with pytest.raises(CheckpointError, match="not found"):
        resolve_checkpoint_dir(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="not an mpft checkpoint"):
        resolve_checkpoint_dir(tmp_path / "empty")


def test_eval_split_prefers_val_then_test(tmp_path: Path) -> None:
    flat = tmp_path / "flat"
    (flat / "0_real").mkdir(parents=True)
    assert eval_split(flat) is None
    gi = tmp_path / "gi"
    for s in ("train", "val"):
        (gi / "sd" / s).mkdir(parents=True)
    assert eval_split(gi) == "val"
    t = tmp_path / "t"
    for s in ("train", "test"):
        (t / s).mkdir(parents=True)
    assert eval_split(t) == "test"
    only_train = tmp_path / "ot"
    (only_train / "train").mkdir(parents=True)
    with pytest.raises(DataError, match="val/ or test/"):
        eval_split(only_train)


def test_genimage_uses_val_split(eval_tree: Path) -> None:
    d = resolve_eval_data([eval_tree])
    assert d.real_pool == "per-generator"
    assert all("/val/" in s.path.as_posix() for s in d.samples)
    assert {s.generator for s in d.samples} == {"sdv14", "midjourney"}
    # 6 real + 6 fake per generator, plus the corrupt file (found by its magic bytes)
    assert len(d.samples) == 25


def test_shared_pool_resolution(shared_pool: tuple[Path, list[Path]], ufd_tree: Path) -> None:
    real, fakes = shared_pool
    d = resolve_eval_data(fakes, real=real)
    assert d.real_pool == "shared"
    assert sum(s.label == 0 for s in d.samples) == 6
    assert {s.generator for s in d.samples if s.label == 1} == {"dalle", "glide"}
    with pytest.raises(DataError, match="drop --real"):
        resolve_eval_data([ufd_tree], real=real)


def test_same_generator_in_two_roots_is_prefixed(tmp_path: Path) -> None:
    for root in ("a", "b"):
        for cls, seed in (("0_real", 1), ("1_fake", 2)):
            write_image(tmp_path / root / "gen" / cls / "x.png", seed=seed)
    d = resolve_eval_data([tmp_path / "a", tmp_path / "b"])
    assert {s.generator for s in d.samples} == {"a/gen", "b/gen"}


def test_calibration_reals(eval_tree: Path, shared_pool: tuple[Path, list[Path]], tmp_path: Path) -> None:
    from mpft.evaluation.inputs import calibration_reals as _calibration_reals

    reals = _calibration_reals(eval_tree, "auto")  # a labelled dataset: its val/ real images
    assert len(reals) == 12 and all(s.path.parent.name == "nature" and s.label == 0 for s in reals)
    assert len(_calibration_reals(shared_pool[0], "auto")) == 6  # a plain folder of real photos
    only_train = tmp_path / "ot"
    write_image(only_train / "train" / "0_real" / "a.png", seed=1)
    write_image(only_train / "train" / "1_fake" / "b.png", seed=2)
    with pytest.raises(DataError, match="val/ or test/"):  # never mistaken for a plain folder of reals
        _calibration_reals(only_train, "auto")


def test_parse_mask() -> None:
    base = {"strategy": "tam", "ratio": 0.5, "texture": "variance", "temperature": 0.0, "apply": "drop"}
    m = parse_mask("random:0.25", base)
    assert (m.strategy, m.ratio, m.texture) == ("random", 0.25, "variance")
    assert parse_mask("tam", base).ratio == 0.5
    assert parse_mask(None, base) is None and parse_mask("none", base) is None
    for bad in ("texture:0.5", "tam:x", "tam:1.5"):
        with pytest.raises(ConfigError, match="--mask"):
            parse_mask(bad, base)


def test_bad_specs_fail_before_loading(tmp_path: Path) -> None:
    # The checkpoint does not exist: a ConfigError proves the specs are checked first.
    with pytest.raises(ConfigError, match="perturbation"):
        evaluate(tmp_path / "none", [tmp_path], out=None, perturb=["jpeg:500"])
    with pytest.raises(ConfigError, match="re-encode"):
        evaluate(tmp_path / "none", [tmp_path], out=None, normalize_format="gif")
    with pytest.raises(ConfigError, match="--mask"):
        evaluate(tmp_path / "none", [tmp_path], out=None, mask="banana:0.5")


# --------------------------------------------------------------------------------------------------
# A full run: files, skipped files, consistency with metrics.compute_metrics
# --------------------------------------------------------------------------------------------------


def test_genimage_run_writes_consistent_files(
    eval_checkpoint: Path, eval_tree: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    report = evaluate(eval_checkpoint.parent, [eval_tree], out=out, n_boot=30, oracle=True, device="cpu")
    assert isinstance(report, EvalReport)
    for name in FILES:
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    for name in ("roc.png", "histograms.png", "sweep.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    doc = json.loads((out / "metrics.json").read_text())
    assert EvalReport.from_dict(doc).conditions[0].name == "clean"
    meta = doc["meta"]
    assert meta["checkpoint"] == str(eval_checkpoint)
    assert meta["data_paths"] == [str(eval_tree)]
    assert meta["n_skipped"] == 1
    assert meta["skipped"][0]["path"].endswith("broken.png")
    assert str(eval_tree) not in meta["skipped"][0]["reason"]  # grouped by cause, not by path
    assert sum(meta["skipped_by_reason"].values()) == 1
    assert meta["extra"]["counts"]["total"] == 25 and meta["extra"]["n_scored"] == {"clean": 24}

    rows = read_scores(out / "scores.csv")
    assert len(rows) == 24 and {r["condition"] for r in rows} == {"clean"}
    assert not any(r["path"].endswith("broken.png") for r in rows)
    y, s, g = arrays(rows)
    expected = group_metrics(y, s, g, real_pool="auto", threshold=0.5, oracle=True, n_boot=30, seed=0)
    got = rows_of(doc, "clean")
    assert set(got) == {"sdv14", "midjourney", "mean", "overall"}
    for name, m in expected.items():
        assert flat(Metrics.from_dict(got[name]).to_dict()) == pytest.approx(flat(m.to_dict())), name
    assert got["sdv14"]["n_real"] == 6 and got["sdv14"]["n_fake"] == 6
    assert got["overall"]["oracle_acc"] is not None

    with open(out / "metrics.csv", newline="") as f:
        csv_rows = list(csv.DictReader(f))
    assert {(r["condition"], r["generator"]) for r in csv_rows} == {("clean", k) for k in got}
    md = (out / "report.md").read_text()
    assert "oracle (not a result)" in md and "skipped files: 1" in md


def test_shared_pool_rows_and_calibration(
    eval_checkpoint: Path, ufd_tree: Path, shared_pool: tuple[Path, list[Path]]
) -> None:
    real, fakes = shared_pool
    shared = evaluate(eval_checkpoint, fakes, real=real, out=None, n_boot=0, device="cpu")
    rows = shared.condition().rows
    assert set(rows) == {"dalle", "glide", "mean", "overall"}
    assert (rows["dalle"].n_real, rows["dalle"].n_fake) == (6, 4)
    assert rows["overall"].n == 14
    assert shared.meta.real_pool == "shared"
    assert shared.meta.data_paths[-1] == str(real)
    # the shared pool's real scores are the same in both rows: same real accuracy
    assert rows["dalle"].real_acc == rows["glide"].real_acc
    # no calibration and a stored threshold of 0.5: no second threshold
    assert rows["overall"].threshold_cal is None and rows["overall"].acc_cal is None
    assert shared.meta.thresholds == {"uncalibrated": 0.5}

    # --calibrate-on a plain folder of real images: the threshold comes from their scores
    expected = threshold_at_fpr([r.score for r in shared.scores if r.label == 0], 0.2)
    cal = evaluate(
        eval_checkpoint, [ufd_tree], out=None, n_boot=0, calibrate_on=real, target_fpr=0.2, device="cpu"
    )
    overall = cal.condition().rows["overall"]
    assert overall.threshold_cal == pytest.approx(expected)
    assert overall.threshold_cal != 0.5 and overall.threshold == 0.5
    y = np.array([r.label for r in cal.scores])
    s = np.array([r.score for r in cal.scores])
    assert overall.acc_cal == pytest.approx(float(((s >= expected) == (y == 1)).mean()))
    assert overall.acc == pytest.approx(float(((s >= 0.5) == (y == 1)).mean()))
    assert cal.meta.thresholds["calibrated"] == pytest.approx(expected)
    assert "6 real images" in cal.meta.calibration
    assert cal.meta.real_pool == "per-generator"
    assert (cal.condition().rows["progan"].n_real, cal.condition().rows["progan"].n_fake) == (5, 5)


# --------------------------------------------------------------------------------------------------
# Conditions: sweep, format normalisation, masking
# --------------------------------------------------------------------------------------------------


def test_sweep_gives_six_conditions_plus_clean(eval_checkpoint: Path, ufd_tree: Path, tmp_path: Path) -> None:
    out = tmp_path / "sweep"
    report = evaluate(
        eval_checkpoint, [ufd_tree], out=out, perturb=["jpeg:95,75,50", "blur:1,2,3"],
        limit=2, n_boot=0, device="cpu",
    )
    names = [c.name for c in report.conditions]
    assert names == ["clean", "jpeg:95", "jpeg:75", "jpeg:50", "blur:1", "blur:2", "blur:3"]
    for c in report.conditions:
        assert set(c.rows) == {"progan", "stylegan", "mean", "overall"}, c.name
        assert c.perturbation == (None if c.name == "clean" else c.name)
    doc = json.loads((out / "metrics.json").read_text())
    assert doc["meta"]["extra"]["perturbations"] == names[1:]
    assert doc["meta"]["extra"]["sweep_n_boot"] == 0  # min(n_boot, 200)
    scores = read_scores(out / "scores.csv")
    assert {r["condition"] for r in scores} == set(names)
    assert len(scores) == 7 * 8  # limit 2 per class per generator, 2 generators
    # blur changes the pixels, so scores move
    _, s_clean, _ = arrays(scores, "clean")
    _, s_blur, _ = arrays(scores, "blur:3")
    assert not np.allclose(s_clean, s_blur)
    # every condition's metrics are those of its own scores
    for name in names:
        y, s, g = arrays(scores, name)
        ap = group_metrics(y, s, g, n_boot=0)["mean"].ap
        assert rows_of(doc, name)["mean"]["ap"] == pytest.approx(ap), name
    md = (out / "report.md").read_text()
    assert "## Robustness sweep" in md and "| blur:3 |" in md
    assert (out / "sweep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_normalize_format_and_mask(eval_checkpoint: Path, ufd_tree: Path, tmp_path: Path) -> None:
    out = tmp_path / "norm"
    report = evaluate(
        eval_checkpoint, [ufd_tree], out=out, normalize_format="jpeg:95", limit=2, n_boot=0, device="cpu"
    )
    assert [c.name for c in report.conditions] == ["clean", "normalize:jpeg:95"]
    assert report.meta.normalize_format_condition == "normalize:jpeg:95"
    md = (out / "report.md").read_text()
    assert "## Format normalisation" in md and "Verdict: results moved by" in md
    assert "## Robustness sweep" not in md  # the normalised run is a comparison, not a sweep point

    # --mask (analysis only) changes what the model sees, so the scores move
    masked = evaluate(eval_checkpoint, [ufd_tree], out=None, limit=2, n_boot=0, mask="tam:0.5", device="cpu")
    plain = [r for r in report.scores if r.condition == "clean"]
    assert [r.path for r in plain] == [r.path for r in masked.scores]
    assert not np.allclose([r.score for r in plain], [r.score for r in masked.scores])
    assert masked.meta.extra["mask_at_inference"]["ratio"] == 0.5


# --------------------------------------------------------------------------------------------------
# Thresholds
# --------------------------------------------------------------------------------------------------


def test_stored_threshold_is_used_without_calibration(
    eval_checkpoint: Path, ufd_tree: Path, tmp_path: Path
) -> None:
    ckpt = shutil.copytree(eval_checkpoint, tmp_path / "ckpt")
    update_config(ckpt, threshold=0.3, thresholds={"user": {"value": 0.3, "how": "tuned by hand"}})
    report = evaluate(ckpt, [ufd_tree], out=None, n_boot=0, limit=2, device="cpu")
    overall = report.condition().rows["overall"]
    assert overall.threshold == 0.5 and overall.threshold_cal == 0.3
    assert report.meta.thresholds == {"uncalibrated": 0.5, "user": 0.3}  # set by hand: not calibrated
    assert "tuned by hand" in report.meta.calibration


# --------------------------------------------------------------------------------------------------
# Determinism and --limit
# --------------------------------------------------------------------------------------------------


def test_two_runs_identical_and_limit_is_seeded(
    eval_checkpoint: Path, eval_tree: Path, tmp_path: Path
) -> None:
    docs = []
    for name in ("a", "b"):
        out = tmp_path / name
        evaluate(eval_checkpoint, [eval_tree], out=out, limit=4, n_boot=40, seed=3, device="cpu")
        doc = json.loads((tmp_path / name / "metrics.json").read_text())
        doc["meta"].pop("created")
        docs.append(doc)
    assert docs[0] == docs[1]
    assert (tmp_path / "a" / "scores.csv").read_bytes() == (tmp_path / "b" / "scores.csv").read_bytes()
    counts = docs[0]["meta"]["extra"]["counts"]["generators"]
    assert counts == {"midjourney": {"real": 4, "fake": 4}, "sdv14": {"real": 4, "fake": 4}}
    assert docs[0]["meta"]["limit"] == 4



def test_reduced_precisions_score_close_to_fp32(
    eval_checkpoint: Path, ufd_tree: Path, shared_pool: tuple[Path, list[Path]]
) -> None:
    """--precision reaches the scoring loop: bf16 / int8 scores differ from fp32, but only slightly."""
    real, fakes = shared_pool
    ref = evaluate(eval_checkpoint, fakes, real=real, out=None, n_boot=0, device="cpu")
    s_ref = np.array([r.score for r in ref.scores])
    assert np.ptp(s_ref) > 0.05 and ref.meta.extra["precision"] == "fp32"
    for precision in ("bf16", "int8"):
        got = evaluate(eval_checkpoint, fakes, real=real, out=None, n_boot=0, device="cpu", precision=precision)
        s = np.array([r.score for r in got.scores])
        assert [r.path for r in got.scores] == [r.path for r in ref.scores]
        assert not np.array_equal(s, s_ref), precision
        assert np.max(np.abs(s - s_ref)) < 0.05, precision
        assert got.meta.extra["precision"] == precision


@pytest.mark.parametrize("native", [False, True])
def test_precision_auto_is_resolved_and_recorded(
    eval_checkpoint: Path, ufd_tree: Path, monkeypatch: pytest.MonkeyPatch, native: bool
) -> None:
    import mpft.precision as prec

    monkeypatch.setattr(prec, "cpu_has_native_bf16", lambda flags=None: native)
    report = evaluate(eval_checkpoint, [ufd_tree], out=None, n_boot=0, device="cpu", precision="auto")
    used = "bf16" if native else "fp32"
    assert report.meta.extra["precision"] == used and report.meta.extra["precision_requested"] == "auto"
    assert report.meta.model_id.endswith("-bf16") is native
