"""``mpft predict`` end to end on a tiny random checkpoint: inputs, formats, exit codes, streaming."""

from __future__ import annotations

import copy
import csv
import io
import json
import re
import shutil
import sys
from pathlib import Path

import pytest
from PIL import Image

from mpft.cli import main
from mpft.predict_io import COLUMNS, expand_inputs, read_path_list
from tests.kit import tiny_checkpoint, write_image

TABLE_ROW = re.compile(
    r"^(?P<path>\S+)\s+(?P<probability>[\d.]+|-)\s+(?P<verdict>\w+)\s+(?P<threshold>\S+)\s+(?P<model_id>\S+)"
    r"\s*(?P<detail>.*)$"
)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    """A random:tiny LoRA detector whose head (std 0.5) gives clearly different probabilities."""
    return tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny", "lora", head_std=0.5)


@pytest.fixture(scope="module")
def loaded(ckpt):
    from mpft.detector import Detector

    return Detector.load(ckpt)


@pytest.fixture(autouse=True)
def _reuse_detector(request, monkeypatch):
    """Loading ``ckpt`` hands out a shallow copy of one loaded detector (own threshold and band,
    shared network): a fresh load per CLI call would dominate the run time. Other paths load
    for real (see test_real_load_through_cli)."""
    if "ckpt" not in request.fixturenames:
        return
    from mpft.detector import Detector

    ckpt, det = request.getfixturevalue("ckpt"), request.getfixturevalue("loaded")
    real_load = Detector.load

    def load(path=None, **kwargs):
        if path is not None and Path(path) == ckpt:
            return copy.copy(det)
        return real_load(path, **kwargs)

    monkeypatch.setattr(Detector, "load", staticmethod(load))


@pytest.fixture
def tree(tmp_path) -> Path:
    """photos/a.png, photos/b.png, photos/sub/deep.txt (PNG bytes), photos/bad.jpg (text),
    photos/readme.txt (text, not an image), photos/.hidden/h.png (skipped)."""
    root = tmp_path / "photos"
    write_image(root / "a.png", 32, 32, 1)
    write_image(root / "b.png", 32, 32, 2)
    (root / "sub").mkdir()
    (root / "sub" / "deep.txt").write_bytes(write_image(tmp_path / "deep.png", 32, 32, 3).read_bytes())
    (root / "bad.jpg").write_text("this is not a jpeg")
    (root / "readme.txt").write_text("just notes")
    write_image(root / ".hidden" / "h.png", 32, 32, 4)
    return root


