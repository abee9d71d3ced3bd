"""Output locations are checked before any work (issue 13, item 6): `train --out`, `eval --out`,
`explain --out` and the backbone cache ($MPFT_HOME) fail at once with one line and exit code 2."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mpft.cli import main
from mpft.errors import ConfigError


@pytest.fixture
def blocker(tmp_path: Path) -> Path:
    """A regular file where a folder would have to be."""
    f = tmp_path / "results.txt"
    f.write_text("not a folder")
    return f


def _never(what: str):
    def fail(*args, **kwargs):
        raise AssertionError(f"{what} started before the output location was checked")

    return fail


def _one_line_exit_2(code: int, err: str, what: str) -> None:
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and what in lines[0] and "not a directory" in lines[0], err


def test_train_out_under_a_file(capsys, monkeypatch, blocker, tmp_path):
    import mpft.training

    monkeypatch.setattr(mpft.training, "train", _never("training"))
    code = main(["train", str(tmp_path), "--out", str(blocker / "run"), "--backbone", "random:tiny"])
    _one_line_exit_2(code, capsys.readouterr().err, "--out")


def test_eval_out_under_a_file(capsys, monkeypatch, blocker, tmp_path):
    import mpft.evaluation

    monkeypatch.setattr(mpft.evaluation, "evaluate", _never("scoring"))
    code = main(["eval", str(tmp_path), str(tmp_path), "--out", str(blocker / "report")])
    _one_line_exit_2(code, capsys.readouterr().err, "--out")


def test_explain_out_under_a_file(capsys, monkeypatch, blocker, tmp_path):
    from mpft.detector import Detector

    monkeypatch.setattr(Detector, "load", staticmethod(_never("loading the model")))
    code = main(["explain", str(blocker), "--out", str(blocker / "why.png")])
    _one_line_exit_2(code, capsys.readouterr().err, "--out")


def test_mpft_home_is_a_file(capsys, monkeypatch, blocker):
    from mpft.backbones import load_backbone, registry

    monkeypatch.setenv("MPFT_HOME", str(blocker))
    monkeypatch.setattr(registry, "fetch_b16", _never("the 78 MB download"))
    with pytest.raises(ConfigError, match="MPFT_HOME"):
        load_backbone("clip-vit-b16")
    capsys.readouterr()
    code = main(["backbone", "fetch", "clip-vit-b16"])
    _one_line_exit_2(code, capsys.readouterr().err, "MPFT_HOME")


# ---- the helpers --------------------------------------------------------------------------------
def test_require_writable_dir(tmp_path, blocker):
    from mpft.fsutil import require_writable_dir

    assert require_writable_dir(tmp_path / "new" / "deeper", "--out") == tmp_path / "new" / "deeper"
    assert not (tmp_path / "new").exists()  # checking creates nothing
    assert require_writable_dir(tmp_path, "--out") == tmp_path
    with pytest.raises(ConfigError, match="not a directory"):
        require_writable_dir(blocker, "--out")
    with pytest.raises(ConfigError, match="not a directory"):
        require_writable_dir(blocker / "a" / "b", "--out")
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    with pytest.raises(ConfigError, match="broken symbolic link"):
        require_writable_dir(tmp_path / "dangling" / "x", "--out")


def test_require_writable_file(tmp_path, blocker):
    from mpft.fsutil import require_writable_file

    assert require_writable_file(tmp_path / "sub" / "out.png", "--out") == tmp_path / "sub" / "out.png"
    assert require_writable_file(blocker, "--out") == blocker  # an existing file is overwritten
    with pytest.raises(ConfigError, match="is a directory"):
        require_writable_file(tmp_path, "--out")
    with pytest.raises(ConfigError, match="not a directory"):
        require_writable_file(blocker / "out.png", "--out")


@pytest.mark.skipif(os.geteuid() == 0 if hasattr(os, "geteuid") else True, reason="root may write anywhere")
def test_read_only_folder(tmp_path):
    from mpft.fsutil import require_writable_dir

    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        with pytest.raises(ConfigError, match="cannot create folders in"):
            require_writable_dir(ro / "run", "--out")
    finally:
        ro.chmod(0o755)
