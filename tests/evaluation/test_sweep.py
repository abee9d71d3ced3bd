"""The robustness sweep reads condition labels with the one perturbation grammar (mpft.data.transforms)."""

from __future__ import annotations

import pytest

from mpft.data.transforms import PERTURBATION_KINDS, PRESETS, parse_perturbations
from mpft.evaluation.schema import Condition
from mpft.evaluation.sweep import HARSHER_WHEN_LARGER, condition_perturbation, parse_perturbation


@pytest.mark.parametrize(
    "spec", ["jpeg:95,75,50", "webp:80", "blur:0.5,1.5,3", "resize:0.5,0.25", "lowres:112,64", "crop:128", *PRESETS]
)
def test_report_labels_round_trip_through_the_transforms_parser(spec: str) -> None:
    # the runner names a condition Perturbation.name; the sweep must read back the same perturbation
    for p in parse_perturbations([spec]):
        assert condition_perturbation(Condition(p.name, p.name, {})) == p
        assert condition_perturbation(Condition(p.name, None, {})) == p  # label only, e.g. an older report
        assert parse_perturbation(Condition(p.name, p.name, {})) == (p.kind, float(p.value))


@pytest.mark.parametrize(
    "label",
    ["clean", "normalize:jpeg:95", "jpeg:95,75", *PRESETS, "noise:0.1", "jpeg:0", "blur:-1", "jpeg", "weird"],
)
def test_labels_that_are_not_one_perturbation_stay_out_of_the_sweep(label: str) -> None:
    assert condition_perturbation(Condition(label, None, {})) is None


def test_every_perturbation_kind_has_a_sweep_direction() -> None:
    assert set(HARSHER_WHEN_LARGER) == set(PERTURBATION_KINDS)
