"""Settings of the HTTP server, validated once when the app is built."""

from __future__ import annotations

from dataclasses import dataclass

from mpft.data.limits import DEFAULT_MAX_PIXELS
from mpft.errors import ConfigError

MIB = 1024 * 1024


@dataclass(frozen=True)
class ServeSettings:
    """Limits and behaviour of ``create_app`` and of the connections ``mpft serve`` accepts.

    Attributes:
        max_upload_bytes: cap on one request's body (all files plus multipart framing); larger -> 413.
        max_pixels: largest width * height accepted, read from the image header before decoding -> 422.
        max_files: most images in one ``/api/v1/predict`` request -> 413.
        max_concurrency: model calls (batches or explanations) running at once: the queue's workers.
        queue_timeout_s: the longest expected wait in the model queue a request is admitted with;
            a request that would wait longer gets 503 at once (0: only when the model is idle).
        retry_after_s: the smallest ``Retry-After`` sent with a 503.
        batch_size: most images in one forward pass; one batch may join several requests.
        batch_window_s: how long an idle model waits for more requests to join a batch.
        warmup: score one synthetic image after loading, before ``/readyz`` reports ready.
        header_timeout_s: a connection must deliver a request's headers within this many seconds
            of opening (or of its previous response), or it is closed (slow-header clients).
        body_timeout_s: a request's body must arrive within this many seconds of its headers -> 408.
        idle_timeout_s: a connection with no request in progress is closed after this many
            seconds without a byte.
        max_connections: open connections at once; one more gets 503 and is closed.
    """

    max_upload_bytes: int = 20 * MIB
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_files: int = 16
    max_concurrency: int = 1
    queue_timeout_s: float = 30.0
    retry_after_s: int = 1
    batch_size: int = 16
    batch_window_s: float = 0.01
    warmup: bool = True
    header_timeout_s: float = 10.0
    body_timeout_s: float = 60.0
    idle_timeout_s: float = 5.0
    max_connections: int = 64

    def __post_init__(self) -> None:
        checks = {
            "max_upload_bytes": (self.max_upload_bytes >= 1024, ">= 1024"),
            "max_pixels": (self.max_pixels >= 1, ">= 1"),
            "max_files": (self.max_files >= 1, ">= 1"),
            "max_concurrency": (self.max_concurrency >= 1, ">= 1"),
            "queue_timeout_s": (self.queue_timeout_s >= 0, ">= 0"),
            "retry_after_s": (self.retry_after_s >= 1, ">= 1"),
            "batch_size": (self.batch_size >= 1, ">= 1"),
            "batch_window_s": (0 <= self.batch_window_s <= 1, "in 0..1"),
            "header_timeout_s": (self.header_timeout_s > 0, "> 0"),
            "body_timeout_s": (self.body_timeout_s > 0, "> 0"),
            "idle_timeout_s": (self.idle_timeout_s > 0, "> 0"),
            "max_connections": (self.max_connections >= 1, ">= 1"),
        }
        bad = [(name, rule) for name, (ok, rule) in checks.items() if not ok]
        if bad:
            raise ConfigError(
                "invalid server settings: "
                + ", ".join(f"{n}={getattr(self, n)!r} (must be {rule})" for n, rule in bad)
            )

    @classmethod
    def from_mb(cls, max_upload_mb: float, **kwargs) -> ServeSettings:
        """Build settings with the upload cap given in MiB (what the CLI takes)."""
        if not max_upload_mb > 0:
            raise ConfigError(f"--max-upload-mb must be > 0, got {max_upload_mb}")
        return cls(max_upload_bytes=int(max_upload_mb * MIB), **kwargs)
