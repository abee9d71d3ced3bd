"""Cold start of ``mpft predict`` (issue 19, item 4): wall times of fresh processes, as a user sees them.

Prints:
  1. ``mpft predict ONE.jpg`` (the shipped detector, its default views), ``--runs`` fresh processes;
  2. where one cold run's time goes (import torch, import mpft's predict path, Detector.load, scoring);
  3. ``N`` ImageNet photos: ``mpft predict --views center`` against a plain UnivFD-style script
     (benchmarks/peer_univfd.py: torch + transformers + the same weights, a simple loop), both whole
     processes, and ``mpft predict --views center --precision auto`` (bf16 where the CPU has it).

    python benchmarks/cold_start.py                       # ~3-5 min on 2 cores
    python benchmarks/cold_start.py --runs 1 --photos 4   # smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
PHOTOS = HERE.parent.parent / "shared" / "data" / "imagenet_samples" / "nature"

_PHASES = r"""
import sys, time
t0 = time.perf_counter()
import torch
t1 = time.perf_counter()
from mpft.cli import main  # noqa
from mpft.detector import Detector
t2 = time.perf_counter()
det = Detector.load()
t3 = time.perf_counter()
det.predict([sys.argv[1]])
t4 = time.perf_counter()
print({"import_torch": t1 - t0, "import_mpft": t2 - t1, "detector_load": t3 - t2, "first_predict": t4 - t3})
"""


def mpft_command() -> list[str]:
    """The installed console script beside this interpreter (what users run), else ``python -m mpft``."""
    exe = Path(sys.executable).with_name("mpft")
    return [str(exe)] if exe.is_file() else [sys.executable, "-m", "mpft"]


def wall(cmd: list[str], cpu: list[float] | None = None) -> float:
    """Wall seconds of ``cmd``; its CPU seconds (user + sys) appended to ``cpu``: on a shared machine
    the CPU time says what the run costs, the wall time what the other processes left it."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    dt = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if cpu is not None:
        cpu.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    return dt


def load_average() -> float | None:
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else None


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=5, help="fresh processes for the one-image time")
    ap.add_argument("--photos", type=int, default=96, help="ImageNet photos for the peer comparison")
    ap.add_argument("--photo-dir", type=Path, default=PHOTOS)
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args(argv)

    photos = sorted(p for p in args.photo_dir.iterdir() if p.is_file())[: args.photos]
    one = str(photos[0])
    mpft = mpft_command()
    sys.path.insert(0, str(HERE))
    from machine import cpu_description

    out: dict = {"machine": {"cpu": cpu_description(), "cpus": os.cpu_count(),
                             "load_average_before": load_average()}}
    print("machine:", out["machine"]["cpu"])

    wall(mpft + ["predict", one])  # page cache warm: "cold" means a new process, not a cold disk
    cpu: list[float] = []
    runs = [wall(mpft + ["predict", one], cpu) for _ in range(args.runs)]
    out["one_image_s"] = {"runs": runs, "median": statistics.median(runs), "min": min(runs), "cpu_s": cpu}
    print(f"mpft predict one.jpg (default views), {args.runs} fresh processes: median {statistics.median(runs):.2f} s, "
          f"min {min(runs):.2f} s  ({', '.join(f'{r:.2f}' for r in runs)}); CPU time median "
          f"{statistics.median(cpu):.2f} s")

    phases = subprocess.run([sys.executable, "-c", _PHASES, one], check=True, capture_output=True, text=True)
    out["phases_s"] = eval(phases.stdout.strip().splitlines()[-1])  # noqa: S307 - our own child's dict literal
    print("  one cold run: " + ", ".join(f"{k} {v:.2f} s" for k, v in out["phases_s"].items()))

    names = [str(p) for p in photos]
    cpu = []
    peer = wall([sys.executable, str(HERE / "peer_univfd.py"), *names], cpu)
    ours = wall(mpft + ["predict", *names, "--views", "center", "-f", "jsonl"], cpu)
    auto = wall(mpft + ["predict", *names, "--views", "center", "-f", "jsonl", "--precision", "auto"], cpu)
    out["photos"] = {"n": len(names), "peer_s": peer, "mpft_center_fp32_s": ours, "mpft_center_auto_s": auto,
                     "speedup_fp32": peer / ours, "speedup_auto": peer / auto,
                     "cpu_s": dict(zip(("peer", "mpft_center_fp32", "mpft_center_auto"), cpu, strict=True))}
    print(f"{len(names)} ImageNet photos, whole processes: peer script {peer:.1f} s; mpft predict --views center "
          f"{ours:.1f} s (x{peer / ours:.2f}); with --precision auto {auto:.1f} s (x{peer / auto:.2f}); "
          f"CPU s: peer {cpu[0]:.1f}, mpft {cpu[1]:.1f}, auto {cpu[2]:.1f}")
    out["machine"]["load_average_after"] = load_average()
    print(f"load average (1 min) before/after: {out['machine']['load_average_before']:.2f} / "
          f"{out['machine']['load_average_after']:.2f} on {os.cpu_count()} cores")
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
