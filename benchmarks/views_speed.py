"""Cost of multi-view scoring on a 12 MP photo: ``Detector.predict`` end to end (decode, views, forward,
combination) per view setting, relative to the single centre crop.

Target (issue 11): the default views cost at most 3x a single view on a 12 MP photo.

    python benchmarks/views_speed.py                      # the default detector, ~2 min
    python benchmarks/views_speed.py --quick              # random:tiny checkpoint, seconds (tests)
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]


def photo_12mp(path: Path, size: tuple[int, int] = (4000, 3000)) -> Path:
    """A photo-like 12 MP JPEG: smooth gradients plus sensor-like noise (q92, as phones save)."""
    w, h = size
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    base = np.stack([128 + 100 * np.sin(x / 700), 128 + 90 * np.cos(y / 500), 128 + 60 * np.sin((x + y) / 900)], -1)
    noise = np.random.default_rng(0).normal(0, 6, base.shape)
    Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8)).save(path, quality=92)
    return path


def time_predict(det, path: Path, repeats: int) -> float:
    det.predict(str(path))  # warm kernels and caches
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        det.predict(str(path))
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=None, help="checkpoint (default: the shipped detector)")
    ap.add_argument("--views", nargs="*", default=["center", "whole", "grid:2", "grid:2+whole", "grid:3+whole"])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    from mpft.detector import Detector

    with tempfile.TemporaryDirectory() as tmp:
        model = args.model
        size = (4000, 3000)
        if args.quick:
            sys.path.insert(0, str(REPO))
            from tests.kit import tiny_checkpoint

            model = tiny_checkpoint(Path(tmp) / "tiny")
            size, args.repeats = (800, 600), 2
        img = photo_12mp(Path(tmp) / "photo.jpg", size)
        rows = {}
        for spec in args.views:
            det = Detector.load(model, views=spec)
            det.max_pixels = max(det.max_pixels, size[0] * size[1])
            rows[spec] = time_predict(det, img, args.repeats)
    base = rows[args.views[0]]
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from machine import SPEED_FLAGS
    from mpft.precision import cpu_flags

    flags = " ".join(sorted(set(cpu_flags() or ()) & set(SPEED_FLAGS)))
    print(f"{size[0]}x{size[1]} JPEG, Detector.predict median of {args.repeats}; CPU flags: {flags}")
    print(f"{'views':<16}{'seconds':>10}{'x ' + args.views[0]:>12}")
    for spec, s in rows.items():
        print(f"{spec:<16}{s:>10.3f}{s / base:>12.2f}")
    if args.json:
        args.json.write_text(json.dumps({"seconds": rows, "ratio": {k: v / base for k, v in rows.items()},
                                         "cpu_flags": flags, "size": size}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
