"""Settings dataclasses <-> plain dicts (config.json), with one error message for unknown keys."""

from __future__ import annotations

from dataclasses import MISSING, fields
from typing import Any, TypeVar

from mpft.errors import ConfigError

T = TypeVar("T")

# The uncalibrated decision threshold: probability >= 0.5 of "generated" means generated. A
# checkpoint may store another (calibrated) one; evaluation always reports figures at this one too.
DEFAULT_THRESHOLD = 0.5
# Default half-width of the "uncertain" verdict band around the threshold for a checkpoint that
# does not set one (the shipped detector stores its own, narrower band; see docs/predict.md).
DEFAULT_UNCERTAIN_BAND = 0.1


def from_dict(cls: type[T], data: dict[str, Any], what: str) -> T:
    """Build ``cls`` from a dict read from JSON: unknown keys are a ConfigError, lists become tuples."""
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"{what}: unknown keys {unknown}; valid keys: {sorted(known)}")
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})


def field_default(cls: type, name: str) -> Any:
    """The default of dataclass field ``name`` (its factory's value for a mutable default): what a
    CLI option that fills the field takes as its own default, so the default exists once."""
    for f in fields(cls):
        if f.name == name:
            if f.default is not MISSING:
                return f.default
            if f.default_factory is not MISSING:
                return f.default_factory()
            raise ConfigError(f"{cls.__name__}.{name} has no default")
    raise ConfigError(f"{cls.__name__} has no field {name!r}")


def kwarg_default(fn: Any, name: str) -> Any:
    """The default of keyword parameter ``name`` of ``fn``: a CLI option that fills it takes this."""
    import inspect

    param = inspect.signature(fn).parameters.get(name)
    if param is None or param.default is inspect.Parameter.empty:
        raise ConfigError(f"{getattr(fn, '__qualname__', fn)} has no parameter {name!r} with a default")
    return param.default
