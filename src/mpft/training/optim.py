"""The optimisation recipe: AdamW with separate head / backbone learning rates, linear warm-up then
cosine decay over all steps."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from mpft.model import DetectorModel
from mpft.training.config import TrainConfig


def lr_lambda(total_steps: int, warmup_steps: int) -> Callable[[int], float]:
    """The learning-rate factor at each step: linear warm-up to 1, then cosine decay to 0."""

    def f(step: int) -> float:
        if warmup_steps and step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return f


def make_optimizer(
    model: DetectorModel, cfg: TrainConfig, total_steps: int
) -> tuple[torch.optim.AdamW, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW over the model's trainable tensors and its warm-up + cosine scheduler."""
    optim = torch.optim.AdamW(model.parameter_groups(cfg.lr_head, cfg.lr_backbone, cfg.weight_decay))
    sched = torch.optim.lr_scheduler.LambdaLR(optim, lr_lambda(total_steps, int(cfg.warmup * total_steps)))
    return optim, sched
