"""Tests of ``mpft eval``: output, --json, the unquoted --perturb form and exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mpft.cli import main
from mpft.cli.eval import split_perturb_args


def test_split_perturb_args(tmp_path: Path) -> None:
    existing = tmp_path / "blur:1"
    existing.mkdir()
    data, specs = split_perturb_args(["d1", "blur:1,2,3", "genimage-degraded", str(existing)], ["jpeg:95,75"])
    assert data == ["d1", str(existing)]  # an existing folder stays data even if it looks like a spec
    assert specs == ["jpeg:95,75", "blur:1,2,3", "genimage-degraded"]
    # without --perturb nothing moves; several specs may share one quoted value
    assert split_perturb_args(["d1", "blur:1"], []) == (["d1", "blur:1"], [])
    assert split_perturb_args(["d1"], ["jpeg:95 blur:2"]) == (["d1"], ["jpeg:95", "blur:2"])


def test_split_perturb_args_judges_specs_with_the_transforms_grammar() -> None:
    # what moves to --perturb is exactly what parse_perturbations accepts (one grammar)
    data, specs = split_perturb_args(["d1", "WebP:80", "resize:0.5,0.25", "lowres:64", "d2"], ["blur:1"])
    assert (data, specs) == (["d1", "d2"], ["blur:1", "WebP:80", "resize:0.5,0.25", "lowres:64"])
    # not a perturbation in that grammar: left as DATA (evaluate then reports the missing folder)
    assert split_perturb_args(["d1", "site:2024", "jpeg:0"], ["blur:1"]) == (["d1", "site:2024", "jpeg:0"], ["blur:1"])


def test_eval_json_table_and_unquoted_perturb(
    eval_checkpoint: Path, ufd_tree: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "rep"
    args = ["eval", str(eval_checkpoint.parent), str(ufd_tree), "--out", str(out), "--limit", "2",
            "--n-boot", "0", "--device", "cpu", "--json"]
    assert main(args) == 0
    stdout = capsys.readouterr().out
    doc = json.loads(stdout)
    assert doc == json.loads((out / "metrics.json").read_text())
    assert [c["name"] for c in doc["conditions"]] == ["clean"]
    assert doc["meta"]["checkpoint"] == str(eval_checkpoint)

    out2 = tmp_path / "rep2"
    args = ["eval", str(eval_checkpoint), str(ufd_tree), "--perturb", "jpeg:90", "blur:1,2",
            "--out", str(out2), "--limit", "1", "--n-boot", "0", "--device", "cpu", "--oracle"]
    assert main(args) == 0
    stdout = capsys.readouterr().out
    assert "mpft evaluation: clean" in stdout and "oracle" in stdout
    assert "3 more conditions" in stdout
    doc = json.loads((out2 / "metrics.json").read_text())
    assert [c["name"] for c in doc["conditions"]] == ["clean", "jpeg:90", "blur:1", "blur:2"]
    assert doc["meta"]["data_paths"] == [str(ufd_tree)]


def test_eval_skipped_files_warn_but_succeed(
    eval_checkpoint: Path, eval_tree: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "rep"
    rc = main(["eval", str(eval_checkpoint), str(eval_tree), "--out", str(out), "--limit", "7",
               "--n-boot", "0", "--device", "cpu"])
    assert rc == 0
    assert "1 files skipped" in capsys.readouterr().err
    meta = json.loads((out / "metrics.json").read_text())["meta"]
    assert meta["n_skipped"] == 1 and meta["skipped"][0]["path"].endswith("broken.png")


@pytest.mark.parametrize(
    ("case", "code"),
    [
        ("missing-data", 3),
        ("missing-checkpoint", 5),
        ("bad-perturb", 2),
        ("bad-normalize", 2),
        ("bad-fpr", 2),
    ],
)
def test_eval_exit_codes(
    case: str, code: int, eval_checkpoint: Path, ufd_tree: Path, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    ckpt, data, extra = str(eval_checkpoint), str(ufd_tree), []
    if case == "missing-data":
        data = str(tmp_path / "no-such-data")
    elif case == "missing-checkpoint":
        ckpt = str(tmp_path / "no-such-run")
    elif case == "bad-perturb":
        extra = ["--perturb", "jpeg:101"]
    elif case == "bad-normalize":
        extra = ["--normalize-format", "gif"]
    else:
        extra = ["--target-fpr", "1.5"]
    rc = main(["eval", ckpt, data, "--out", str(tmp_path / "o"), "--device", "cpu", *extra])
    assert rc == code
    err = capsys.readouterr().err
    assert "error:" in err
    assert not (tmp_path / "o").exists()  # nothing written on failure
