"""The ``mpft`` command: argument parsing and output formatting only; logic lives in the library.

Exit codes: 0 success; 1 some inputs failed (e.g. unreadable images in ``predict``);
2 bad usage or settings; 3 data error; 4 backbone unavailable or corrupt; 5 checkpoint error;
6 server error; 130 interrupted.
"""

from __future__ import annotations

import logging

import click
import typer

from mpft import __version__
from mpft.errors import MpftError

app = typer.Typer(
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


@app.callback()
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


def _register() -> None:
    # each subcommand module adds itself to `app`; absent modules mean not-yet-built commands
    from mpft.cli import backbone, train  # noqa: F401

    for optional in ("eval", "predict", "explain", "serve"):
        try:
            __import__(f"mpft.cli.{optional}")
        except ModuleNotFoundError as exc:
            if exc.name != f"mpft.cli.{optional}":
                raise


_register()


try:  # typer >= 0.29 vendors its own click; usage errors come from either copy
    from typer._click.exceptions import ClickException as _TyperClickException

    _CLICK_ERRORS: tuple[type[Exception], ...] = (click.exceptions.ClickException, _TyperClickException)
except ImportError:  # pragma: no cover - older typer
    _CLICK_ERRORS = (click.exceptions.ClickException,)


def main(argv: list[str] | None = None) -> int:
    """Console entry point; turns mpft errors into messages and exit codes."""
    try:
        rv = app(args=argv, standalone_mode=False)
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
