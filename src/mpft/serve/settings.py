"""Settings of the HTTP server, validated once when the app is built."""

from __future__ import annotations

from dataclasses import dataclass

from mpft.data.images import DEFAULT_MAX_PIXELS
from mpft.errors import ConfigError

MIB = 1024 * 1024


@dataclass(frozen=True)
class ServeSettings:
    """Limits and behaviour of ``create_app``.

    Attributes:
        max_upload_bytes: cap on one request's body (all files plus multipart framing); larger -> 413.
        max_pixels: largest width * height accepted, read from the image header before decoding -> 422.
        max_files: most images in one ``/api/v1/predict`` request -> 413.
        max_concurrency: model calls (predict or explain) running at once; more -> 503.
        acquire_timeout_s: how long a request waits for a free model slot before its 503.
        retry_after_s: the ``Retry-After`` value sent with every 503.
        batch_size: images scored per forward pass inside one request.
        warmup: score one synthetic image after loading, before ``/readyz`` reports ready.
    """

    max_upload_bytes: int = 20 * MIB
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_files: int = 16
    max_concurrency: int = 2
    acquire_timeout_s: float = 0.1
    retry_after_s: int = 1
    batch_size: int = 8
    warmup: bool = True

    def __post_init__(self) -> None:
        checks = {
            "max_upload_bytes": self.max_upload_bytes >= 1024,
            "max_pixels": self.max_pixels >= 1,
            "max_files": self.max_files >= 1,
            "max_concurrency": self.max_concurrency >= 1,
            "acquire_timeout_s": self.acquire_timeout_s >= 0,
            "retry_after_s": self.retry_after_s >= 1,
            "batch_size": self.batch_size >= 1,
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            limits = {"max_upload_bytes": ">= 1024", "acquire_timeout_s": ">= 0"}
            raise ConfigError(
                "invalid server settings: "
                + ", ".join(f"{n}={getattr(self, n)!r} (must be {limits.get(n, '>= 1')})" for n in bad)
            )

    @classmethod
    def from_mb(cls, max_upload_mb: float, **kwargs) -> ServeSettings:
        """Build settings with the upload cap given in MiB (what the CLI takes)."""
        if not max_upload_mb > 0:
            raise ConfigError(f"--max-upload-mb must be > 0, got {max_upload_mb}")
        return cls(max_upload_bytes=int(max_upload_mb * MIB), **kwargs)
