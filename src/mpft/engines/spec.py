"""A detector as a picklable recipe: what to load and which decision overrides to apply.

The CLI loads its detector from it, and so does every Ray actor (each once), so all of them
score with the same model, views, precision and decision.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mpft.detector import Detector


@dataclass(frozen=True)
class DetectorSpec:
    """``Detector.load`` arguments plus ``--threshold``, ``--band`` and ``--max-pixels`` (None: the model's)."""

    model: str | None = None
    device: str = "cpu"
    precision: str = "fp32"
    views: str | None = None
    threshold: float | None = None
    band: float | None = None
    max_pixels: int | None = None

    def load(self) -> Detector:
        """The detector, loaded through ``Detector.load`` (the only loader), overrides applied."""
        from mpft.detector import Detector

        det = Detector.load(self.model, device=self.device, precision=self.precision, views=self.views)
        if self.threshold is not None:
            det.threshold = self.threshold
        if self.band is not None:
            det.set_band(self.band)
        if self.max_pixels is not None:
            det.max_pixels = self.max_pixels
        return det
