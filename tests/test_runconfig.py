"""``--config run.json``: options from a file, the command line wins, unknown keys refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer

from mpft.cli.runconfig import config_option
from mpft.errors import ConfigError


def _app(seen: dict) -> typer.Typer:
    app = typer.Typer()

    @app.command("demo")
    def demo(
        data: list[Path] = typer.Argument(..., help="folders"),
        batch_size: int = typer.Option(16, "--batch-size"),
        resize: bool = typer.Option(False, "--resize/--no-resize"),
        perturb: list[str] = typer.Option([], "--perturb"),
        config: Path | None = config_option(),
    ) -> None:
        seen.update(data=[str(d) for d in data], batch_size=batch_size, resize=resize, perturb=list(perturb))

    @app.command("other")
    def other() -> None:  # a second command, so typer keeps "demo" as a subcommand name
        pass

    return app


def _run(tmp_path, content, *args):
    cfg = tmp_path / "run.json"
    cfg.write_text(content if isinstance(content, str) else json.dumps(content))
    seen: dict = {}
    _app(seen)(["demo", "--config", str(cfg), *args], standalone_mode=False)
    return seen


def test_file_values_are_used_and_converted(tmp_path):
    seen = _run(tmp_path, {"data": ["a", "b"], "batch-size": "8", "resize": True, "perturb": ["jpeg:90"]})
    assert seen == {"data": ["a", "b"], "batch_size": 8, "resize": True, "perturb": ["jpeg:90"]}


def test_the_command_line_overrides_the_file(tmp_path):
    seen = _run(tmp_path, {"data": ["a"], "batch_size": 8, "resize": True}, "c", "--batch-size", "4", "--no-resize")
    assert seen == {"data": ["c"], "batch_size": 4, "resize": False, "perturb": []}


def test_unknown_keys_and_bad_files_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match=r"not options of `mpft demo`: \['bach_size'\]; valid keys: \['batch-size'"):
        _run(tmp_path, {"data": ["a"], "bach_size": 8})
    with pytest.raises(ConfigError, match="not a readable JSON"):
        _run(tmp_path, "{oops")
    with pytest.raises(ConfigError, match="one JSON object"):
        _run(tmp_path, [1, 2])
    seen: dict = {}
    with pytest.raises(ConfigError, match="does not exist"):
        _app(seen)(["demo", "--config", str(tmp_path / "missing.json")], standalone_mode=False)


def test_a_bad_value_in_the_file_fails_like_on_the_command_line(tmp_path):
    from mpft.cli import _CLICK_ERRORS

    with pytest.raises(_CLICK_ERRORS) as info:  # click's own usage error: exit code 2 through mpft.cli.main
        _run(tmp_path, {"data": ["a"], "batch_size": "many"})
    assert "Invalid value for '--batch-size'" in info.value.format_message() and info.value.exit_code == 2


def test_mpft_train_and_eval_read_config_files(tmp_path, capsys):
    """The real commands: train from a file, then eval from a file with one option overridden."""
    from mpft.cli import main
    from tests.kit import genimage_tree

    data = genimage_tree(tmp_path / "data", n_per_class=4)
    run = tmp_path / "run"
    (tmp_path / "train.json").write_text(json.dumps({
        "data": [str(data)], "out": str(run), "backbone": "random:tiny", "tune": "linear", "epochs": 1,
        "batch-size": 4, "workers": 0, "device": "cpu", "mask": "none",
    }))
    assert main(["train", "--config", str(tmp_path / "train.json")]) == 0
    recorded = json.loads((run / "best" / "config.json").read_text())
    assert recorded["tune"]["strategy"] == "linear" and recorded["mask"]["strategy"] == "none"

    (tmp_path / "eval.json").write_text(json.dumps({
        "run": str(run), "data": [str(data)], "n-boot": 0, "limit": 2, "device": "cpu", "json": True,
        "out": str(tmp_path / "report"),
    }))
    capsys.readouterr()
    assert main(["eval", "--config", str(tmp_path / "eval.json"), "--limit", "3"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["meta"]["limit"] == 3  # the command line overrode the file's 2

    (tmp_path / "bad.json").write_text(json.dumps({"run": str(run), "data": [str(data)], "epochs": 2}))
    assert main(["eval", "--config", str(tmp_path / "bad.json")]) == 2  # train's option is not eval's
    assert "not options of `mpft eval`: ['epochs']" in capsys.readouterr().err
