"""GPU figures: bf16 forward images/s (B/16, L/14 at batch 64/128) and the TAM drop speed-up of a step.

Runs in well under 5 minutes on one GPU. Without a GPU (or with ``--quick``) it runs the same
code on the CPU with the tiny model and small batches, as a smoke test; those figures are not
results. Prints the device name first and a JSON summary last (also written with ``--json``).

    python benchmarks/gpu_speed.py --json runs/gpu_speed.json
    python benchmarks/gpu_speed.py --quick            # CPU smoke test, seconds
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def free_cache(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()


def autocast(device: torch.device):
    return torch.autocast(device.type, dtype=torch.bfloat16) if device.type == "cuda" else contextlib.nullcontext()


def timed(fn, device: torch.device, warmup: int, iters: int) -> float:
    """Median seconds per call after ``warmup`` calls, with the device synchronised around each call."""
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def forward_ips(spec: str, batch: int, device: torch.device, warmup: int, iters: int) -> float:
    from mpft.model import TuneConfig, create_model

    model = create_model(spec, TuneConfig("linear")).to(device).eval()
    s = model.encoder.image_size
    x = torch.randint(0, 256, (batch, 3, s, s), dtype=torch.uint8, device=device)

    def run():
        with torch.inference_mode(), autocast(device):
            return model(x)

    return batch / timed(run, device, warmup, iters)


def step_seconds(spec: str, strategy: str, mask: str, batch: int, device: torch.device, warmup: int,
                 iters: int) -> float:
    from mpft.model import TuneConfig, create_model
    from mpft.tam import MaskConfig, apply_mask

    torch.manual_seed(0)
    model = create_model(spec, TuneConfig(strategy, layers=4)).to(device).train()
    cfg = None if mask == "none" else MaskConfig(strategy="tam", ratio=0.5, apply=mask)
    optim = torch.optim.AdamW(model.parameter_groups(1e-3, 2e-5, 0.01))
    loss_fn = torch.nn.BCEWithLogitsLoss()
    s = model.encoder.image_size
    x = torch.randint(0, 256, (batch, 3, s, s), dtype=torch.uint8, device=device)
    y = torch.randint(0, 2, (batch,), device=device).float()
    g = torch.Generator().manual_seed(0)

    def step():
        # masking is part of a training step's cost, as in mpft.training
        pixels, keep = apply_mask(x, cfg, model.encoder.patch_size, fill=model.encoder.mean, generator=g)
        with autocast(device):
            logits = model(pixels, keep=keep)
        loss = loss_fn(logits.float(), y)
        optim.zero_grad(set_to_none=True)
        loss.backward()
        optim.step()

    return timed(step, device, warmup, iters)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="CPU smoke test with the tiny model.")
    ap.add_argument("--json", type=Path, default=None, help="Also write the summary here.")
    args = ap.parse_args(argv)

    cuda = torch.cuda.is_available() and not args.quick
    device = torch.device("cuda" if cuda else "cpu")
    name = torch.cuda.get_device_name(device) if cuda else f"CPU ({platform.processor() or platform.machine()})"
    print(f"device: {name}; torch {torch.__version__}", flush=True)
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = True
        specs, batches, warmup, iters = ("random:b16", "random:l14"), (64, 128), 3, 10
        train_spec, train_batch, t_warm, t_iters = "random:b16", 64, 2, 5
    else:
        if not args.quick:
            print("no CUDA GPU: running the CPU smoke test (figures are not results)", flush=True)
        specs, batches, warmup, iters = ("random:tiny", "random:tiny@1"), (2, 4), 1, 2
        train_spec, train_batch, t_warm, t_iters = "random:tiny", 4, 1, 2

    summary: dict = {"device": name, "cuda": cuda, "dtype": "bf16 autocast" if cuda else "fp32",
                     "forward": {}, "train": {}}
    t_start = time.perf_counter()
    for spec in specs:
        for b in batches:
            ips = forward_ips(spec, b, device, warmup, iters)
            free_cache(device)  # the model went out of scope with forward_ips
            summary["forward"][f"{spec}/b{b}"] = ips
            print(f"  forward {spec:<16} batch {b:>4}: {ips:10.1f} images/s", flush=True)
    for strategy in ("last-k", "full"):
        row = {}
        for m in ("none", "drop", "fill"):
            row[m] = step_seconds(train_spec, strategy, m, train_batch, device, t_warm, t_iters)
            free_cache(device)
        row["drop_over_none"] = row["drop"] / row["none"]
        summary["train"][strategy] = row
        print(f"  train {strategy:<6} batch {train_batch}: none {row['none'] * 1e3:8.1f} ms, drop "
              f"{row['drop'] * 1e3:8.1f} ms, fill {row['fill'] * 1e3:8.1f} ms; drop/none {row['drop_over_none']:.2f}",
              flush=True)
    summary["seconds"] = time.perf_counter() - t_start
    if cuda:
        summary["peak_gpu_memory_gb"] = torch.cuda.max_memory_allocated(device) / 1e9
    text = json.dumps(summary, indent=2)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
