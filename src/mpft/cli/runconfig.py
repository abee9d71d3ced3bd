"""``--config run.json``: a command's options read from a JSON file; the command line still wins.

The file is one JSON object whose keys are the command's option names, with dashes or
underscores (``"batch-size": 32`` or ``"batch_size": 32``), and positional arguments by their
name (``"data": ["data/train"]``). It becomes click's ``default_map`` before any other option is
read, so every value goes through the same type conversion and checks as on the command line,
and an option given on the command line overrides the file. Unknown keys are an error naming the
valid ones (the rule of every settings block, :func:`mpft.config.from_dict`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from mpft.errors import ConfigError

_OPTION_NAME = "config"


def read_run_config(path: Path, valid: set[str], command: str) -> dict[str, Any]:
    """The option values in ``path`` with keys as parameter names; ConfigError for anything else."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"--config: {path} does not exist") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"--config: {path} is not a readable JSON file: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"--config: {path} must hold one JSON object of option names -> values")
    values = {str(k).lstrip("-").replace("-", "_"): v for k, v in data.items()}
    unknown = sorted(k for k in values if k not in valid)
    if unknown:
        raise ConfigError(
            f"--config: {path} has keys that are not options of `mpft {command}`: {unknown}; "
            f"valid keys: {sorted(valid)}"
        )
    return values


def _load(ctx: typer.Context, param: Any, value: Path | None) -> Path | None:
    if value is None:
        return None
    valid = {p.name for p in ctx.command.params if p.name and p.name != _OPTION_NAME and p.expose_value}
    values = read_run_config(value, valid, ctx.command.name or "")
    ctx.default_map = {**(ctx.default_map or {}), **values}
    return value


def config_option() -> Any:
    """The ``--config FILE`` option; add it to a command as ``config: Path | None = config_option()``."""
    return typer.Option(
        None,
        "--config",
        help="Read options from a JSON file ({\"option-name\": value, ...}, positional arguments by name); "
        "options on the command line override it.",
        is_eager=True,
        callback=_load,
        dir_okay=False,
        metavar="RUN.JSON",
    )
