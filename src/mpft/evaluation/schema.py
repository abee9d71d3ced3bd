"""The data model of an evaluation report: provenance, metrics per condition, per-image scores.

Plain dataclasses with ``to_dict``/``from_dict`` (the JSON layout of metrics.json); the writers
live in :mod:`~mpft.evaluation.io`, :mod:`~mpft.evaluation.markdown`, :mod:`~mpft.evaluation.plots`
and :mod:`~mpft.evaluation.console`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from typing import Any

from mpft.decision import threshold_name
from mpft.errors import ConfigError, DataError
from mpft.evaluation.groups import RESERVED_ROWS
from mpft.evaluation.metrics import MEAN_METHOD, Metrics

__all__ = [
    "CLEAN",
    "SUMMARY_ROWS",
    "Condition",
    "EvalReport",
    "ReportMeta",
    "ScoreRow",
    "SkippedFile",
    "generator_names",
    "has_figure",
    "ordered_rows",
]

#: Name of the condition without any perturbation; the baseline of every comparison.
CLEAN = "clean"
#: The rows of a condition that are not generators ("mean", "overall").
SUMMARY_ROWS = RESERVED_ROWS


@dataclass
class SkippedFile:
    """An input file that was not scored, and why (e.g. "decode error: truncated")."""

    path: str
    reason: str


def _mpft_version() -> str:
    from mpft import __version__

    return __version__


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


# written by ReportMeta.to_dict for readers, recomputed on load
_DERIVED_META_KEYS = {"n_skipped", "skipped_by_reason"}


@dataclass
class ReportMeta:
    """Provenance of an evaluation run.

    ``thresholds`` maps a name (:mod:`mpft.decision`) to a threshold, e.g. ``{"uncalibrated": 0.5,
    "calibrated": 0.83}``;
    ``calibration`` may describe how the calibrated one was obtained. Set
    ``normalize_format_condition`` to the name of the condition that re-ran the clean data with
    file formats normalised (all images re-encoded the same way); the Markdown report then compares
    it against the clean condition. ``extra`` holds anything else worth recording.
    ``partial`` is None for a finished run; a run stopped early (Ctrl-C) says there how far it got,
    and every output marks it.
    """

    checkpoint: str | None = None
    model_id: str | None = None
    data_paths: list[str] = field(default_factory=list)
    thresholds: dict[str, float | None] = field(default_factory=dict)
    calibration: str | None = None
    seed: int | None = None
    limit: int | None = None
    real_pool: str | None = None
    normalize_format_condition: str | None = None
    mpft_version: str = field(default_factory=_mpft_version)
    created: str = field(default_factory=_now)
    skipped: list[SkippedFile] = field(default_factory=list)
    partial: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def skipped_by_reason(self) -> dict[str, int]:
        return dict(Counter(s.reason for s in self.skipped).most_common())

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["n_skipped"] = len(self.skipped)
        d["skipped_by_reason"] = self.skipped_by_reason
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ReportMeta:
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - names - _DERIVED_META_KEYS)
        if unknown:  # the rule of every settings block (mpft.config.from_dict): never dropped silently
            raise ConfigError(f"report meta: unknown keys {unknown}; valid keys: {sorted(names)}")
        kw = {k: v for k, v in d.items() if k in names}
        kw["skipped"] = [SkippedFile(**s) for s in d.get("skipped", [])]
        # reports written before mpft.decision named thresholds "fixed" and "stored"
        kw["thresholds"] = {threshold_name(k): v for k, v in (d.get("thresholds") or {}).items()}
        return cls(**kw)


@dataclass
class Condition:
    """Metrics of the test data under one condition ("clean", "jpeg:75", ...).

    ``rows`` is the output of :func:`mpft.evaluation.metrics.group_metrics`: one :class:`Metrics`
    per generator plus "mean" and "overall".
    """

    name: str
    perturbation: str | None
    rows: dict[str, Metrics]

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "perturbation": self.perturbation,
            "rows": {k: m.to_dict() for k, m in self.rows.items()},
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Condition:
        rows = {k: Metrics.from_dict(v) for k, v in d["rows"].items()}
        return cls(name=d["name"], perturbation=d.get("perturbation"), rows=rows)


@dataclass
class ScoreRow:
    """The score of one image under one condition."""

    path: str
    generator: str
    label: int
    score: float
    condition: str = CLEAN


@dataclass
class EvalReport:
    """Everything an evaluation produced: provenance, metrics per condition, optional per-image scores."""

    meta: ReportMeta
    conditions: list[Condition]
    scores: list[ScoreRow] | None = None

    def to_dict(self, *, include_scores: bool = False) -> dict[str, Any]:
        """JSON-safe dict. Per-image scores are left out unless asked (they go to scores.csv)."""
        d: dict[str, Any] = {
            "meta": self.meta.to_dict(),
            "mean_method": MEAN_METHOD,
            "conditions": [c.to_dict() for c in self.conditions],
        }
        if include_scores and self.scores is not None:
            d["scores"] = [asdict(r) for r in self.scores]
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> EvalReport:
        scores = [ScoreRow(**r) for r in d["scores"]] if d.get("scores") is not None else None
        return cls(
            meta=ReportMeta.from_dict(d.get("meta", {})),
            conditions=[Condition.from_dict(c) for c in d["conditions"]],
            scores=scores,
        )

    def condition(self, name: str | None = None) -> Condition:
        """The named condition; by default "clean", else the first one."""
        if not self.conditions:
            raise DataError("the report has no conditions")
        if name is None:
            return next((c for c in self.conditions if c.name == CLEAN), self.conditions[0])
        for c in self.conditions:
            if c.name == name:
                return c
        known = ", ".join(c.name for c in self.conditions)
        raise ConfigError(f"unknown condition {name!r}; the report has: {known}")


def ordered_rows(rows: Mapping[str, Metrics]) -> list[tuple[str, Metrics]]:
    """The generator rows in report order, then the summary rows ("mean", "overall")."""
    gens = [(k, m) for k, m in rows.items() if k not in SUMMARY_ROWS]
    return gens + [(k, rows[k]) for k in SUMMARY_ROWS if k in rows]


def generator_names(rows: Mapping[str, Metrics]) -> list[str]:
    """The generator rows' names (the summary rows left out)."""
    return [k for k in rows if k not in SUMMARY_ROWS]


def has_figure(rows: Mapping[str, Metrics], attr: str) -> bool:
    """Whether any row has ``attr`` (e.g. ``"threshold_cal"``): decides whether a column is shown."""
    return any(getattr(m, attr) is not None for m in rows.values())
