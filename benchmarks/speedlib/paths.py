"""Optional speed paths of the fp32 forward (inference_mode, bf16 autocast, channels-last, threads,
LoRA merge, torch.compile), each kept only if faster and equivalent.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

import torch

from speedlib.timing import num_threads, time_calls

# a speed path is kept only when at least this much faster and equivalent within PATH_TOL
PATH_MIN_SPEEDUP = 1.03
PATH_TOL = 1e-3


def speed_paths(det, batch: int, iters: int, *, try_compile: bool) -> dict[str, Callable[[], dict]]:
    """name -> measurement; each returns images/s and max |dp| against the baseline's probabilities."""
    from mpft.precision import merge_lora

    g = torch.Generator().manual_seed(123)
    s = det.policy.size
    x = torch.randint(0, 256, (batch, 3, s, s), dtype=torch.uint8, generator=g)
    model = det.model
    ref: dict = {}

    def run(fn: Callable[[], torch.Tensor], threads: int | None = None) -> dict:
        with num_threads(threads):
            t = time_calls(fn, warmup=1, iters=iters)
            probs = torch.sigmoid(fn().float())
        out = {"images_per_s": batch / t["median_s"], **t}
        if "probs" in ref:
            out["max_abs_diff"] = float((probs - ref["probs"]).abs().max())
            out["speedup"] = out["images_per_s"] / ref["ips"]
        else:
            ref["probs"], ref["ips"] = probs, out["images_per_s"]
        return out

    def inference_mode():
        with torch.inference_mode():
            return model(x)

    # first calls pay allocator growth and page faults: without this the baseline, measured
    # first, looked 1.5x slower than the identical no_grad path
    for _ in range(2):
        inference_mode()

    def no_grad():
        with torch.no_grad():
            return model(x)

    def bf16():
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
            return model(x)

    xc = x.contiguous(memory_format=torch.channels_last)

    def channels_last():
        with torch.inference_mode():
            return model(xc)

    paths: dict[str, Callable[[], dict]] = {
        "baseline_inference_mode": lambda: run(inference_mode),
        "no_grad": lambda: run(no_grad),
        "bf16_autocast": lambda: run(bf16),
        "channels_last": lambda: run(channels_last),
        "threads_1": lambda: run(inference_mode, threads=1),
    }
    if os.cpu_count() and os.cpu_count() > 1:
        paths[f"threads_{os.cpu_count()}"] = lambda: run(inference_mode, threads=os.cpu_count())

    def merged() -> dict:
        m = merge_lora(model)

        def f():
            with torch.inference_mode():
                return m(x)

        return run(f)

    paths["lora_merged"] = merged

    def compiled() -> dict:
        if not try_compile:
            return {"skipped": "torch.compile not attempted (--quick or --no-compile)"}
        try:
            cm = torch.compile(model)

            def f():
                with torch.inference_mode():
                    return cm(x)

            t0 = time.perf_counter()
            f()
            compile_s = time.perf_counter() - t0
        except Exception as exc:  # noqa: BLE001 - no compiler offline, unsupported op...: report it
            return {"unavailable": f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"}
        return {**run(f), "compile_s": compile_s}

    paths["torch_compile"] = compiled
    # the baseline once more, last: how far apart two measurements of the same path are
    paths["baseline_again"] = lambda: {**run(inference_mode), "noise_check": True}
    return paths


def path_kept(r: dict) -> bool:
    if r.get("noise_check"):
        return False
    return ("speedup" in r and r["speedup"] >= PATH_MIN_SPEEDUP and r.get("max_abs_diff", 1.0) < PATH_TOL)
