"""Fixtures for the server tests: a tiny random-weights detector, a fake detector, a live server.

Images in memory and bombs: tests.kit.image_bytes and tests.kit.png_bomb.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from mpft.detector import Detector, Prediction
from mpft.serve import ServeSettings
from tests.kit import tiny_checkpoint


@pytest.fixture(scope="session")
def serve_checkpoint(tmp_path_factory) -> Path:
    """A tiny LoRA checkpoint (random:tiny backbone, 32 px input) with the library's head init:
    every probability is near 0.5."""
    return tiny_checkpoint(tmp_path_factory.mktemp("serve-ckpt") / "tiny", "lora", head_std=None)


@pytest.fixture(scope="session")
def tiny_detector(serve_checkpoint) -> Detector:
    return Detector.load(serve_checkpoint)


class FakeDetector:
    """The Detector surface the server uses; ``gate`` lets a test hold predictions in flight.

    ``batches`` records the number of images of every ``predict`` call; ``delay_s`` is the
    cost of one call, whatever its size (what batching saves); with ``by_content`` each image's
    probability is derived from its bytes, so a test can tell whose result it got back.
    """

    def __init__(self, probability: float = 0.8, block: bool = False, delay_s: float = 0.0,
                 by_content: bool = False):
        self.model_id = "fake-model"
        self.threshold = 0.5
        self.max_pixels = 0
        self.probability = probability
        self.delay_s = delay_s
        self.by_content = by_content
        self.entered = threading.Event()
        self.gate = threading.Event()
        if not block:
            self.gate.set()
        self.calls = 0
        self.batches: list[int] = []

    def probability_of(self, data: bytes) -> float:
        return (zlib.crc32(data) % 1000) / 1000.0 if self.by_content else self.probability

    def predict(self, images, *, batch_size: int = 16) -> list[Prediction]:
        self.calls += 1
        self.batches.append(len(images))
        self.entered.set()
        if not self.gate.wait(timeout=30):
            raise TimeoutError("test gate never opened")
        if self.delay_s:
            time.sleep(self.delay_s)
        return [Prediction(f"<bytes {i}>", self.probability_of(x), "generated", self.threshold, self.model_id)
                for i, x in enumerate(images)]


@contextlib.contextmanager
def live_server(app, settings: ServeSettings | None = None) -> Iterator[str]:
    """Run ``app`` on 127.0.0.1 (a free port) in a thread, as ``mpft serve`` runs it; yield its base URL.

    ``settings`` gives the connection limits (timeouts, connection cap); the app's own by default.
    """
    import uvicorn

    from mpft.serve.server import uvicorn_config

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    port = sock.getsockname()[1]
    settings = settings or app.state.settings
    server = uvicorn.Server(uvicorn_config(app, settings, lifespan="on", timeout_graceful_shutdown=2))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            if time.monotonic() > deadline or not thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(15)
        sock.close()
