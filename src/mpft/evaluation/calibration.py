"""The decision thresholds of an evaluation: the uncalibrated 0.5, plus the checkpoint's or one calibrated here.

With ``--calibrate-on`` the threshold flags ``--target-fpr`` of those real images
(:func:`~mpft.evaluation.thresholds.threshold_at_fpr`); without it, a checkpoint whose stored
threshold differs from the fixed one is reported at both.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from mpft.checkpoint import DetectorConfig
from mpft.config import DEFAULT_THRESHOLD
from mpft.data.samples import Sample
from mpft.errors import DataError
from mpft.evaluation.scoring import Scored, strip_source
from mpft.evaluation.settings import EvalSettings
from mpft.evaluation.thresholds import threshold_at_fpr

if TYPE_CHECKING:
    from mpft.detector import Detector

log = logging.getLogger(__name__)

__all__ = ["Calibration", "ScoreSamples", "calibrate"]

#: ``score(samples, desc)``: the scores of these images (None on torchrun ranks other than 0).
ScoreSamples = Callable[[list[Sample], str], Scored | None]


@dataclass
class Calibration:
    """The second threshold of a report, if any, and where it came from."""

    #: Calibrated or stored threshold; None when only the fixed threshold is reported.
    threshold: float | None = None
    #: Its name in ``meta.thresholds`` (:mod:`mpft.decision` names): "calibrated" (``--calibrate-on``, or the
    #: checkpoint's calibrated threshold) or "user" (a checkpoint threshold set by hand).
    key: str | None = None
    #: How it was obtained (``meta.calibration``).
    note: str | None = None
    #: Calibration images that could not be read: path -> reason.
    skipped: dict[str, str] = field(default_factory=dict)

    def thresholds(self) -> dict[str, float | None]:
        """``meta.thresholds``: the uncalibrated threshold, then this one when there is one."""
        out: dict[str, float | None] = {"uncalibrated": DEFAULT_THRESHOLD}
        if self.threshold is not None and self.key is not None:
            out[self.key] = self.threshold
        return out


def calibrate(
    detector: Detector, cal_samples: list[Sample] | None, settings: EvalSettings, score: ScoreSamples
) -> Calibration:
    """The report's second threshold: from ``cal_samples`` (the reals of ``--calibrate-on``), else stored.

    Raises:
        KeyboardInterrupt: Ctrl-C while calibrating (no test image is scored yet: nothing to report).
        DataError: none of the calibration images could be read.
    """
    if cal_samples is None:
        if detector.threshold == DEFAULT_THRESHOLD:
            return Calibration()
        return Calibration(detector.threshold, detector.decision.source, _stored_threshold_note(detector.config))
    got = score(cal_samples, "calibrating")
    cal = Calibration(key="calibrated")
    if got is None:  # a torchrun rank other than 0: rank 0 calibrates and reports
        return cal
    if got.interrupted:
        log.warning("interrupted while calibrating: nothing written")
        raise KeyboardInterrupt
    for i, reason in sorted(got.errors.items()):
        path = str(cal_samples[i].path)
        cal.skipped[path] = f"calibration: {strip_source(path, reason)}"
    ok = got.scores[~np.isnan(got.scores)]
    if ok.size == 0:
        raise DataError(f"--calibrate-on {settings.calibrate_on}: none of its real images could be read")
    cal.threshold = threshold_at_fpr(ok, settings.target_fpr)
    cal.note = (
        f"threshold_at_fpr on {ok.size} real images of {settings.calibrate_on} "
        f"at target FPR {100 * settings.target_fpr:g}%"
    )
    return cal


def _stored_threshold_note(config: DetectorConfig) -> str:
    how = None
    for entry in (config.thresholds or {}).values():
        if isinstance(entry, dict) and entry.get("value") == config.threshold:
            how = entry.get("how")
            break
    return f"stored in the checkpoint ({how})" if how else "stored in the checkpoint"
