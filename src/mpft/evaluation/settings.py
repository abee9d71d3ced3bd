"""The settings of an evaluation (what ``mpft eval`` / :func:`mpft.evaluation.evaluate` take), checked once.

:class:`EvalSettings` holds the options and their defaults; building one runs every cheap check, so
a typo fails before any model or image is loaded. :func:`plan_conditions` turns them into the
conditions to score (clean, each perturbation, format normalisation).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, fields, replace
from typing import Any

from mpft.data.transforms import Perturbation, parse_perturbations, parse_reencode
from mpft.errors import ConfigError
from mpft.evaluation.schema import CLEAN
from mpft.precision import precision_device
from mpft.tam import MASK_STRATEGIES, MaskConfig

__all__ = [
    "DEFAULT_SWEEP_N_BOOT",
    "NORMALIZE_PREFIX",
    "ConditionPlan",
    "EvalSettings",
    "parse_mask",
    "plan_conditions",
]

#: Bootstrap resamples for perturbed / format-normalised conditions unless ``sweep_n_boot`` is given.
DEFAULT_SWEEP_N_BOOT = 200
#: Name prefix of the format-normalised condition (``normalize:jpeg:95``).
NORMALIZE_PREFIX = "normalize:"


def parse_mask(spec: str | None, base: dict[str, Any]) -> MaskConfig | None:
    """Analysis-only masking at inference: ``"tam:0.5"``, ``"random:0.3"``, ``"tam"`` or ``"none"``.

    Args:
        spec: ``STRATEGY[:RATIO]``; None or "none" gives None (no masking).
        base: the checkpoint's mask settings; texture measure, temperature and application
            (and the ratio when ``spec`` names none) come from it.

    Raises:
        ConfigError: unknown strategy or bad ratio.
    """
    if spec is None:
        return None
    text = spec.strip().lower()
    strategy, sep, ratio_s = text.partition(":")
    if strategy not in MASK_STRATEGIES:
        raise ConfigError(
            f"bad --mask spec {spec!r}: strategy must be one of {', '.join(MASK_STRATEGIES)} (e.g. 'tam:0.5')"
        )
    if strategy == "none":
        return None
    cfg = dict(base)
    cfg["strategy"] = strategy
    if sep:
        try:
            cfg["ratio"] = float(ratio_s)
        except ValueError:
            raise ConfigError(f"bad --mask spec {spec!r}: {ratio_s!r} is not a ratio in [0, 1)") from None
    try:
        return MaskConfig.from_dict(cfg)
    except ConfigError as exc:
        raise ConfigError(f"bad --mask spec {spec!r}: {exc}") from None


@dataclass(frozen=True)
class EvalSettings:
    """The options of an evaluation; see :func:`mpft.evaluation.evaluate` for each one's meaning.

    Construction checks them (specs parse, numbers in range) and raises :class:`ConfigError`
    naming the option, in the order :func:`~mpft.evaluation.evaluate` always checked them.
    """

    layout: str = "auto"
    real: str | os.PathLike[str] | None = None
    calibrate_on: str | os.PathLike[str] | None = None
    target_fpr: float = 0.05
    oracle: bool = False
    perturb: tuple[str, ...] = ()
    normalize_format: str | None = None
    mask: str | None = None
    limit: int | None = None
    batch_size: int = 32
    workers: int = 0
    device: str = "auto"
    precision: str = "fp32"
    seed: int = 0
    n_boot: int = 1000
    sweep_n_boot: int | None = None
    views: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "perturb", tuple(self.perturb))
        if self.perturb:
            parse_perturbations(list(self.perturb))
        if self.normalize_format is not None:
            parse_reencode(self.normalize_format)
        if not (math.isfinite(self.target_fpr) and 0.0 <= self.target_fpr <= 1.0):
            raise ConfigError(f"--target-fpr must be in [0, 1], got {self.target_fpr}")
        if self.limit is not None and self.limit < 1:
            raise ConfigError(f"--limit must be >= 1, got {self.limit}")
        if self.n_boot < 0:
            raise ConfigError(f"--n-boot must be >= 0, got {self.n_boot}")
        if self.sweep_n_boot is not None and self.sweep_n_boot < 0:
            raise ConfigError(f"--sweep-n-boot must be >= 0, got {self.sweep_n_boot}")
        if self.batch_size < 1:
            raise ConfigError(f"--batch-size must be >= 1, got {self.batch_size}")
        parse_mask(self.mask, MaskConfig().to_dict())  # the spec's syntax; the checkpoint's settings come later
        precision_device(self.precision, self.device)

    @classmethod
    def with_options(cls, base: EvalSettings | None = None, **options: Any) -> EvalSettings:
        """``base`` (default: the defaults) with single options changed by name, checked again;
        an unknown name is a ConfigError naming the valid ones."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise ConfigError(f"evaluation settings: unknown options {unknown}; valid options: {sorted(known)}")
        if "perturb" in options:
            options["perturb"] = tuple(options["perturb"])
        return replace(base, **options) if base is not None else cls(**options)

    @property
    def perturbations(self) -> list[Perturbation]:
        """``perturb`` parsed (presets expanded, duplicates removed)."""
        return parse_perturbations(list(self.perturb)) if self.perturb else []

    @property
    def sweep_resamples(self) -> int:
        """Bootstrap resamples of the perturbed and normalised conditions (``sweep_n_boot`` or its default)."""
        return min(self.n_boot, DEFAULT_SWEEP_N_BOOT) if self.sweep_n_boot is None else self.sweep_n_boot

    @property
    def run_device(self) -> str:
        """The device asked for, adjusted to the precision (int8 runs on the CPU)."""
        return precision_device(self.precision, self.device)


@dataclass
class ConditionPlan:
    """One condition to score: its name, what is done to every image, and its bootstrap resamples."""

    name: str
    perturbation: Perturbation | None
    normalize_format: str | None
    n_boot: int


def plan_conditions(settings: EvalSettings) -> list[ConditionPlan]:
    """Clean first, then each perturbation, then the format-normalised condition when asked."""
    sweep = settings.sweep_resamples
    plans = [ConditionPlan(CLEAN, None, None, settings.n_boot)]
    plans += [ConditionPlan(p.name, p, None, sweep) for p in settings.perturbations]
    if settings.normalize_format is not None:
        name = f"{NORMALIZE_PREFIX}{settings.normalize_format}"
        plans.append(ConditionPlan(name, None, settings.normalize_format, sweep))
    return plans
