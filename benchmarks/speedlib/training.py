"""Training step cost: one optimiser step with or without TAM masking, and the ``_train-child``
process whose peak memory the ``memory`` section measures.
"""

from __future__ import annotations

from collections.abc import Callable

import torch


def train_step_fn(spec: str, strategy: str, mask: str, batch: int, seed: int = 0) -> Callable[[], float]:
    """One optimiser step of the detector on random pixels (content does not change the cost)."""
    from mpft.model import TuneConfig, create_model
    from mpft.tam import MaskConfig, apply_mask

    torch.manual_seed(seed)
    model = create_model(spec, TuneConfig(strategy, layers=4))
    model.train()
    cfg = None if mask == "none" else MaskConfig(strategy="tam", ratio=0.5, apply=mask)
    optim = torch.optim.AdamW(model.parameter_groups(1e-3, 2e-5, 0.01))
    loss_fn = torch.nn.BCEWithLogitsLoss()
    g = torch.Generator().manual_seed(seed)
    s = model.encoder.image_size
    x = torch.randint(0, 256, (batch, 3, s, s), dtype=torch.uint8, generator=g)
    y = torch.randint(0, 2, (batch,), generator=g).float()

    def step() -> float:
        # masking is part of a training step's cost, as in mpft.training
        pixels, keep = apply_mask(x, cfg, model.encoder.patch_size, fill=model.encoder.mean, generator=g)
        logits = model(pixels, keep=keep)
        loss = loss_fn(logits.float(), y)
        optim.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)
        optim.step()
        return float(loss.detach())

    return step


def train_child(argv: list[str]) -> int:
    """``speed.py _train-child SPEC STRATEGY BATCH STEPS``: a few training steps, for peak RSS."""
    spec, strategy, batch, steps = argv[0], argv[1], int(argv[2]), int(argv[3])
    step = train_step_fn(spec, strategy, "drop", batch)
    for _ in range(steps):
        step()
    return 0
