"""The served detector, loaded once in a background thread so that ``/readyz`` means something."""

from __future__ import annotations

import io
import logging
import threading
import time
from collections.abc import Callable

from PIL import Image

from mpft.detector import Detector
from mpft.serve.settings import ServeSettings

__all__ = ["ModelState"]

log = logging.getLogger("mpft.serve.app")


class ModelState:
    """Loads the detector off the event loop; ``detector`` is set once it can serve.

    ``on_measured(n_images, seconds)`` receives the timed predictions made after warm-up (one
    image, then a small batch), which seed the queue's batch-cost line before the first request.
    """

    def __init__(self, loader: Callable[[], Detector], settings: ServeSettings,
                 on_measured: Callable[[int, float], None] | None = None):
        self._loader = loader
        self._settings = settings
        self._on_measured = on_measured
        self._lock = threading.Lock()
        self.detector: Detector | None = None
        self.error: str | None = None
        self.load_seconds: float | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._load, name="mpft-model-loader", daemon=True)
                self._thread.start()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until loading finished (either way); True when a detector is ready."""
        if self._thread is not None:
            self._thread.join(timeout)
        return self.detector is not None

    def _load(self) -> None:
        t0 = time.perf_counter()
        try:
            det = self._loader()
            # The header check and the decoder must agree on the pixel limit.
            det.max_pixels = self._settings.max_pixels
            if self._settings.warmup:
                # The first forward pass pays one-off costs (seconds on CPU); pay them before
                # /readyz says 200, not while a user's request waits in the queue.
                det.predict([_warmup_image()], batch_size=1)
                # Timed passes of two sizes give the queue a fixed and a per-image cost, so its
                # first expected waits are neither zero nor a batch-1 figure times n.
                for n in sorted({1, min(4, self._settings.batch_size)}):
                    t1 = time.perf_counter()
                    det.predict([_warmup_image()] * n, batch_size=n)
                    if self._on_measured is not None:
                        self._on_measured(n, time.perf_counter() - t1)
        except Exception as exc:  # noqa: BLE001 - reported through /readyz and the log, not raised
            self.error = f"{type(exc).__name__}: {exc}"
            log.error("model failed to load: %s", self.error)
            return
        self.load_seconds = time.perf_counter() - t0
        self.detector = det
        log.info("model %s ready in %.1f s", getattr(det, "model_id", "?"), self.load_seconds)


def _warmup_image() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (64, 48), (128, 96, 64)).save(buf, format="PNG")
    return buf.getvalue()
