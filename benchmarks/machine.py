"""The machine a benchmark figure came from: CPU model and the SIMD flags that decide its speed.

The CPU varies between this project's machines (AVX2 only on one, AVX512-BF16 + AMX on another), so
every timing records this next to its numbers.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

from mpft.precision import cpu_flags

SPEED_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16")


def cpu_description() -> str:
    """E.g. ``Intel(R) Xeon(R) Processor, 2 cores (amx_bf16 avx2 avx512_bf16 avx512_vnni avx512f)``."""
    name = platform.processor() or platform.machine()
    try:
        text = Path("/proc/cpuinfo").read_text()
        name = next((ln.split(":", 1)[1].strip() for ln in text.splitlines() if ln.startswith("model name")), name)
    except OSError:
        pass
    flags = sorted(set(cpu_flags() or ()) & set(SPEED_FLAGS))
    return f"{name}, {os.cpu_count()} cores ({' '.join(flags)})"
