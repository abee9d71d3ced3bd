"""One JSON access-log line per request, with no filenames, query strings or content.

A pure ASGI middleware (not ``BaseHTTPMiddleware``): it does not buffer bodies and sees the
final status even when a handler fails.
"""

from __future__ import annotations

import json
import logging
import time
from datetime import UTC, datetime

from starlette.types import ASGIApp, Message, Receive, Scope, Send

ACCESS_LOGGER = "mpft.serve.access"
_log = logging.getLogger(ACCESS_LOGGER)

_SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"cache-control", b"no-store"),
]


def access_record(method: str, path: str, status: int, duration_ms: float, n_files: int | None) -> dict:
    """The fields of one access-log line (pure; the middleware serialises it)."""
    return {
        "ts": datetime.now(UTC).isoformat(timespec="milliseconds"),
        "method": method,
        "path": path,
        "status": status,
        "duration_ms": round(duration_ms, 2),
        "n_files": n_files,
    }


class AccessLogMiddleware:
    """Logs ``access_record`` as JSON on the ``mpft.serve.access`` logger; adds security headers.

    Handlers report how many files a request carried by setting ``request.state.n_files``.
    """

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500
        state = scope.setdefault("state", {})

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers", []))
                present = {k.lower() for k, _ in headers}
                headers += [(k, v) for k, v in _SECURITY_HEADERS if k not in present]
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            rec = access_record(
                scope.get("method", ""), scope.get("path", ""), status,
                (time.perf_counter() - start) * 1000.0, state.get("n_files"),
            )
            _log.info(json.dumps(rec, separators=(",", ":")))