def run(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["predict", *map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


def jsonl_rows(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def by_name(rows: list[dict]) -> dict[str, dict]:
    return {Path(r["path"]).name: r for r in rows}


# ---- formats -------------------------------------------------------------------------------------
def parse(fmt: str, text: str) -> list[dict]:
    if fmt == "jsonl":
        return jsonl_rows(text)
    if fmt == "json":
        return json.loads(text)
    if fmt == "csv":
        reader = csv.DictReader(io.StringIO(text))
        assert tuple(reader.fieldnames) == COLUMNS
        return list(reader)
    lines = text.splitlines()
    assert lines[0].split() == ["PATH", "PROBABILITY", "VERDICT", "THRESHOLD", "MODEL_ID", "ERROR/NOTES"]
    rows = []
    for line in lines[1:]:
        m = TABLE_ROW.match(line)
        assert m, line
        rows.append(m.groupdict())
    return rows


@pytest.mark.parametrize("fmt", ["table", "json", "jsonl", "csv"])
def test_formats_parse_and_carry_columns(capsys, ckpt, tree, fmt):
    code, out, err = run(capsys, tree, "--model", ckpt, "--format", fmt)
    assert code == 1  # bad.jpg
    rows = parse(fmt, out)
    names = by_name(rows)
    assert sorted(names) == ["a.png", "b.png", "bad.jpg", "deep.txt"]
    if fmt in ("json", "jsonl", "csv"):
        for r in rows:
            assert set(r) == set(COLUMNS)
    for name in ("a.png", "b.png", "deep.txt"):
        r = names[name]
        assert 0.0 < float(r["probability"]) < 1.0
        assert r["verdict"] in ("generated", "real", "uncertain")
        assert r["model_id"].startswith("mpft-tiny-lora-")
        assert float(r["threshold"]) == 0.5
    bad = names["bad.jpg"]
    assert bad["verdict"] == "error"
    if fmt == "table":
        assert bad["probability"] == "-" and "not an image" in bad["detail"]
    else:
        assert bad["probability"] in (None, "") and "not an image" in bad["error"]
    assert "4 inputs" in err and "1 error" in err


def test_formats_agree_on_probabilities(capsys, ckpt, tree):
    _, out_jsonl, _ = run(capsys, tree / "a.png", "--model", ckpt, "--format", "jsonl")
    _, out_csv, _ = run(capsys, tree / "a.png", "--model", ckpt, "--format", "csv")
    _, out_table, _ = run(capsys, tree / "a.png", "--model", ckpt)
    p = jsonl_rows(out_jsonl)[0]["probability"]
    assert float(parse("csv", out_csv)[0]["probability"]) == p  # full precision in CSV
    assert parse("table", out_table)[0]["probability"] == f"{p:.4f}"


def test_notes_column(capsys, ckpt, tmp_path):
    gray = tmp_path / "gray.png"
    Image.new("L", (32, 32), 90).save(gray)
    code, out, _ = run(capsys, gray, "--model", ckpt, "-f", "csv")
    assert code == 0
    assert parse("csv", out)[0]["notes"] == "grayscale"
    _, out, _ = run(capsys, gray, "--model", ckpt, "-f", "jsonl")
    assert jsonl_rows(out)[0]["notes"] == ["grayscale"]


# ---- inputs --------------------------------------------------------------------------------------
def test_folder_recursion_by_content(tree):
    found = [p.relative_to(tree).as_posix() for p in expand_inputs([str(tree)])]
    # deep.txt holds PNG bytes; bad.jpg is named like an image so it is kept (to get an error row);
    # readme.txt and hidden folders are not images
    assert found == ["a.png", "b.png", "bad.jpg", "sub/deep.txt"]
    flat = [p.relative_to(tree).as_posix() for p in expand_inputs([str(tree)], recursive=False)]
    assert flat == ["a.png", "b.png", "bad.jpg"]


def test_no_recursive_flag(capsys, ckpt, tree):
    code, out, _ = run(capsys, tree, "--model", ckpt, "-f", "jsonl", "--no-recursive")
    assert code == 1
    assert sorted(by_name(jsonl_rows(out))) == ["a.png", "b.png", "bad.jpg"]


def test_globs_expanded_here(capsys, ckpt, tree, monkeypatch):
    monkeypatch.chdir(tree)
    code, out, _ = run(capsys, "*.png", "--model", ckpt, "-f", "jsonl")
    assert code == 0
    assert [r["path"] for r in jsonl_rows(out)] == ["a.png", "b.png"]
    code, out, _ = run(capsys, "**/*.txt", "--model", ckpt, "-f", "jsonl")
    # "**" spans folders; readme.txt is named by the pattern, so like a file named on the shell
    # it is scored (and fails) instead of being filtered out
    rows = jsonl_rows(out)
    assert code == 1
    assert [(r["path"], r["verdict"]) for r in rows][0] == ("readme.txt", "error")
    assert [r["path"] for r in rows] == ["readme.txt", "sub/deep.txt"] and rows[1]["verdict"] != "error"


def test_glob_explicit_files_and_no_match(capsys, ckpt, tree):
    code, out, _ = run(capsys, tree / "*.txt", tree / "nothing-*.png", "--model", ckpt, "-f", "jsonl")
    rows = by_name(jsonl_rows(out))
    assert code == 1
    assert rows["readme.txt"]["verdict"] == "error" and "not an image" in rows["readme.txt"]["error"]
    assert rows["nothing-*.png"]["verdict"] == "error" and "not found" in rows["nothing-*.png"]["error"]


def test_literal_name_with_glob_characters(tmp_path):
    odd = write_image(tmp_path / "shot [1].png", 32, 32, 5)
    write_image(tmp_path / "shot 1.png", 32, 32, 6)
    assert expand_inputs([str(odd)]) == [odd]


def test_stdin_list(capsys, ckpt, tree, monkeypatch):
    listing = f"{tree / 'a.png'}\n\n{tree / 'sub'}\n{tree / 'a.png'}\r\n"
    monkeypatch.setattr(sys, "stdin", io.StringIO(listing))
    code, out, _ = run(capsys, "-", "--model", ckpt, "-f", "jsonl")
    assert code == 0
    # blank line skipped, folder expanded, duplicate dropped
    assert [Path(r["path"]).name for r in jsonl_rows(out)] == ["a.png", "deep.txt"]


def test_read_path_list_keeps_spaces():
    assert read_path_list([" a b.png\n", "\n", "c.png\r\n", "   \n"]) == [" a b.png", "c.png"]


# ---- exit codes ----------------------------------------------------------------------------------
def test_exit_0_all_ok(capsys, ckpt, tree):
    code, out, _ = run(capsys, tree / "a.png", tree / "b.png", "--model", ckpt, "-f", "jsonl")
    assert code == 0 and len(jsonl_rows(out)) == 2


def test_real_load_through_cli(capsys, ckpt, loaded, tree, tmp_path):
    other = shutil.copytree(ckpt, tmp_path / "copy")  # a path the fixture does not intercept
    code, out, _ = run(capsys, tree / "a.png", "--model", other, "-f", "jsonl")
    assert code == 0
    (row,) = jsonl_rows(out)
    assert row["model_id"].startswith("mpft-copy-lora-")
    assert row["probability"] == pytest.approx(loaded.predict(tree / "a.png")[0].probability, abs=1e-6)


def test_exit_1_missing_path_is_a_row(capsys, ckpt, tree):
    code, out, _ = run(capsys, tree / "a.png", tree / "gone.png", "--model", ckpt, "-f", "jsonl")
    assert code == 1
    rows = jsonl_rows(out)
    assert [r["verdict"] for r in rows][0] != "error"
    assert rows[1]["verdict"] == "error" and "not found" in rows[1]["error"]
    assert rows[1]["probability"] is None


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--format", "xml"], "unknown --format"),
        (["--band", "0.7"], "--band"),
        (["--threshold", "1.5"], "--threshold"),
        (["--batch-size", "0"], "--batch-size"),
    ],
)
def test_exit_2_bad_options(capsys, ckpt, tree, extra, message):
    code, out, err = run(capsys, tree / "a.png", "--model", ckpt, *extra)
    assert code == 2 and out == "" and message in err


def test_exit_2_no_inputs(capsys, ckpt, tmp_path, monkeypatch):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no images here")
    code, out, err = run(capsys, tmp_path / "empty", "--model", ckpt)
    assert code == 2 and out == "" and "no input images" in err
    monkeypatch.setattr(sys, "stdin", io.StringIO("\n"))
    assert run(capsys, "-", "--model", ckpt)[0] == 2
    assert run(capsys)[0] == 2  # no PATH at all


def test_exit_5_bad_checkpoint(capsys, tree, tmp_path):
    (tmp_path / "notackpt").mkdir()
    code, out, err = run(capsys, tree / "a.png", "--model", tmp_path / "notackpt")
    assert code == 5 and out == "" and "config.json" in err


def test_exit_5_default_model_missing(capsys, tree, tmp_path, monkeypatch):
    from mpft import detector as detector_mod

    monkeypatch.setattr(detector_mod, "DEFAULT_DETECTOR_DIR", tmp_path / "missing-default")
    code, out, err = run(capsys, tree / "a.png")
    assert code == 5 and out == "" and "--model" in err


# ---- decisions -----------------------------------------------------------------------------------
def test_threshold_and_band_verdicts(capsys, ckpt, tree):
    _, out, _ = run(capsys, tree / "a.png", "--model", ckpt, "-f", "jsonl")
    p = jsonl_rows(out)[0]["probability"]

    def verdict(*opts: str) -> dict:
        code, out, _ = run(capsys, tree / "a.png", "--model", ckpt, "-f", "jsonl", *opts)
        assert code == 0
        return jsonl_rows(out)[0]

    at = verdict("--threshold", repr(p), "--band", "0.01")
    assert at["verdict"] == "uncertain" and at["threshold"] == p and at["probability"] == p
    assert verdict("--threshold", repr(p), "--band", "0")["verdict"] == "generated"  # p >= threshold
    assert verdict("--threshold", repr(min(p + 0.2, 1.0)), "--band", "0.1")["verdict"] == "real"
    assert verdict("--threshold", repr(max(p - 0.2, 0.0)), "--band", "0.1")["verdict"] == "generated"
    assert verdict("--threshold", repr(max(p - 0.05, 0.0)), "--band", "0.1")["verdict"] == "uncertain"


# ---- streaming -----------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", ["jsonl", "csv", "table"])
def test_rows_on_disk_before_run_ends(capsys, ckpt, tmp_path, monkeypatch, fmt):
    from mpft.pipeline import Scorer

    for i in range(5):
        write_image(tmp_path / "in" / f"{i}.png", 32, 32, i)
    out_file = tmp_path / f"out.{fmt}"
    seen_on_disk: list[int] = []
    real_score = Scorer.score
    calls = {"n": 0}

    def data_lines() -> int:
        lines = [ln for ln in out_file.read_text().splitlines() if ln.strip()]
        return len(lines) - (0 if fmt == "jsonl" else 1)  # csv and table have a header

    def score_then_interrupt(self, views, *args, **kwargs):
        # what is on disk while the run is still going, before the next batch is scored
        seen_on_disk.append(data_lines())
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return real_score(self, views, *args, **kwargs)

    monkeypatch.setattr(Scorer, "score", score_then_interrupt)
    code, _, _ = run(capsys, tmp_path / "in", "--model", ckpt, "-f", fmt, "-b", "1", "-o", out_file)
    assert code == 130
    assert seen_on_disk == [0, 1, 2, 3]
    assert data_lines() == 3
    if fmt == "jsonl":
        rows = jsonl_rows(out_file.read_text())
        assert [Path(r["path"]).name for r in rows] == ["0.png", "1.png", "2.png"]


def test_interrupted_json_keeps_finished_rows(capsys, ckpt, tmp_path, monkeypatch):
    from mpft.pipeline import Scorer

    for i in range(4):
        write_image(tmp_path / "in" / f"{i}.png", 32, 32, i)
    real_score = Scorer.score
    calls = {"n": 0}

    def score_then_interrupt(self, views, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real_score(self, views, *args, **kwargs)

    monkeypatch.setattr(Scorer, "score", score_then_interrupt)
    out_file = tmp_path / "out.json"
    code, _, _ = run(capsys, tmp_path / "in", "--model", ckpt, "-f", "json", "-b", "1", "-o", out_file)
    assert code == 130
    assert [Path(r["path"]).name for r in json.loads(out_file.read_text())] == ["0.png", "1.png"]


# ---- progress bar --------------------------------------------------------------------------------
@pytest.mark.parametrize("n, tty, shown", [(12, True, True), (12, False, False), (3, True, False)])
def test_progress_bar_only_for_many_images_on_a_tty(capsys, ckpt, tmp_path, monkeypatch, n, tty, shown):
    for i in range(n):
        write_image(tmp_path / "in" / f"{i}.png", 32, 32, i)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: tty, raising=False)
    code, out, err = run(capsys, tmp_path / "in", "--model", ckpt, "-f", "jsonl", "-b", "4")
    assert code == 0 and len(jsonl_rows(out)) == n
    assert (f"/{n}" in err) == shown


# ---- folders with FIFOs and looping links (issue 13, items 4 and 5) ---------------------------------
def test_fifo_in_folder_gets_a_row_or_a_counted_skip(capsys, ckpt, tmp_path, caplog):
    from tests.fifo_guard import fifo_watchdog, make_fifo

    root = tmp_path / "in"
    write_image(root / "a.png", 32, 32, 1)
    fifos = [make_fifo(root / "pipe.jpg"), make_fifo(root / "sub" / "pipe")]
    with fifo_watchdog(*fifos) as guard:
        code, out, err = run(capsys, root, "--model", ckpt, "-f", "jsonl")
    assert not guard.fired, "a FIFO was opened for reading: without the watchdog the run would hang"
    assert code == 1
    rows = by_name(jsonl_rows(out))
    assert sorted(rows) == ["a.png", "pipe.jpg"]  # named like an image: an error row
    assert rows["a.png"]["verdict"] != "error"
    assert rows["pipe.jpg"]["verdict"] == "error" and "named pipe" in rows["pipe.jpg"]["error"]
    assert "skipped 1 entry" in caplog.text + err  # the other FIFO: counted, not scored


def test_symlink_loops_are_error_rows(capsys, ckpt, tmp_path):
    write_image(tmp_path / "outside.png", 32, 32, 5)  # beside the folder: `up -> ..` must not reach it
    root = tmp_path / "in"
    write_image(root / "ok.png", 32, 32, 1)
    (root / "a").symlink_to("b.jpg")
    (root / "b.jpg").symlink_to("a")
    (root / "up").symlink_to("..")
    code, out, err = run(capsys, root, "--model", ckpt, "-f", "jsonl")
    assert code == 1
    rows = by_name(jsonl_rows(out))
    assert sorted(rows) == ["a", "b.jpg", "ok.png", "up"]  # one row per bad link, nothing from outside
    assert rows["ok.png"]["verdict"] != "error"
    for name in ("a", "b.jpg", "up"):
        assert rows[name]["verdict"] == "error" and "loop" in rows[name]["error"], rows[name]
    # a recursive glob does not walk through the loop either
    code, out, _ = run(capsys, f"{root}/**", "--model", ckpt, "-f", "jsonl")
    assert sorted(by_name(jsonl_rows(out))) == ["a", "b.jpg", "ok.png", "up"]


# ---- --max-pixels (issue 13, item 7) ----------------------------------------------------------------
@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")  # the 32x32 crop, under the tiny limit
def test_max_pixels_option(capsys, ckpt, tmp_path, monkeypatch):
    img = write_image(tmp_path / "img.png", 50, 40, 1)  # 2000 pixels
    code, out, _ = run(capsys, img, "--model", ckpt, "-f", "jsonl", "--max-pixels", "1999")
    (row,) = jsonl_rows(out)
    assert code == 1 and "max_pixels=1999" in row["error"]
    # Pillow's process-wide guard (here made tiny) is not a second, hidden limit
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 800)  # errors above 1600, warns above 800
    code, out, _ = run(capsys, img, "--model", ckpt, "-f", "jsonl", "--max-pixels", "2000")
    (row,) = jsonl_rows(out)
    assert code == 0 and row["error"] is None
    code, out, err = run(capsys, img, "--model", ckpt, "--max-pixels", "0")
    assert code == 2 and out == "" and "--max-pixels" in err


def test_output_checked_before_the_model_loads(capsys, ckpt, tree, tmp_path, monkeypatch):
    from mpft.detector import Detector

    def no_load(*args, **kwargs):
        raise AssertionError("the model was loaded before --output was checked")

    monkeypatch.setattr(Detector, "load", staticmethod(no_load))
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, out, err = run(capsys, tree / "a.png", "--model", ckpt, "-o", blocker / "out.jsonl")
    assert code == 2 and out == "" and "--output" in err and "not a directory" in err
