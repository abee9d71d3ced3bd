"""How a probability becomes a verdict: one decision type, one set of threshold names.

A :class:`Decision` is a threshold, the half-width of the "uncertain" band around it, and where
the threshold came from. The same names are used everywhere a threshold is named (a checkpoint's
``thresholds`` block, ``mpft eval`` reports, ``mpft predict`` / ``serve`` / ``Detector.info()``):

- ``uncalibrated``: the fixed 0.5 (:data:`mpft.config.DEFAULT_THRESHOLD`);
- ``calibrated``: chosen on real images at a target false-positive rate (stored in a checkpoint,
  or chosen by ``mpft eval --calibrate-on`` in that run);
- ``user``: given on the command line (``--threshold``) or set in code;
- ``oracle``: the best threshold on the test labels (``mpft eval --oracle``; a bound, never a
  decision to deploy).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

from mpft.config import DEFAULT_THRESHOLD, DEFAULT_UNCERTAIN_BAND
from mpft.errors import ConfigError

THRESHOLD_SOURCES = ("uncalibrated", "calibrated", "user", "oracle")
# names older checkpoints and reports used for the same things
_LEGACY_NAMES = {"default": "uncalibrated", "fixed": "uncalibrated", "stored": "calibrated"}
VERDICTS = ("generated", "real", "uncertain", "error")


def check_threshold(value: float, what: str = "threshold") -> float:
    """``value`` as a float if it is a probability in [0, 1]; ConfigError naming ``what`` otherwise."""
    v = float(value)
    if math.isnan(v) or not 0.0 <= v <= 1.0:
        raise ConfigError(f"{what} must be a probability in [0, 1], got {value}")
    return v


def check_band(value: float, what: str = "uncertain band") -> float:
    """``value`` as a float if it is a half-width in [0, 0.5); ConfigError naming ``what`` otherwise."""
    v = float(value)
    if math.isnan(v) or not 0.0 <= v < 0.5:
        raise ConfigError(f"{what} must be in [0, 0.5) (half-width around the threshold), got {value}")
    return v


def threshold_name(name: str) -> str:
    """The current name for a threshold name read from a file (``default``/``fixed`` -> ``uncalibrated``,
    ``stored`` -> ``calibrated``); ConfigError for a name that is neither."""
    name = _LEGACY_NAMES.get(name, name)
    if name not in THRESHOLD_SOURCES:
        raise ConfigError(f"unknown threshold name {name!r}; names are {THRESHOLD_SOURCES}")
    return name


@dataclass(frozen=True)
class Decision:
    """threshold: P(generated) at or above which an image is "generated"; band: |p - threshold| below
    which the verdict is "uncertain"; source: one of :data:`THRESHOLD_SOURCES`."""

    threshold: float = DEFAULT_THRESHOLD
    band: float = DEFAULT_UNCERTAIN_BAND
    source: str = "uncalibrated"

    def __post_init__(self) -> None:
        object.__setattr__(self, "threshold", check_threshold(self.threshold))
        object.__setattr__(self, "band", check_band(self.band))
        object.__setattr__(self, "source", threshold_name(self.source))

    def verdict(self, probability: float) -> str:
        """generated / real, or uncertain within ``band`` of the threshold."""
        if abs(probability - self.threshold) < self.band:
            return "uncertain"
        return "generated" if probability >= self.threshold else "real"

    def override(self, threshold: float | None = None, band: float | None = None) -> Decision:
        """A copy with a caller's threshold (then the source is ``user``) and/or band."""
        d = self
        if threshold is not None:
            d = replace(d, threshold=threshold, source="user")
        if band is not None:
            d = replace(d, band=band)
        return d

    def to_dict(self) -> dict[str, Any]:
        return {"threshold": self.threshold, "band": self.band, "source": self.source}

    @classmethod
    def from_checkpoint(cls, threshold: float, band: float, thresholds: dict[str, Any]) -> Decision:
        """The decision a checkpoint stores: its ``threshold``/``uncertain_band``, ``calibrated`` when its
        ``thresholds`` block has a calibrated entry of that value, ``uncalibrated`` at 0.5, else ``user``."""
        calibrated = normalise_thresholds(thresholds).get("calibrated")
        if calibrated is not None and float(calibrated["value"]) == float(threshold):
            source = "calibrated"
        else:
            source = "uncalibrated" if float(threshold) == DEFAULT_THRESHOLD else "user"
        return cls(threshold, band, source)


def normalise_thresholds(thresholds: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """A checkpoint's ``thresholds`` block with current names and ``{"value": ...}`` entries.

    Older files named the 0.5 entry ``default`` and wrote bare numbers; both still read.
    """
    out: dict[str, dict[str, Any]] = {}
    for name, entry in (thresholds or {}).items():
        item = dict(entry) if isinstance(entry, dict) else {"value": entry}
        if "value" not in item:
            raise ConfigError(f"threshold {name!r} has no value: {entry!r}")
        item["value"] = check_threshold(item["value"], f"threshold {name!r}")
        out[threshold_name(name)] = item
    return out
