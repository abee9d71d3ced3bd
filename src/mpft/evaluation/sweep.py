"""The robustness sweep's order: perturbed conditions grouped by kind, from clean to harshest.

A condition's perturbation is read back with the grammar of :func:`mpft.data.transforms.parse_perturbations`
(the one that made it), so a report's labels and ``--perturb`` specs cannot drift apart.
"""

from __future__ import annotations

import logging

from mpft.data.transforms import PRESETS, Perturbation, parse_perturbations
from mpft.errors import ConfigError
from mpft.evaluation.schema import CLEAN, Condition, EvalReport

log = logging.getLogger(__name__)

__all__ = ["condition_perturbation", "parse_perturbation", "sweep_conditions"]

#: Direction of increasing degradation per perturbation kind, so a sweep reads clean -> harshest.
#: True: a larger value is harsher (blur sigma); False: a smaller value is harsher (JPEG quality).
HARSHER_WHEN_LARGER: dict[str, bool] = {
    "blur": True,
    "jpeg": False,
    "webp": False,
    "resize": False,
    "lowres": False,
    "crop": False,
}


def condition_perturbation(cond: Condition) -> Perturbation | None:
    """The single perturbation a condition applied (read from its ``perturbation``, else its name), else None.

    Clean, format-normalised, preset or multi-value labels are not one perturbation and give None.
    """
    for text in (cond.perturbation, cond.name):
        if not text or text.strip().lower() in PRESETS:
            continue
        try:
            parsed = parse_perturbations([text])
        except ConfigError:
            continue
        if len(parsed) == 1:
            return parsed[0]
    return None


def parse_perturbation(cond: Condition) -> tuple[str, float] | None:
    """``(kind, strength)`` of a "kind:value" condition (e.g. "jpeg:75" -> ("jpeg", 75.0)), else None."""
    p = condition_perturbation(cond)
    return None if p is None else (p.kind, float(p.value))


def sweep_conditions(report: EvalReport) -> tuple[Condition | None, dict[str, list[tuple[float, Condition]]]]:
    """Baseline (clean) condition and, per perturbation kind, ``(strength, condition)`` from mild to harsh."""
    skip = {report.meta.normalize_format_condition}
    clean = next((c for c in report.conditions if c.name == CLEAN and c.name not in skip), None)
    kinds: dict[str, list[tuple[float, Condition]]] = {}
    for c in report.conditions:
        if c.name in skip or c.name == CLEAN:
            continue
        parsed = parse_perturbation(c)
        if parsed is None:
            log.info("condition %r is not a 'kind:strength' perturbation; left out of the sweep", c.name)
            continue
        kinds.setdefault(parsed[0], []).append((parsed[1], c))
    for kind, items in kinds.items():
        items.sort(key=lambda it: it[0], reverse=not HARSHER_WHEN_LARGER.get(kind, True))
    return clean, kinds
