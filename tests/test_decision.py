"""One decision type (threshold, band, source) and one set of threshold names."""

from __future__ import annotations

import json

import pytest

from mpft.config import DEFAULT_THRESHOLD, DEFAULT_UNCERTAIN_BAND
from mpft.decision import THRESHOLD_SOURCES, Decision, normalise_thresholds, threshold_name
from mpft.detectors import DEFAULT_DETECTOR_DIR
from mpft.errors import ConfigError


def test_verdicts_at_the_edges_of_the_band():
    d = Decision(0.3, 0.05, "calibrated")
    assert [d.verdict(p) for p in (0.0, 0.24, 0.26, 0.3, 0.34, 0.36, 1.0)] == [
        "real", "real", "uncertain", "uncertain", "uncertain", "generated", "generated"
    ]
    assert Decision(0.5, 0.0).verdict(0.5) == "generated"  # at the threshold: generated


def test_defaults_and_override():
    d = Decision()
    assert (d.threshold, d.band, d.source) == (DEFAULT_THRESHOLD, DEFAULT_UNCERTAIN_BAND, "uncalibrated")
    user = d.override(threshold=0.9)
    assert (user.threshold, user.source, user.band) == (0.9, "user", d.band)
    assert d.override(band=0.2).source == "uncalibrated"  # a new band does not change where the threshold came from


@pytest.mark.parametrize("kwargs,match", [
    ({"threshold": 1.5}, "probability in"), ({"threshold": float("nan")}, "probability in"),
    ({"band": 0.5}, r"\[0, 0.5\)"), ({"band": -0.1}, r"\[0, 0.5\)"), ({"source": "magic"}, "unknown threshold name"),
])
def test_bad_decisions_are_config_errors(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        Decision(**kwargs)


def test_old_names_read_as_the_current_ones():
    assert [threshold_name(n) for n in ("default", "fixed", "stored", "calibrated")] == [
        "uncalibrated", "uncalibrated", "calibrated", "calibrated"
    ]
    got = normalise_thresholds({"default": 0.5, "calibrated": {"value": 0.2, "target_fpr": 0.05}})
    assert got == {"uncalibrated": {"value": 0.5}, "calibrated": {"value": 0.2, "target_fpr": 0.05}}
    with pytest.raises(ConfigError, match="no value"):
        normalise_thresholds({"calibrated": {"how": "?"}})
    assert set(THRESHOLD_SOURCES) >= {"uncalibrated", "calibrated", "user", "oracle"}


def test_a_checkpoints_decision_is_named_after_its_thresholds_entry():
    cal = {"uncalibrated": {"value": 0.5}, "calibrated": {"value": 0.17}}
    assert Decision.from_checkpoint(0.17, 0.05, cal).source == "calibrated"
    assert Decision.from_checkpoint(0.5, 0.1, cal).source == "uncalibrated"
    assert Decision.from_checkpoint(0.5, 0.1, {}).source == "uncalibrated"
    assert Decision.from_checkpoint(0.7, 0.1, {}).source == "user"  # set by hand, e.g. update_config


def test_the_shipped_detector_uses_its_calibrated_threshold():
    cfg = json.loads((DEFAULT_DETECTOR_DIR / "config.json").read_text())
    d = Decision.from_checkpoint(cfg["threshold"], cfg["uncertain_band"], cfg["thresholds"])
    assert d.source == "calibrated" and d.threshold == cfg["thresholds"]["calibrated"]["value"]
    assert set(cfg["thresholds"]) <= set(THRESHOLD_SOURCES)


def test_detector_threshold_override_and_info(tmp_path):
    from mpft import Detector
    from tests.kit import tiny_checkpoint

    det = Detector.load(tiny_checkpoint(tmp_path / "ck", strategy="linear"))
    assert det.decision.source == "uncalibrated" and det.info()["decision"]["source"] == "uncalibrated"
    det.threshold = 0.8
    assert det.decision == Decision(0.8, det.uncertain_band, "user")
    assert det.verdict(0.79) == ("uncertain" if det.uncertain_band > 0.01 else "real")
    with pytest.raises(ConfigError):
        det.set_band(0.7)
