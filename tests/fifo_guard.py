"""A guard for tests that put named pipes (FIFOs) where code might read them.

Opening a FIFO for reading blocks until a writer appears, so a regression would hang the test
run. :func:`fifo_watchdog` plays that writer after a delay: a stuck reader is released (it reads
end-of-file), the test goes on and fails on ``guard.fired`` instead of hanging.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

if not hasattr(os, "mkfifo"):  # pragma: no cover - Windows
    pytest.skip("named pipes need a POSIX system", allow_module_level=True)


@dataclass
class Guard:
    fired: bool = False


def make_fifo(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    os.mkfifo(path)
    return path


@contextmanager
def fifo_watchdog(*fifos: Path, after: float = 5.0) -> Iterator[Guard]:
    """Release any reader blocked on ``fifos`` once ``after`` seconds have passed."""
    guard = Guard()
    stop = threading.Event()

    def run() -> None:
        if stop.wait(after):
            return
        while not stop.is_set():
            for fifo in fifos:
                try:
                    # succeeds only while some reader has the FIFO open (or is blocked opening it)
                    fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
                except OSError:
                    continue
                guard.fired = True
                os.close(fd)
            stop.wait(0.05)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield guard
    finally:
        stop.set()
        thread.join()
