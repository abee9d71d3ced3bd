"""The ``mpft`` command: argument parsing and output formatting only; logic lives in the library.

Exit codes: 0 success; 1 some inputs failed (e.g. unreadable images in ``predict``);
2 bad usage or settings; 3 data error; 4 backbone unavailable or corrupt; 5 checkpoint error;
6 server error; 130 interrupted.
"""

from __future__ import annotations

import importlib
import logging
import sys

import click
import typer

from mpft import __version__
from mpft.errors import MpftError

# Subcommand modules register on ``_app``; ``mpft.cli.app`` (module __getattr__) is the whole CLI with every
# command. ``main`` imports only the module of the command it runs: each pulls in heavy libraries
# (torch, transformers, fastapi) that the others do not need, and start-up time is the user's.
_app = typer.Typer(
    name="mpft",
    help="Detect AI-generated images with MPFT: CLIP fine-tuned with Texture-Aware Masking.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"mpft {__version__}")
        raise typer.Exit()


@_app.callback()
def _root(
    verbose: int = typer.Option(0, "--verbose", "-v", count=True, help="More log output (-vv for debug)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Only warnings and errors."),
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Show the version."
    ),
) -> None:
    level = logging.WARNING if quiet else (logging.DEBUG if verbose > 1 else logging.INFO)
    from rich.console import Console
    from rich.logging import RichHandler

    logging.basicConfig(
        level=level,
        format="%(message)s",
        handlers=[RichHandler(console=Console(stderr=True), show_path=verbose > 1, show_time=False)],
        force=True,
    )
    if verbose < 2:
        for noisy in ("httpx", "urllib3", "PIL", "matplotlib"):
            logging.getLogger(noisy).setLevel(logging.WARNING)


COMMANDS = ("predict", "train", "eval", "explain", "serve", "backbone")


def _register(names: tuple[str, ...] = COMMANDS) -> None:
    for name in names:
        importlib.import_module(f"mpft.cli.{name}")


def __getattr__(name: str):
    if name == "app":
        _register()
        return _app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _command_of(argv: list[str]) -> str | None:
    """The subcommand ``argv`` runs (the root options take no values), or None (help, version)."""
    return next((a for a in argv if not a.startswith("-")), None)


try:  # typer >= 0.29 vendors its own click; usage errors come from either copy
    from typer._click.exceptions import ClickException as _TyperClickException

    _CLICK_ERRORS: tuple[type[Exception], ...] = (click.exceptions.ClickException, _TyperClickException)
except ImportError:  # pragma: no cover - older typer
    _CLICK_ERRORS = (click.exceptions.ClickException,)


def main(argv: list[str] | None = None) -> int:
    """Console entry point; turns mpft errors into messages and exit codes."""
    command = _command_of(sys.argv[1:] if argv is None else list(argv))
    _register((command,) if command in COMMANDS else COMMANDS)
    try:
        rv = _app(args=argv, standalone_mode=False)
    except click.exceptions.Abort:
        typer.echo("interrupted", err=True)
        return 130
    except _CLICK_ERRORS as exc:
        exc.show()
        return exc.exit_code
    except MpftError as exc:
        typer.secho(f"error: {exc}", err=True, fg="red")
        return exc.exit_code
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        return 130
    return rv if isinstance(rv, int) else 0
