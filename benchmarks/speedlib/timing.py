"""Timing and FLOP counting: analytic ViT FLOPs, timing a call, torch thread count, the matmul roofline."""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Callable, Iterator

import torch


def vit_flops(image_size: int, patch: int, width: int, layers: int, mlp: int, embed: int,
              tokens: int | None = None) -> dict:
    """Forward FLOPs of one image through a CLIP ViT (multiply-add = 2 FLOPs).

    N tokens (patches + CLS), D width, L blocks, M MLP width, E projection:
    patch embedding 2*P*(3*p^2)*D over the P patches; per block 4*N*D^2*2 (q, k, v, out),
    2*N^2*D*2 (QK^T and attention x V), 2*N*D*M*2 (two MLP matmuls); projection 2*D*E.
    LayerNorms, softmax, GELU and the bias adds are O(N*D) and left out (<1%).
    """
    patches = (image_size // patch) ** 2
    n = 1 + patches if tokens is None else tokens
    parts = {
        "patch_embed": 2 * patches * 3 * patch * patch * width,
        "attn_proj": layers * 4 * n * width * width * 2,
        "attn_scores": layers * 2 * n * n * width * 2,
        "mlp": layers * 2 * n * width * mlp * 2,
        "projection": 2 * width * embed,
    }
    parts["total"] = sum(parts.values())
    return parts


def encoder_flops(enc) -> dict:
    cfg = enc.config
    return vit_flops(enc.image_size, enc.patch_size, enc.width, enc.num_layers, int(cfg.intermediate_size),
                     enc.embed_dim)


def time_calls(fn: Callable[[], object], *, warmup: int, iters: int) -> dict:
    """Median and best seconds per call after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(max(1, iters)):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return {"median_s": statistics.median(times), "best_s": min(times), "times_s": [round(t, 4) for t in times]}


@contextlib.contextmanager
def num_threads(n: int | None) -> Iterator[None]:
    before = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def measure_matmul(sizes: tuple[int, ...], repeats: int) -> dict:
    best = {}
    for n in sizes:
        a, b = torch.randn(n, n), torch.randn(n, n)
        t = time_calls(lambda a=a, b=b: torch.mm(a, b), warmup=1, iters=repeats)
        best[n] = 2 * n**3 / t["best_s"] / 1e9
    return {"gflops": max(best.values()), "by_size": {str(k): round(v, 2) for k, v in best.items()}}
