"""``--config run.json``: a command's options read from a JSON file; the command line still wins.

The file is one JSON object whose keys are the command's long option names without the dashes,
as ``--help`` shows them (``"batch-size": 32``; ``"batch_size"`` also reads), and positional
arguments by their name (``"data": ["data/train"]``). It becomes click's ``default_map`` before any other option is
read, so every value goes through the same type conversion and checks as on the command line,
and an option given on the command line overrides the file. Unknown keys are an error naming the
valid ones (the rule of every settings block, :func:`mpft.config.from_dict`).

A command that can repeat a run (``mpft train``) also reads a checkpoint's ``config.json`` (or the
checkpoint's folder, or a run folder: its ``last/`` checkpoint): its recorded ``training.settings``
become the option values, through the command's own converter (``from_checkpoint``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
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


def _read_json(path: Path) -> Any:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"--config: {path} does not exist") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"--config: {path} is not a readable JSON file: {exc}") from exc


def read_run_config(path: Path, keys: dict[str, str], command: str) -> dict[str, Any]:
    """The option values in ``path`` keyed by parameter name; ConfigError for anything else.

    ``keys``: the accepted file keys (dashes; underscores also accepted) -> parameter names.
    """
    return _option_values(_read_json(path), path, keys, command)


def _option_values(data: Any, path: Path, keys: dict[str, str], command: str) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise ConfigError(f"--config: {path} must hold one JSON object of option names -> values")
    unknown = sorted(str(k) for k in data if _key(str(k)) not in keys)
    if unknown:
        raise ConfigError(
            f"--config: {path} has keys that are not options of `mpft {command}`: {unknown}; "
            f"valid keys: {sorted(keys)}"
        )
    return {keys[_key(str(k))]: v for k, v in data.items()}


def checkpoint_config_file(path: Path) -> Path:
    """``path`` itself, a checkpoint folder's ``config.json``, or a run folder's ``last/config.json``."""
    path = Path(path)
    if not path.is_dir():
        return path
    for candidate in (path / "config.json", path / "last" / "config.json"):
        if candidate.is_file():
            return candidate
    raise ConfigError(f"--config: {path} is a folder without config.json or last/config.json")


def recorded_settings(data: Any) -> dict | None:
    """The ``training.settings`` a checkpoint's config.json recorded, or None for a plain options file."""
    if isinstance(data, dict) and isinstance(data.get("training"), dict):
        settings = data["training"].get("settings")
        if isinstance(settings, dict):
            return settings
    return None


def config_option(from_checkpoint: Callable[[dict], dict[str, Any]] | None = None) -> Any:
    """The ``--config FILE`` option; add it to a command as ``config: Path | None = config_option()``.

    ``from_checkpoint``: recorded training settings -> option values (parameter names); with it, a
    checkpoint's config.json, its folder or a run folder is accepted too.
    """

    def load(ctx: typer.Context, param: Any, value: Path | None) -> Path | None:
        if value is None:
            return None
        path = checkpoint_config_file(value) if from_checkpoint is not None else value
        data = _read_json(path)
        settings = recorded_settings(data) if from_checkpoint is not None else None
        if settings is not None:
            values = from_checkpoint(settings)
        elif from_checkpoint is not None and isinstance(data, dict) and "backbone_sha256" in data:
            raise ConfigError(
                f"--config: the checkpoint {path} records no training settings (training.settings): it was not "
                "trained by `mpft train`, so there is no run to repeat"
            )
        else:
            values = _option_values(data, path, option_keys(ctx.command.params), ctx.command.name or "")
        ctx.default_map = {**(ctx.default_map or {}), **values}
        return value

    return typer.Option(
        None,
        "--config",
        help="Read options from a JSON file ({\"option-name\": value, ...}, positional arguments by name)"
        + ("; or repeat a run from a checkpoint's config.json (its folder, or a run folder: last/)"
           if from_checkpoint is not None else "")
        + "; options on the command line override it.",
        is_eager=True,
        callback=load,
        dir_okay=from_checkpoint is not None,
        metavar="RUN.JSON",
    )
