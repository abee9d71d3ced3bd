"""``mpft predict --output OUT --resume``: partial rows cut, finished inputs skipped, a real SIGKILL mid-run."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mpft.cli import main
from mpft.errors import ConfigError
from mpft.predict_io import COLUMNS
from mpft.predict_resume import read_resume, remaining
from tests.kit import fill_folder, require, tiny_checkpoint, write_corrupt

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    return tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny", "lora", head_std=0.5)


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    root = fill_folder(tmp_path_factory.mktemp("imgs") / "photos", 10, w=40, h=36)
    write_corrupt(root / "zz_bad.png")
    return root


def predict(capsys, *args) -> tuple[int, str]:
    code = main(["predict", *map(str, args)])
    _, err = capsys.readouterr()
    return code, err


def jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_read_resume_cuts_a_partial_jsonl_line(tmp_path):
    out = tmp_path / "r.jsonl"
    good = json.dumps({"path": "a.png", "model_id": "m"})
    out.write_text(good + "\n" + '{"path": "b.p')
    state = read_resume(out, "jsonl")
    assert state.done == {"a.png"} and state.model_ids == {"m"} and state.rows == 1
    assert out.read_text() == good + "\n"
    assert remaining([Path("a.png"), Path("b.png")], state) == [Path("b.png")]


def test_read_resume_csv_drops_a_record_cut_inside_quotes(tmp_path):
    out = tmp_path / "r.csv"
    header = ",".join(COLUMNS)
    whole = "a.png,0.5,real,0.5,m,,\n"
    # a file name with a newline is quoted; the kill came right after that newline
    out.write_text(header + "\n" + whole + '"b\n')
    state = read_resume(out, "csv")
    assert state.done == {"a.png"}
    assert list(csv.reader(out.open(newline=""))) == [list(COLUMNS), ["a.png", "0.5", "real", "0.5", "m", "", ""]]


@pytest.mark.parametrize("fmt", ["json", "table"])
def test_resume_refuses_formats_that_cannot_append(tmp_path, fmt):
    with pytest.raises(ConfigError, match="--resume needs --format"):
        read_resume(tmp_path / "x", fmt)


def test_resume_skips_finished_inputs_and_matches_a_full_run(capsys, ckpt, folder, tmp_path):
    full, part = tmp_path / "full.jsonl", tmp_path / "part.jsonl"
    assert predict(capsys, folder, "-m", ckpt, "-f", "jsonl", "-b", "4", "-o", full)[0] == 1  # the corrupt file
    rows = jsonl(full)
    assert len(rows) == 11 and rows[-1]["error"]
    # what a run killed after its first batch leaves: 4 rows and half of the fifth
    part.write_text("".join(json.dumps(r) + "\n" for r in rows[:4]) + json.dumps(rows[4])[:30])
    code, err = predict(capsys, folder, "-m", ckpt, "-f", "jsonl", "-b", "4", "-o", part, "--resume")
    assert code == 1 and "4 already in" in err and "7 inputs" in err
    assert jsonl(part) == rows  # the batches were the full run's: identical probabilities
    # nothing left: a second resume scores nothing and keeps the file
    code, err = predict(capsys, folder, "-m", ckpt, "-f", "jsonl", "-o", part, "--resume")
    assert code == 0 and "nothing to score" in err and jsonl(part) == rows


def test_resume_csv_writes_one_header(capsys, ckpt, folder, tmp_path):
    full, part = tmp_path / "full.csv", tmp_path / "part.csv"
    predict(capsys, folder, "-m", ckpt, "-f", "csv", "-b", "4", "-o", full)
    lines = full.read_text().splitlines(keepends=True)
    part.write_text("".join(lines[:5]))  # the header and the first batch
    predict(capsys, folder, "-m", ckpt, "-f", "csv", "-b", "4", "-o", part, "--resume")
    assert part.read_text() == full.read_text()


def test_resume_parquet_adds_parts(capsys, ckpt, folder, tmp_path):
    try:
        import pyarrow.parquet as pq
    except ImportError:
        pq = None
    require(pq is not None, "pyarrow (the [ray] extra)", "pip install -e '.[dev,ray]'")
    out, ref = tmp_path / "scores.parquet", tmp_path / "ref.jsonl"
    predict(capsys, folder, "-m", ckpt, "-f", "jsonl", "-b", "4", "-o", ref)
    files = sorted(p for p in folder.iterdir())
    predict(capsys, *files[:5], "-m", ckpt, "-f", "parquet", "-b", "4", "-o", out)
    (out / ".part-1-000000.parquet.tmp").write_bytes(b"PAR1 half a part")  # a kill before the rename
    # without --resume an existing run is not overwritten
    code, err = predict(capsys, folder, "-m", ckpt, "-f", "parquet", "-o", out)
    assert code == 2 and "--resume" in err
    predict(capsys, folder, "-m", ckpt, "-f", "parquet", "-b", "4", "-o", out, "--resume")
    assert len(list(out.glob("part-*.parquet"))) == 2 and not list(out.glob(".part-*"))
    table = pq.read_table(out).to_pylist()
    expected = {r["path"]: r for r in jsonl(ref)}
    assert sorted(r["path"] for r in table) == sorted(expected)
    for r in table:
        assert r["probability"] == pytest.approx(expected[r["path"]]["probability"], abs=1e-6, nan_ok=True)
        assert r["error"] == expected[r["path"]]["error"] and r["notes"] == expected[r["path"]]["notes"]


def test_resume_refuses_rows_of_another_model(capsys, ckpt, folder, tmp_path):
    out = tmp_path / "r.jsonl"
    out.write_text(json.dumps({"path": "x.png", "model_id": "mpft-other"}) + "\n")
    code, err = predict(capsys, folder, "-m", ckpt, "-f", "jsonl", "-o", out, "--resume")
    assert code == 2 and "mpft-other" in err


def test_resume_needs_an_output(capsys, ckpt, folder):
    code, err = predict(capsys, folder, "-m", ckpt, "-f", "jsonl", "--resume")
    assert code == 2 and "--output" in err


# A real kill: the child scores one image per batch, slowed so the kill lands mid-run; SIGKILL gives
# it no chance to clean up. The resumed run must finish the rest and leave each input exactly once.
_SLOW_CHILD = """
import sys, time
from mpft.pipeline import Scorer
score = Scorer.score
def slow(self, *a, **k):
    time.sleep(0.15)
    return score(self, *a, **k)
