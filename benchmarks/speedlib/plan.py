"""Sizes of every measurement (full and ``--quick``) and the precisions measured."""

from __future__ import annotations

from dataclasses import dataclass, field

PRECISIONS = ("fp32", "bf16", "int8")
#: reduced precisions: each counts for the peer target only if it passes the accuracy gate
REDUCED = ("bf16", "int8")


@dataclass
class Plan:
    """Sizes of every measurement; ``--quick`` swaps them all for tiny ones."""

    mode: str
    backbone: str
    large: str
    train_backbone: str
    batches: tuple[int, ...] = (1, 8, 32)
    fwd_iters: dict = field(default_factory=lambda: {1: 8, 8: 4, 32: 3})
    large_iters: dict = field(default_factory=lambda: {1: 3, 8: 2, 32: 2})
    warmup: int = 1
    n_e2e: int = 64
    n_peer: int = 24
    n_agree: int = 64
    n_head_fit: int = 16
    train_batch: int = 16
    train_steps: int = 2
    mem_images: int = 32
    mem_train_steps: int = 3
    mm_sizes: tuple[int, ...] = (2048, 4096)
    mm_repeats: int = 4
    paths_batch: int = 8
    paths_iters: int = 3
    n_decode: int = 48

    @classmethod
    def quick(cls) -> Plan:
        return cls(
            mode="quick", backbone="random:tiny", large="random:tiny@1", train_backbone="random:tiny",
            fwd_iters={1: 2, 8: 2, 32: 2}, large_iters={1: 1, 8: 1, 32: 1}, n_e2e=16, n_peer=4, n_agree=16,
            n_head_fit=8, train_batch=4, train_steps=2, mem_images=4, mem_train_steps=2, mm_sizes=(256,),
            mm_repeats=2, paths_iters=2, n_decode=4,
        )
