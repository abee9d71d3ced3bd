"""Load test of ``mpft serve``: a bounded burst of good and malformed uploads over loopback.

Starts the server (a tiny random-weights detector, the shipped one with ``--model default``, or a
checkpoint directory) in a subprocess on 127.0.0.1, waits for /readyz, then sends --requests
requests from this process with --clients concurrent httpx clients. Each request is one of: a
valid image, several images, a text file named .png, a truncated PNG, a body over the upload
cap, an empty file, a decompression-bomb header. Prints counts per kind and status, latency
percentiles, scored images per second, the server's batching counters (from /readyz), its
peak RSS (VmHWM) and a JSON summary (last line of stdout).

Exit status: 0 when every response had the status its kind allows (200 or the intended 503
for model work, unless --fail-on-503; 413/415/422 for the malformed kinds), 1 otherwise (any
other status, any transport error, an access-log mismatch, or the server dying), 2 on bad
arguments.

    python benchmarks/load_serve.py                      # 300 requests, 16 clients, tiny model
    python benchmarks/load_serve.py --requests 40 --clients 3
    python benchmarks/load_serve.py --model default --requests 200 --fail-on-503
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import random
import re
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

HOST = "127.0.0.1"  # loopback only, by design
PREDICT = "/api/v1/predict"
MODEL_KINDS = ("valid", "multi", "truncated")
# what each kind may legitimately get back
EXPECTED = {
    "valid": {200, 503},
    "multi": {200, 503},
    "truncated": {200, 503},
    "text": {415},
    "oversized": {413},
    "empty": {422},
    "bomb": {422},
}
# one cycle of request kinds: mostly real work, every malformed kind present in any 10 requests
CYCLE = ["valid", "valid", "valid", "multi", "text", "truncated", "oversized", "empty", "bomb", "valid"]


# ---- payloads ------------------------------------------------------------------------------------

def noise_image(w: int, h: int, seed: int, fmt: str = "PNG") -> bytes:
    arr = np.random.default_rng(seed).integers(0, 256, size=(h, w, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format=fmt)
    return buf.getvalue()


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def png_bomb(width: int = 100_000, height: int = 100_000) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", zlib.compress(b"\0" * 512))
            + _png_chunk(b"IEND", b""))


def _ext(data: bytes) -> str:
    return "jpg" if data.startswith(b"\xff\xd8") else "png"


def build_payloads(cap_bytes: int, seed: int) -> dict[str, list[list[tuple[str, bytes, str]]]]:
    """A few variants per kind; each variant is the list of (filename, data, declared type) to upload."""
    valid = [noise_image(w, h, seed + i, fmt) for i, (w, h, fmt) in
             enumerate([(64, 48, "PNG"), (320, 240, "JPEG"), (224, 224, "PNG"), (500, 375, "JPEG")])]
    truncated = noise_image(128, 128, seed + 10)
    # noise PNGs are incompressible: width*height*3 bytes is about the file size
    side = int((cap_bytes * 1.2 / 3) ** 0.5) + 8
    oversized = noise_image(side, side, seed + 11)
    assert len(oversized) > cap_bytes
    return {
        "valid": [[(f"img{i}.{_ext(v)}", v, "image/png")] for i, v in enumerate(valid)],
        "multi": [[(f"m{j}.png", valid[(i + j) % len(valid)], "image/png") for j in range(n)]
                  for i, n in enumerate((2, 3))],
        "text": [[("notes.png", b"this is a text file, not an image\n" * 20, "image/png")]],
        "truncated": [[("cut.png", truncated[: len(truncated) // 3], "image/png")]],
        "oversized": [[("huge.png", oversized, "image/png")]],
        "empty": [[("empty.png", b"", "image/png")]],
        "bomb": [[("bomb.png", png_bomb(), "image/png")]],
    }


# ---- server --------------------------------------------------------------------------------------

def build_tiny_checkpoint(directory: Path) -> Path:
    from mpft.backbones.registry import load_backbone
    from mpft.checkpoint import DetectorConfig, save_checkpoint
    from mpft.data.transforms import PreprocessPolicy
    from mpft.model import TuneConfig, create_model
    from mpft.tam import MaskConfig

    enc = load_backbone("random:tiny")
    tune = TuneConfig("lora")
    cfg = DetectorConfig(backbone="random:tiny", backbone_sha256=enc.weights_sha256, tune=tune.to_dict(),
                         mask=MaskConfig().to_dict(), preprocess=PreprocessPolicy(size=32).to_dict())
    return save_checkpoint(directory, create_model(enc, tune), cfg)


class Server:
    """``python -m mpft serve`` on 127.0.0.1, port chosen by the OS; stderr drained in a thread."""

    def __init__(self, model: Path | None, args: argparse.Namespace):
        cmd = [sys.executable, "-m", "mpft", "-q", "serve", "--host", HOST, "--port", "0",
               "--max-upload-mb", str(args.max_upload_mb)]
        if model is not None:  # None: the shipped detector
            cmd += ["--model", str(model)]
        # unset options keep the server's defaults, which are what a user gets
        for opt, value in (("--max-concurrency", args.max_concurrency), ("--queue-timeout", args.queue_timeout),
                           ("--batch-size", args.batch_size), ("--batch-window-ms", args.batch_window_ms),
                           ("--precision", args.precision)):
            if value is not None:
                cmd += [opt, str(value)]
        if args.threads:
            cmd += ["--workers-threads", str(args.threads)]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.port: int | None = None
        self.access: list[dict] = []
        self.other_lines: list[str] = []
        self._port_seen = threading.Event()
        self._reader = threading.Thread(target=self._drain, daemon=True)
        self._reader.start()

    def _drain(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            m = re.search(r"mpft serve: http://127\.0\.0\.1:(\d+)/", line)
            if m:
                self.port = int(m.group(1))
                self._port_seen.set()
                continue
            try:
                rec = json.loads(line)
            except ValueError:
                rec = None
            if isinstance(rec, dict) and "status" in rec:
                self.access.append(rec)
            else:
                self.other_lines.append(line.rstrip("\n"))
        self._port_seen.set()

    def wait_ready(self, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        if not self._port_seen.wait(timeout) or self.port is None:
            raise RuntimeError("server did not start:\n" + "\n".join(self.other_lines[-20:]))
        url = f"http://{HOST}:{self.port}"
        with httpx.Client(base_url=url, timeout=5) as c:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError("server exited:\n" + "\n".join(self.other_lines[-20:]))
                try:
                    if c.get("/readyz").status_code == 200:
                        return url
                except httpx.TransportError:
                    pass
                time.sleep(0.1)
        raise RuntimeError(f"server not ready within {timeout:.0f} s")

    def queue_stats(self, url: str) -> dict:
        """The server's batching counters (``/readyz`` ``queue``); empty if it does not report them."""
        try:
            with httpx.Client(base_url=url, timeout=5) as c:
                return c.get("/readyz").json().get("queue", {})
        except (httpx.HTTPError, ValueError):
            return {}

    def memory_kb(self) -> dict[str, int]:
        out = {}
        try:
            for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
                key, _, value = line.partition(":")
                if key in ("VmHWM", "VmRSS"):
                    out[key] = int(value.split()[0])
        except OSError:
            pass
        return out

    def stop(self) -> int | None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._reader.join(5)
        return self.proc.returncode


