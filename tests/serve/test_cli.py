"""``mpft serve`` argument handling: fast failures with the documented exit codes."""

from __future__ import annotations

import socket

from typer.testing import CliRunner

from mpft.cli import app, main


def test_help_lists_the_options():
    out = CliRunner().invoke(app, ["serve", "--help"], terminal_width=200).output
    for opt in ("--model", "--host", "--port", "--max-upload-mb", "--max-pixels", "--max-concurrency",
                "--workers-threads", "--queue-timeout", "--batch-size", "--batch-window-ms", "--header-timeout",
                "--body-timeout", "--idle-timeout", "--max-connections"):
        assert opt in out


def test_missing_model_is_a_checkpoint_error(tmp_path, capsys):
    assert main(["serve", "--model", str(tmp_path / "nope"), "--port", "0"]) == 5
    assert "checkpoint directory not found" in capsys.readouterr().err


def test_bad_limits_are_usage_errors(serve_checkpoint):
    assert main(["serve", "--model", str(serve_checkpoint), "--max-concurrency", "0"]) == 2
    assert main(["serve", "--model", str(serve_checkpoint), "--max-upload-mb", "0"]) == 2
    for opt in ("--header-timeout", "--body-timeout", "--idle-timeout", "--max-connections", "--batch-size"):
        assert main(["serve", "--model", str(serve_checkpoint), opt, "0"]) == 2, opt


def test_taken_port_is_a_serve_error(serve_checkpoint, capsys):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        assert main(["serve", "--model", str(serve_checkpoint), "--port", str(port)]) == 6
    assert f"127.0.0.1:{port}" in capsys.readouterr().err
