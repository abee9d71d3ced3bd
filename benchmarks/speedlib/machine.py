"""The machine a figure was measured on: the fingerprint that makes cached figures comparable."""

from __future__ import annotations

import contextlib
import os
import platform
from pathlib import Path

import torch


def machine_fingerprint() -> dict:
    """What makes figures comparable: a cached figure from another machine is measured again."""
    cpu = platform.processor()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "host": platform.node(),
    }