# ---- client --------------------------------------------------------------------------------------

@dataclass
class Outcome:
    kind: str
    status: int | None  # None: transport error
    latency_ms: float
    problem: str | None = None
    scored: int = 0  # images with a probability in a 200 response


def check_body(kind: str, n_files: int, resp: httpx.Response) -> str | None:
    """What is wrong with a response whose status was allowed; None when it is as intended."""
    try:
        body = resp.json()
    except ValueError:
        return f"{kind}: {resp.status_code} body is not JSON"
    if resp.status_code != 200:
        if not isinstance(body, dict) or not isinstance(body.get("detail"), str):
            return f"{kind}: {resp.status_code} without a JSON detail"
        if resp.status_code == 503 and "retry-after" not in resp.headers:
            return f"{kind}: 503 without Retry-After"
        return None
    results = body.get("results", [])
    if len(results) != n_files:
        return f"{kind}: {len(results)} results for {n_files} files"
    errors = [r["error"] for r in results]
    if kind == "truncated" and errors[0] is None:
        return "truncated: no per-file error"
    if kind != "truncated" and any(e is not None for e in errors):
        return f"{kind}: unexpected per-file error {errors}"
    return None


def run_load(url: str, plan: list[tuple[str, list]], clients: int, deadline: float,
             req_timeout: float, fail_on_503: bool = False) -> list[Outcome]:
    local = threading.local()

    def one(item: tuple[str, list]) -> Outcome | None:
        kind, parts = item
        if time.monotonic() > deadline:
            return None  # over the time budget: not sent
        if not hasattr(local, "client"):
            local.client = httpx.Client(base_url=url, timeout=req_timeout)
        t0 = time.perf_counter()
        try:
            resp = local.client.post(PREDICT, files=[("files", p) for p in parts])
        except httpx.HTTPError as exc:
            ms = (time.perf_counter() - t0) * 1000
            return Outcome(kind, None, ms, f"{kind}: {type(exc).__name__}: {exc}")
        ms = (time.perf_counter() - t0) * 1000
        if resp.status_code not in EXPECTED[kind] or (fail_on_503 and resp.status_code == 503):
            return Outcome(kind, resp.status_code, ms, f"{kind}: unexpected status {resp.status_code}: "
                                                       f"{resp.text[:200]}")
        problem = check_body(kind, len(parts), resp)
        scored = 0
        if resp.status_code == 200 and problem is None:
            scored = sum(r.get("probability") is not None for r in resp.json()["results"])
        return Outcome(kind, resp.status_code, ms, problem, scored)

    with ThreadPoolExecutor(max_workers=clients, thread_name_prefix="client") as pool:
        outcomes = [o for o in pool.map(one, plan) if o is not None]
    return outcomes


def percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    arr = np.asarray(values)
    return {f"p{q}": round(float(np.percentile(arr, q)), 1) for q in (50, 90, 99)} | {
        "max": round(float(arr.max()), 1), "mean": round(float(arr.mean()), 1)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="tiny",
                    help="tiny (random-weights, 32 px; the default), default (the shipped detector) "
                         "or a checkpoint directory")
    ap.add_argument("--requests", type=int, default=300, help="requests to send (1..5000)")
    ap.add_argument("--clients", type=int, default=16, help="concurrent clients (1..32)")
    ap.add_argument("--max-upload-mb", type=float, default=1.0, help="server upload cap (small: cheap 413s)")
    ap.add_argument("--max-concurrency", type=int, help="server model workers (default: the server's)")
    ap.add_argument("--queue-timeout", type=float, help="server queue timeout, s (default: the server's)")
    ap.add_argument("--batch-size", type=int, help="server images per forward pass (default: the server's)")
    ap.add_argument("--batch-window-ms", type=float, help="server batch window (default: the server's)")
    ap.add_argument("--precision", help="server --precision (default: the server's)")
    ap.add_argument("--fail-on-503", action="store_true", help="count any 503 as a problem (exit 1)")
    ap.add_argument("--threads", type=int, default=0, help="server torch threads (0: torch's default)")
    ap.add_argument("--time-budget", type=float, default=180.0, help="stop sending after this many seconds")
    ap.add_argument("--ready-timeout", type=float, default=120.0, help="seconds to wait for /readyz")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, help="also write the summary here")
    args = ap.parse_args(argv)
    if not 1 <= args.requests <= 5000 or not 1 <= args.clients <= 32:
        ap.error("--requests must be in 1..5000 and --clients in 1..32")

    cap = int(args.max_upload_mb * 1024 * 1024)
    payloads = build_payloads(cap, args.seed)
    rng = random.Random(args.seed)
    kinds = [CYCLE[i % len(CYCLE)] for i in range(args.requests)]
    rng.shuffle(kinds)
    plan = [(k, rng.choice(payloads[k])) for k in kinds]

    with tempfile.TemporaryDirectory(prefix="mpft-load-") as tmp:
        if args.model == "tiny":
            model: Path | None = build_tiny_checkpoint(Path(tmp) / "tiny")
        else:
            model = None if args.model == "default" else Path(args.model)
        server = Server(model, args)
        problems: list[str] = []
        try:
            t_start = time.monotonic()
            url = server.wait_ready(args.ready_timeout)
            ready_s = time.monotonic() - t_start
            mem_ready = server.memory_kb()
            t0 = time.perf_counter()
            outcomes = run_load(url, plan, args.clients, time.monotonic() + args.time_budget, req_timeout=120,
                                fail_on_503=args.fail_on_503)
            wall = time.perf_counter() - t0
            time.sleep(0.3)  # let the last access lines arrive
            mem_end = server.memory_kb()
            queue = server.queue_stats(url)
            alive = server.proc.poll() is None
        finally:
            rc = server.stop()
    if not alive:
        problems.append(f"server died during the run (exit {rc})")

    by_status = Counter(str(o.status) for o in outcomes)
    by_kind = {k: dict(Counter(str(o.status) for o in outcomes if o.kind == k)) for k in EXPECTED}
    problems += [o.problem for o in outcomes if o.problem]
    load_access = [a for a in server.access if a.get("path") == PREDICT]
    if len(load_access) != len(outcomes):
        problems.append(f"{len(outcomes)} requests but {len(load_access)} access-log lines for {PREDICT}")
    leaked = [line for line in server.access + [{"x": x} for x in server.other_lines]
              if any(n in json.dumps(line) for n in ("img0.png", "notes.png", "cut.png", "huge.png"))]
    if leaked:
        problems.append(f"filenames appear in the server log: {leaked[:2]}")

    ok_lat = [o.latency_ms for o in outcomes if o.status == 200 and o.kind in MODEL_KINDS]
    scored = sum(o.scored for o in outcomes)
    summary = {
        "requests_planned": args.requests,
        "requests_sent": len(outcomes),
        "clients": args.clients,
        "model": "tiny (random:tiny, 32 px)" if args.model == "tiny" else str(args.model),
        "server": {"max_upload_mb": args.max_upload_mb, "max_concurrency": args.max_concurrency,
                   "queue_timeout_s": args.queue_timeout, "batch_size": args.batch_size,
                   "batch_window_ms": args.batch_window_ms, "precision": args.precision,
                   "threads": args.threads or None, "ready_s": round(ready_s, 2)},
        "wall_s": round(wall, 2),
        "throughput_rps": round(len(outcomes) / wall, 1) if wall > 0 else None,
        "images_scored": scored,
        "scored_images_per_s": round(scored / wall, 2) if wall > 0 else None,
        "queue": queue,
        "status_counts": dict(sorted(by_status.items())),
        "by_kind": by_kind,
        "latency_ms_all": percentiles([o.latency_ms for o in outcomes]),
        "latency_ms_scored_200": percentiles(ok_lat),
        "server_rss_mb": {"after_ready": round(mem_ready.get("VmRSS", 0) / 1024, 1),
                          "at_end": round(mem_end.get("VmRSS", 0) / 1024, 1),
                          "peak_VmHWM": round(mem_end.get("VmHWM", 0) / 1024, 1)},
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "python": platform.python_version()},
        "problems": problems[:20],
        "n_problems": len(problems),
        "ok": not problems,
    }

    print(f"mpft serve load test: {len(outcomes)}/{args.requests} requests, {args.clients} clients, "
          f"{wall:.1f} s, {summary['throughput_rps']} req/s, {scored} images scored "
          f"({summary['scored_images_per_s']} images/s)")
    print(f"server queue: {queue}")
    print("status counts:", ", ".join(f"{k}: {v}" for k, v in summary["status_counts"].items()))
    for kind, counts in by_kind.items():
        print(f"  {kind:<10} {counts}")
    for name in ("latency_ms_all", "latency_ms_scored_200"):
        print(f"{name}: {summary[name]}")
    print(f"server RSS MB: {summary['server_rss_mb']}")
    for p in problems[:20]:
        print("PROBLEM:", p)
    print(json.dumps(summary))
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2) + "\n")
    return 0 if not problems else 1


if __name__ == "__main__":
    sys.exit(main())
