"""Tests of the report modules: every writer gives parseable output, plots are PNGs, writes are atomic."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console
from rich.table import Table

from mpft.errors import ConfigError
from mpft.evaluation.console import console_table
from mpft.evaluation.io import write_csv, write_json, write_scores_csv
from mpft.evaluation.markdown import render_markdown, write_markdown
from mpft.evaluation.metrics import MEAN_METHOD, group_metrics
from mpft.evaluation.outputs import write_all
from mpft.evaluation.plots import plot_histograms, plot_roc, plot_sweep
from mpft.evaluation.schema import Condition, EvalReport, ReportMeta, ScoreRow, SkippedFile
from mpft.evaluation.sweep import parse_perturbation

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
GENS = ("midjourney", "sdv1.4", "biggan")


def _data(seed: int = 0):
    rng = np.random.default_rng(seed)
    g = np.array(GENS)[rng.integers(0, 3, 120)]
    y = rng.integers(0, 2, 120)
    s = np.clip(rng.random(120) * 0.7 + 0.3 * y, 0, 1)
    return y, s, g


def _report(*, oracle: bool = False, calibrated: float | None = None, normalize: bool = False) -> EvalReport:
    y, s, g = _data()
    kw = {"n_boot": 20, "oracle": oracle, "calibrated_threshold": calibrated}
    conds = [Condition("clean", None, group_metrics(y, s, g, **kw))]
    for q in (50, 90):  # deliberately out of order: the sweep must sort clean -> harshest
        conds.append(
            Condition(f"jpeg:{q}", f"jpeg:{q}", group_metrics(y, np.clip(s - (100 - q) / 400, 0, 1), g, **kw))
        )
    conds.append(Condition("blur:1", "blur:1", group_metrics(y, np.clip(s - 0.05, 0, 1), g, **kw)))
    meta = ReportMeta(
        checkpoint="runs/a/best.safetensors",
        model_id="mpft-vitb16",
        data_paths=["/data/genimage"],
        thresholds={"uncalibrated": 0.5, "calibrated": calibrated},
        seed=0,
        skipped=[
            SkippedFile("x.png", "decode error"),
            SkippedFile("y.png", "decode error"),
            SkippedFile("z.gif", "unsupported format"),
        ],
    )
    if normalize:
        conds.append(
            Condition("normalized", "normalize-format", group_metrics(y, np.clip(s + 0.02, 0, 1), g, **kw))
        )
        meta.normalize_format_condition = "normalized"
    scores = [ScoreRow(f"img/{i}.png", str(g[i]), int(y[i]), float(s[i]), "clean") for i in range(y.size)]
    return EvalReport(meta=meta, conditions=conds, scores=scores)


@pytest.fixture(scope="module")
def report() -> EvalReport:
    return _report()


@pytest.fixture(scope="module")
def full_report() -> EvalReport:
    return _report(oracle=True, calibrated=0.6, normalize=True)


def _no_temp_files(d: Path) -> bool:
    return not [p for p in d.iterdir() if p.name.endswith(".tmp") or p.name.startswith(".")]


def test_write_json_round_trips(report, tmp_path):
    path = write_json(report, tmp_path / "metrics.json")
    d = json.loads(path.read_text())
    assert d["mean_method"] == MEAN_METHOD
    assert [c["name"] for c in d["conditions"]] == ["clean", "jpeg:50", "jpeg:90", "blur:1"]
    assert set(d["conditions"][0]["rows"]) == {*GENS, "mean", "overall"}
    assert d["meta"]["n_skipped"] == 3
    assert d["meta"]["skipped_by_reason"] == {"decode error": 2, "unsupported format": 1}
    assert d["meta"]["mpft_version"] and d["meta"]["created"]
    assert EvalReport.from_dict(d).to_dict() == report.to_dict()
    assert _no_temp_files(tmp_path)


def test_write_csv_one_row_per_condition_and_generator(report, tmp_path):
    path = write_csv(report, tmp_path / "metrics.csv")
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4 * (len(GENS) + 2)
    first = rows[0]
    assert {"condition", "perturbation", "generator", "acc", "acc_ci_low", "acc_ci_high", "ap"} <= set(first)
    clean_mid = next(r for r in rows if r["condition"] == "clean" and r["generator"] == "midjourney")
    m = report.conditions[0].rows["midjourney"]
    assert float(clean_mid["acc"]) == pytest.approx(m.acc)
    assert float(clean_mid["ap_ci_low"]) == pytest.approx(m.ap_ci[0])
    mean = next(r for r in rows if r["condition"] == "clean" and r["generator"] == "mean")
    assert mean["acc_ci_low"] == "" and mean["mean_method"] == MEAN_METHOD


def test_write_scores_csv(report, tmp_path):
    path = write_scores_csv(report.scores, tmp_path / "scores.csv")
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["path", "generator", "label", "score", "condition"]
    assert len(rows) == len(report.scores)
    assert float(rows[3]["score"]) == pytest.approx(report.scores[3].score)
    # Plain dicts work too.
    write_scores_csv(
        [{"path": "a", "generator": "g", "label": 1, "score": 0.5, "condition": "clean"}], tmp_path / "s2.csv"
    )
    assert (tmp_path / "s2.csv").read_text().splitlines()[1] == "a,g,1,0.5,clean"


def test_markdown_basic(report, tmp_path):
    text = write_markdown(report, tmp_path / "report.md").read_text()
    for g in GENS:
        assert g in text
    assert f"**mean** ({MEAN_METHOD})" in text
    assert "oracle" not in text.lower()  # not requested -> never mentioned
    assert "fixed vs calibrated" not in text and "@cal" not in text
    assert "calibrated=" not in text.replace("uncalibrated=", "")  # an unset threshold is not listed
    assert "## Robustness sweep" in text and "Format normalisation" not in text
    # Sweep rows ordered clean -> harshest: jpeg quality 90 before 50.
    assert text.index("| jpeg:90 |") < text.index("| jpeg:50 |")
    assert "decode error: 2" in text
    # Every table row has the same number of cells as its header.
    for block in text.split("\n\n"):
        lines = [ln for ln in block.splitlines() if ln.startswith("|")]
        if lines:
            assert len({ln.replace("\\|", "").count("|") for ln in lines}) == 1


def test_markdown_oracle_calibrated_and_format(full_report):
    text = render_markdown(full_report)
    assert "oracle (not a result)" in text
    assert "oracle acc (not a result)" in text
    assert "acc @cal 0.6" in text
    assert "## Format normalisation" in text
    assert "results moved by" in text
    # Every score went up by 0.02, so accuracies moved up: positive deltas are shown.
    assert "+" in text.split("## Format normalisation")[1]
    # The normalised run is not a perturbation strength: kept out of the sweep.
    assert "| normalized |" not in text.split("## Format normalisation")[0]


def test_console_table(report, full_report):
    t = console_table(report)
    assert isinstance(t, Table)
    assert t.row_count == len(GENS) + 2
    headers = [c.header for c in t.columns]
    assert "AP" in headers and not any("oracle" in h for h in headers)
    t2 = console_table(full_report, condition="jpeg:50")
    assert any("oracle" in c.header for c in t2.columns) and "acc @cal" in [c.header for c in t2.columns]
    console = Console(record=True, width=200)
    console.print(t2)
    assert "jpeg:50" in console.export_text()
    with pytest.raises(ConfigError):
        console_table(report, condition="nope")


def _assert_png(path: Path):
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC and len(data) > 2000


@pytest.mark.parametrize("real_pool", ["per-generator", "shared"])
def test_plot_roc(tmp_path, real_pool):
    y, s, g = _data()
    _assert_png(plot_roc(y, s, g, tmp_path / "roc.png", real_pool=real_pool))
    # Only one class: still a (placeholder) PNG rather than a crash.
    _assert_png(plot_roc(np.ones(5), np.linspace(0, 1, 5), ["a"] * 5, tmp_path / "roc1.png"))
    assert _no_temp_files(tmp_path)


def test_plot_histograms_and_sweep(report, tmp_path):
    y, s, _ = _data()
    _assert_png(plot_histograms(y, s, tmp_path / "hist.png", thresholds={"uncalibrated": 0.5}))
    _assert_png(plot_sweep(report, tmp_path / "sweep.png"))
    only_clean = EvalReport(report.meta, report.conditions[:1])
    _assert_png(plot_sweep(only_clean, tmp_path / "sweep0.png"))


def test_parse_perturbation():
    for name, expected in [
        ("jpeg:75", ("jpeg", 75.0)),
        ("blur:2", ("blur", 2.0)),
        ("resize:0.5", ("resize", 0.5)),
        ("lowres:112", ("lowres", 112.0)),
        ("webp:80", ("webp", 80.0)),
        ("crop:128", ("crop", 128.0)),
    ]:
        assert parse_perturbation(Condition(name, name, {})) == expected
    assert parse_perturbation(Condition("clean", None, {})) is None
    assert parse_perturbation(Condition("normalized", "normalize-format", {})) is None


def test_write_all(full_report, tmp_path):
    out = tmp_path / "new" / "dir"
    written = write_all(full_report, out)
    expected = {
        "metrics.json",
        "metrics.csv",
        "report.md",
        "scores.csv",
        "roc.png",
        "histograms.png",
        "sweep.png",
    }
    assert set(written) == expected
    assert {p.name for p in out.iterdir()} == expected  # and no leftover temp files
    for name in ("roc.png", "histograms.png", "sweep.png"):
        _assert_png(out / name)
    json.loads((out / "metrics.json").read_text())
    # Arrays given explicitly, no per-image scores in the report.
    y, s, g = _data()
    bare = EvalReport(full_report.meta, full_report.conditions)
    written2 = write_all(bare, tmp_path / "b", labels=y, scores=s, generators=g)
    assert "roc.png" in written2 and "scores.csv" in written2
    with pytest.raises(ConfigError):
        write_all(bare, tmp_path / "c", labels=y)


def test_atomic_write_keeps_old_file_on_failure(tmp_path):
    target = tmp_path / "scores.csv"
    target.write_text("old content\n")

    def rows():
        yield ScoreRow("a.png", "g", 1, 0.9)
        raise RuntimeError("scoring crashed mid-way")

    with pytest.raises(RuntimeError):
        write_scores_csv(rows(), target)
    assert target.read_text() == "old content\n"
    assert [p.name for p in tmp_path.iterdir()] == ["scores.csv"]


def test_report_meta_reads_old_threshold_names_and_refuses_unknown_keys(report):
    from mpft.errors import ConfigError
    from mpft.evaluation.schema import ReportMeta

    d = report.meta.to_dict()
    d["thresholds"] = {"fixed": 0.5, "stored": 0.2}  # names written before mpft.decision
    assert ReportMeta.from_dict(d).thresholds == {"uncalibrated": 0.5, "calibrated": 0.2}
    d["threshold_names"] = ["x"]
    with pytest.raises(ConfigError, match=r"unknown keys \['threshold_names'\]"):
        ReportMeta.from_dict(d)
