"""Running the app with uvicorn, with the connection limits uvicorn lacks.

Uvicorn closes a keep-alive connection after ``timeout_keep_alive`` of silence between
requests, but nothing else: a client that opens a connection and sends nothing, or trickles
its headers a byte at a time, holds the connection forever, and there is no cap on open
connections (``limit_concurrency`` answers 503 only once a request's headers are complete,
so it does not stop a slow-header flood). :class:`GuardedH11Protocol` adds, per connection:

- idle timeout: no byte for ``idle_timeout_s`` while no request is in progress -> closed;
- header timeout: a request's headers must be complete ``header_timeout_s`` after the
  connection opened or the previous response finished -> ``408`` and closed;
- connection cap: beyond ``max_connections`` open connections a new one gets ``503`` and is closed.

The body timeout lives in the app (:func:`mpft.serve.upload.read_body_capped`), where the
body is read, so any ASGI server gets it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from mpft.serve.settings import ServeSettings

__all__ = ["GuardedH11Protocol", "guarded_protocol", "uvicorn_config"]

log = logging.getLogger("mpft.serve.server")

_LOG_EVERY_S = 10.0  # a flood of refused connections logs one line per this many seconds


def _raw_response(status: int, reason: str, detail: str) -> bytes:
    body = json.dumps({"detail": detail}).encode()
    head = (f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n"
            "connection: close\r\nx-content-type-options: nosniff\r\ncache-control: no-store\r\n")
    if status == 503:
        head += "retry-after: 1\r\n"
    return head.encode() + b"\r\n" + body


class _RateLimitedWarning:
    """One warning line per interval, with how many events it stands for."""

    def __init__(self) -> None:
        self._last = 0.0
        self._count = 0

    def __call__(self, msg: str, *args: Any) -> None:
        self._count += 1
        now = time.monotonic()
        if now - self._last >= _LOG_EVERY_S:
            log.warning(msg + " (%d such events since the last line)", *args, self._count)
            self._last = now
            self._count = 0


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol plus the idle/header timeouts and the connection cap above.

    Use :func:`guarded_protocol` to bind settings; the class attributes here are its defaults.
    """

    header_timeout_s: float = ServeSettings.header_timeout_s
    max_connections: int = ServeSettings.max_connections
    _refused_log = _RateLimitedWarning()
    _slow_log = _RateLimitedWarning()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._header_timer: asyncio.TimerHandle | None = None
        if len(self.connections) > self.max_connections:
            self._refused_log("connection limit (%d open connections) reached: refused a connection",
                              self.max_connections)
            transport.write(_raw_response(503, "Service Unavailable",
                                          f"server busy: {self.max_connections} connections are open; retry"))
            transport.close()
            return
        # A connection that never sends a byte is idle: uvicorn arms this timer only after a
        # response, so a silent new connection would otherwise stay open forever.
        self.timeout_keep_alive_task = self.loop.call_later(self.timeout_keep_alive, self.timeout_keep_alive_handler)
        self._arm_header_timer()

    def data_received(self, data: bytes) -> None:
        cycle = self.cycle
        super().data_received(data)
        if self.cycle is not cycle:  # a new request's headers are complete
            self._cancel_header_timer()

    def on_response_complete(self) -> None:
        cycle = self.cycle
        super().on_response_complete()
        # a pipelined request may already have started inside super(): its headers are complete
        if not self.transport.is_closing() and self.cycle is cycle:
            self._arm_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_header_timer()
        super().connection_lost(exc)

    def _arm_header_timer(self) -> None:
        self._cancel_header_timer()
        self._header_timer = self.loop.call_later(self.header_timeout_s, self._header_timeout)

    def _cancel_header_timer(self) -> None:
        timer = getattr(self, "_header_timer", None)
        if timer is not None:
            timer.cancel()
            self._header_timer = None

    def _header_timeout(self) -> None:
        self._header_timer = None
        if self.transport.is_closing():
            return
        self._slow_log("closed a connection that sent no complete request headers within %g s",
                       self.header_timeout_s)
        self._unset_keepalive_if_required()
        self.transport.write(_raw_response(
            408, "Request Timeout", f"request headers not received within {self.header_timeout_s:g} s"))
        self.transport.close()


def guarded_protocol(settings: ServeSettings) -> type[GuardedH11Protocol]:
    """A :class:`GuardedH11Protocol` subclass bound to ``settings`` (uvicorn builds one per connection)."""
    return type("BoundGuardedH11Protocol", (GuardedH11Protocol,), {
        "header_timeout_s": settings.header_timeout_s,
        "max_connections": settings.max_connections,
    })


def uvicorn_config(app: Any, settings: ServeSettings, **kwargs: Any) -> uvicorn.Config:
    """A uvicorn config for ``app`` with the connection limits of ``settings``; kwargs go to uvicorn."""
    kwargs.setdefault("log_config", None)
    kwargs.setdefault("access_log", False)
    kwargs.setdefault("server_header", False)
    return uvicorn.Config(app, http=guarded_protocol(settings), timeout_keep_alive=settings.idle_timeout_s,
                          **kwargs)
