"""Fixtures for the server tests: a tiny random-weights detector, images made in memory."""

from __future__ import annotations

import contextlib
import io
import socket
import struct
import threading
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mpft.detector import Detector, Prediction
from mpft.serve import ServeSettings


def _build_tiny_checkpoint(directory: Path) -> Path:
    from mpft.backbones.registry import load_backbone
    from mpft.checkpoint import DetectorConfig, save_checkpoint
    from mpft.data.transforms import PreprocessPolicy
    from mpft.model import DetectorModel, TuneConfig
    from mpft.tam import MaskConfig

    enc = load_backbone("random:tiny")
    tune = TuneConfig("lora")
    model = DetectorModel(enc, tune)
    cfg = DetectorConfig(
        backbone="random:tiny", backbone_sha256=enc.weights_sha256, tune=tune.to_dict(),
        mask=MaskConfig().to_dict(), preprocess=PreprocessPolicy(size=32).to_dict(),
    )
    return save_checkpoint(directory, model, cfg)


@pytest.fixture(scope="session")
def serve_checkpoint(tmp_path_factory) -> Path:
    """A tiny checkpoint directory (random:tiny backbone, 32 px input)."""
    return _build_tiny_checkpoint(tmp_path_factory.mktemp("serve-ckpt") / "tiny")


@pytest.fixture(scope="session")
def tiny_detector(serve_checkpoint) -> Detector:
    return Detector.load(serve_checkpoint)


def png_bytes(w: int = 40, h: int = 30, seed: int = 0, fmt: str = "PNG") -> bytes:
    """Random-noise image encoded in memory."""
    arr = np.random.default_rng(seed).integers(0, 256, size=(h, w, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format=fmt)
    return buf.getvalue()


def _chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def png_bomb(width: int = 100_000, height: int = 100_000) -> bytes:
    """A valid PNG header declaring width x height pixels, with (far too little) pixel data."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 1024)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


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
