"""``--config run.json``: a command's options read from a JSON file; the command line still wins.

The file is one JSON object whose keys are the command's long option names without the dashes,
as ``--help`` shows them (``"batch-size": 32``; ``"batch_size"`` also reads), and positional
arguments by their name (``"data": ["data/train"]``). It becomes click's ``default_map`` before any other option is
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


def _key(name: str) -> str:
    return name.lstrip("-").replace("_", "-")


def option_keys(params: list[Any]) -> dict[str, str]:
    """File key -> parameter name: each option's long names as shown by ``--help`` without the
    dashes (``batch-size``, ``json`` for ``--json``), and arguments by their name (``data``)."""
    keys: dict[str, str] = {}
    for p in params:
        if not p.name or p.name == _OPTION_NAME or not p.expose_value:
            continue
        longs = [o for o in getattr(p, "opts", []) if o.startswith("--")]
        for name in longs or [p.name]:
            keys[_key(name)] = p.name
    return keys


def read_run_config(path: Path, keys: dict[str, str], command: str) -> dict[str, Any]:
    """The option values in ``path`` keyed by parameter name; ConfigError for anything else.

    ``keys``: the accepted file keys (dashes; underscores also accepted) -> parameter names.
    """
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"--config: {path} does not exist") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"--config: {path} is not a readable JSON file: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"--config: {path} must hold one JSON object of option names -> values")
    unknown = sorted(str(k) for k in data if _key(str(k)) not in keys)
    if unknown:
        raise ConfigError(
            f"--config: {path} has keys that are not options of `mpft {command}`: {unknown}; "
            f"valid keys: {sorted(keys)}"
        )
    return {keys[_key(str(k))]: v for k, v in data.items()}


def _load(ctx: typer.Context, param: Any, value: Path | None) -> Path | None:
    if value is None:
        return None
    values = read_run_config(value, option_keys(ctx.command.params), ctx.command.name or "")
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