Scorer.score = slow
from mpft.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.slow  # two subprocesses (~10-20 s on 2 busy cores)
def test_sigkill_mid_run_then_resume(capsys, ckpt, tmp_path):
    folder = fill_folder(tmp_path / "many", 60, w=40, h=36)
    out, ref = tmp_path / "killed.jsonl", tmp_path / "ref.jsonl"
    args = ["predict", str(folder), "-m", str(ckpt), "-f", "jsonl", "-b", "1", "-o", str(out)]
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    child = subprocess.Popen([sys.executable, "-c", _SLOW_CHILD, *args], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            if out.exists() and out.read_text().count("\n") >= 15:
                break
            assert child.poll() is None, "the run ended before it could be killed"
            time.sleep(0.02)
        else:
            pytest.fail("no rows appeared within 120 s")
        child.send_signal(signal.SIGKILL)
        child.wait(30)
    finally:
        if child.poll() is None:
            child.kill()
    done = out.read_text().count("\n")  # complete rows; a partial last one is cut by --resume
    assert 15 <= done < 60

    code, err = predict(capsys, folder, "-m", ckpt, "-f", "jsonl", "-b", "1", "-o", out, "--resume")
    assert code == 0, err
    assert f"{60 - done} inputs" in err and f"({done} already in" in err  # only the rest was scored
    predict(capsys, folder, "-m", ckpt, "-f", "jsonl", "-b", "1", "-o", ref)
    assert jsonl(out) == jsonl(ref)  # every input once, in order, same probabilities
