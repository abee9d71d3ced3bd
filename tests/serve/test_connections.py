"""Slow, silent, numerous and vanishing clients against a real uvicorn on 127.0.0.1, raw sockets."""

from __future__ import annotations

import json
import logging
import socket
import time
from urllib.parse import urlsplit

import pytest

from mpft.serve import ServeSettings, create_app
from mpft.serve.middleware import ACCESS_LOGGER
from tests.serve.conftest import FakeDetector, live_server

# short limits so that each test takes seconds; every wait below is bounded
FAST = {"header_timeout_s": 1.0, "body_timeout_s": 1.0, "idle_timeout_s": 0.5, "warmup": False}
HEAD = ("POST /api/v1/predict HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        "Content-Type: multipart/form-data; boundary=B\r\nContent-Length: {n}\r\n\r\n")


def _connect(url: str) -> socket.socket:
    parts = urlsplit(url)
    return socket.create_connection((parts.hostname, parts.port), timeout=5)


def _read_until_closed(sock: socket.socket, limit_s: float) -> tuple[bytes, float | None]:
    """Everything the server sends and when it closed (seconds), or None if still open at ``limit_s``."""
    t0 = time.monotonic()
    data = b""
    while time.monotonic() - t0 < limit_s:
        sock.settimeout(max(0.05, limit_s - (time.monotonic() - t0)))
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            break
        except ConnectionResetError:
            return data, time.monotonic() - t0
        if not chunk:
            return data, time.monotonic() - t0
        data += chunk
    return data, None


@pytest.fixture
def server():
    app = create_app(lambda: FakeDetector(), ServeSettings(max_connections=3, **FAST))
    with live_server(app) as url:
        assert app.state.model.wait(10)
        yield url


def test_a_silent_connection_is_closed(server):
    with _connect(server) as s:
        data, closed = _read_until_closed(s, 4.0)
    assert closed is not None, "a connection that sent nothing was still open after 4 s"
    assert closed < 3.0


def test_a_header_trickle_is_cut_off_with_408(server):
    request = HEAD.format(n=10).encode() + b"x" * 10
    with _connect(server) as s:
        t0 = time.monotonic()
        data = b""
        closed = None
        # one byte every 0.2 s: never idle long enough for the idle timeout, never done
        for i in range(len(request)):
            try:
                s.sendall(request[i:i + 1])
            except (BrokenPipeError, ConnectionResetError):
                closed = time.monotonic() - t0
                break
            chunk, gone = _read_until_closed(s, 0.2)
            data += chunk
            if gone is not None or chunk:
                closed = time.monotonic() - t0
                break
            if time.monotonic() - t0 > 5:
                break
    assert closed is not None, "a client trickling its headers was still connected after 5 s"
    assert closed < 3.0
    if data:
        assert data.startswith(b"HTTP/1.1 408")


def test_a_stalled_body_gets_408_and_the_connection_closes(server):
    with _connect(server) as s:
        s.sendall(HEAD.format(n=50_000).encode() + b"--B\r\n" + b"y" * 1000)  # then nothing more
        data, closed = _read_until_closed(s, 5.0)
    assert closed is not None, "a client that stopped sending its body was still connected after 5 s"
    assert data.startswith(b"HTTP/1.1 408"), data[:200]
    body = json.loads(data.split(b"\r\n\r\n", 1)[1])
    assert "body not received within 1 s" in body["detail"]


def test_connections_beyond_the_cap_are_refused_with_503(server):
    held = [_connect(server) for _ in range(3)]
    try:
        time.sleep(0.1)  # the server has accepted all three
        with _connect(server) as extra:
            extra.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            data, closed = _read_until_closed(extra, 3.0)
        assert data.startswith(b"HTTP/1.1 503"), data[:200]
        assert b"retry-after" in data.lower()
        assert closed is not None
    finally:
        for s in held:
            s.close()
    time.sleep(0.2)
    with _connect(server) as s:  # below the cap again
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data, _ = _read_until_closed(s, 3.0)
    assert data.startswith(b"HTTP/1.1 200")


def test_a_keep_alive_connection_still_serves_several_requests(server):
    with _connect(server) as s:
        for _ in range(3):
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            s.settimeout(3)
            data = b""
            while not data.endswith(b'{"status":"ok"}'):
                chunk = s.recv(65536)
                assert chunk, f"closed after {data!r}"
                data += chunk
            assert data.startswith(b"HTTP/1.1 200")
            time.sleep(0.2)  # below the idle timeout


def test_a_client_that_disconnects_mid_upload_is_one_warning_not_a_500(caplog):
    app = create_app(lambda: FakeDetector(), ServeSettings(warmup=False))
    with caplog.at_level(logging.INFO), live_server(app) as url:
        assert app.state.model.wait(10)
        with _connect(url) as s:
            s.sendall(HEAD.format(n=200_000).encode() + b"--B\r\n" + b"z" * 20_000)
            time.sleep(0.2)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not any(r.name == ACCESS_LOGGER for r in caplog.records):
            time.sleep(0.05)
        time.sleep(0.2)  # anything else the server would log about it
    access = [json.loads(r.getMessage()) for r in caplog.records if r.name == ACCESS_LOGGER]
    assert [a["status"] for a in access] == [499]
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == [], [r.getMessage()[:200] for r in errors]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    msg = warnings[0].getMessage()
    assert "disconnected" in msg and "of 200000 bytes" in msg
    assert warnings[0].exc_info is None and "\n" not in msg
