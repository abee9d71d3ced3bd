"""mpft eval under Ctrl-C (a partial report, marked so) and its image counts (every file once)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

import mpft.evaluation.scoring as scoring
from mpft.cli import main
from mpft.display import display_name
from mpft.evaluation import EvalReport, evaluate
from mpft.evaluation.console import console_table
from mpft.evaluation.markdown import render_markdown
from mpft.evaluation.runner import EvalInterrupted
from tests.evaluation.test_runner import read_scores
from tests.kit import write_image

N_GOOD = 24  # eval_tree: 2 generators x 6 real + 6 generated in val/, plus one corrupt file


def _interrupt_on_call(monkeypatch: pytest.MonkeyPatch, n: int) -> list[int]:
    """score_dataset raises KeyboardInterrupt (as Ctrl-C does) on its n-th call; returns the call log."""
    real = scoring.score_dataset
    calls: list[int] = []

    def fake(*args, **kw):
        calls.append(len(kw.get("indices") or []))
        if len(calls) == n:
            raise KeyboardInterrupt
        return real(*args, **kw)

    monkeypatch.setattr(scoring, "score_dataset", fake)
    # one batch per chunk, so the test knows what each call scores
    monkeypatch.setattr(scoring, "CHUNK_SECONDS", 1e-9)
    return calls


def test_ctrl_c_writes_what_was_scored_marked_partial(
    eval_checkpoint: Path, eval_tree: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = _interrupt_on_call(monkeypatch, 3)  # two batches of 4 scored, Ctrl-C in the third
    out = tmp_path / "out"
    with pytest.raises(EvalInterrupted) as info:
        evaluate(eval_checkpoint, [eval_tree], out=out, batch_size=4, n_boot=20, device="cpu")
    assert isinstance(info.value, KeyboardInterrupt)  # so the CLI still exits 130
    assert calls == [4, 4, 4]
    doc = json.loads((out / "metrics.json").read_text())
    meta = doc["meta"]
    assert "interrupted during condition 'clean' after 8 of 25 images" in meta["partial"]
    assert meta["extra"]["n_scored"]["clean"] + meta["extra"]["n_failed"]["clean"] == 8
    rows = read_scores(out / "scores.csv")
    assert len(rows) == meta["extra"]["n_scored"]["clean"] > 0
    assert "**PARTIAL RESULTS**" in (out / "report.md").read_text()
    report = info.value.report
    assert report.meta.partial == meta["partial"] and len(report.scores) == len(rows)
    assert console_table(report).title.startswith("PARTIAL")
    assert EvalReport.from_dict(doc).meta.partial == meta["partial"]


def test_ctrl_c_in_a_later_condition_keeps_the_finished_ones(
    eval_checkpoint: Path, eval_tree: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 25 images in batches of 4 = 7 calls for clean; Ctrl-C in the second batch of jpeg:75
    _interrupt_on_call(monkeypatch, 9)
    out = tmp_path / "out"
    with pytest.raises(EvalInterrupted):
        evaluate(eval_checkpoint, [eval_tree], out=out, batch_size=4, n_boot=20, perturb=["jpeg:75,50"],
                 device="cpu")
    doc = json.loads((out / "metrics.json").read_text())
    names = [c["name"] for c in doc["conditions"]]
    assert names == ["clean", "jpeg:75"]  # jpeg:50 never started
    assert doc["meta"]["extra"]["conditions_planned"] == ["clean", "jpeg:75", "jpeg:50"]
    assert "'jpeg:75' after 4 of 25" in doc["meta"]["partial"]
    clean = doc["conditions"][0]["rows"]["overall"]
    assert clean["n_real"] + clean["n_fake"] == N_GOOD and clean["ap_ci"] is not None  # complete, with intervals
    jpeg = doc["conditions"][1]["rows"]["overall"]
    assert jpeg["n_real"] + jpeg["n_fake"] == 4 and jpeg["ap_ci"] is None  # partial: no bootstrap


def test_ctrl_c_before_any_score_writes_nothing(
    eval_checkpoint: Path, eval_tree: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _interrupt_on_call(monkeypatch, 1)
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt) as info:
        evaluate(eval_checkpoint, [eval_tree], out=out, batch_size=4, n_boot=0, device="cpu")
    assert not isinstance(info.value, EvalInterrupted)
    assert not (out / "metrics.json").exists()


def test_cli_ctrl_c_exits_130_with_partial_files(
    eval_checkpoint: Path, eval_tree: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    _interrupt_on_call(monkeypatch, 2)
    out = tmp_path / "out"
    code = main(["eval", str(eval_checkpoint), str(eval_tree), "--out", str(out), "--batch-size", "4",
                 "--n-boot", "0", "--device", "cpu"])
    assert code == 130
    assert "interrupted" in capsys.readouterr().err
    assert json.loads((out / "metrics.json").read_text())["meta"]["partial"]


def test_chunked_scoring_gives_the_scores_of_one_pass(
    eval_checkpoint: Path, eval_tree: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # chunks are whole batches: the same batches as one pass, so the same float bits
    one = evaluate(eval_checkpoint, [eval_tree], out=None, batch_size=4, n_boot=0, device="cpu")
    monkeypatch.setattr(scoring, "CHUNK_SECONDS", 1e-9)
    chunked = evaluate(eval_checkpoint, [eval_tree], out=None, batch_size=4, n_boot=0, device="cpu")
    assert [(r.path, r.score) for r in one.scores] == [(r.path, r.score) for r in chunked.scores]


# --------------------------------------------------------------------------------------------------
# Counts: every file found is accounted for once
# --------------------------------------------------------------------------------------------------


def test_log_counts_images_scored_not_images_found(
    eval_checkpoint: Path, eval_tree: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="mpft.evaluation.runner"):
        report = evaluate(eval_checkpoint, [eval_tree], out=None, n_boot=0, perturb=["blur:1"], device="cpu")
    # 25 found, 24 decoded, per condition: the old log said "scored 50 images"
    assert "scored 48 of 50 images (2 could not be read)" in caplog.text
    assert report.meta.extra["n_scored"] == {"clean": 24, "blur:1": 24}
    assert report.meta.extra["n_failed"] == {"clean": 1, "blur:1": 1}
    assert len(report.meta.skipped) == 1  # listed once, whatever the number of conditions


def test_empty_and_non_image_files_named_like_images_are_skipped_not_lost(
    eval_checkpoint: Path, eval_tree: Path
) -> None:
    folder = eval_tree / "sdv14" / "val" / "ai"
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "notes.jpg").write_text("not an image\n")
    report = evaluate(eval_checkpoint, [eval_tree], out=None, n_boot=0, device="cpu")
    found = report.meta.extra["counts"]["total"]
    assert found == N_GOOD + 3
    assert report.meta.extra["n_scored"]["clean"] + len(report.meta.skipped) == found
    reasons = {Path(s.path).name: s.reason for s in report.meta.skipped}
    assert set(reasons) == {"broken.png", "empty.jpg", "notes.jpg"}
    assert "empty" in reasons["empty.jpg"]


# --------------------------------------------------------------------------------------------------
# Names with newlines stay on their table row
# --------------------------------------------------------------------------------------------------


def test_generator_name_with_newline_stays_on_one_row(eval_checkpoint: Path, tmp_path: Path) -> None:
    real = tmp_path / "pool" / "real"
    fake = tmp_path / "pool" / "dall\ne"
    for i in range(3):
        write_image(real / f"r{i}.png", seed=i, smooth=True)
        write_image(fake / f"f{i}.png", seed=10 + i)
    report = evaluate(eval_checkpoint, [fake], real=real, out=tmp_path / "out", n_boot=0, device="cpu")
    assert display_name("dall\ne") == "dall\\ne"
    md = render_markdown(report)
    assert "| dall\\ne |" in md
    assert all(line.startswith(("|", "#", "-", "**")) or not line or line[0].isalpha() for line in md.splitlines())
    from rich.console import Console

    console = Console(width=200, record=True)
    console.print(console_table(report))
    table = console.export_text()
    assert "dall\\ne" in table and not any(line.strip("│ ") == "e" for line in table.splitlines())
    rows = read_scores(tmp_path / "out" / "scores.csv")  # CSV keeps the real name, quoted
    assert {r["generator"] for r in rows} == {"dall\ne", "real"}
