"""MPFT training, one job per module:

- :mod:`~mpft.training.config`: :class:`TrainConfig` (settings), :class:`TrainResult`, the resume identity;
- :mod:`~mpft.training.data`: which samples a run trains and validates on, the dataset, the sampler;
- :mod:`~mpft.training.optim`: AdamW, warm-up + cosine schedule;
- :mod:`~mpft.training.loop`: :func:`train`, the epochs and steps (single process or torchrun);
- :mod:`~mpft.training.validate`: per-epoch validation with :mod:`mpft.evaluation.metrics`;
- :mod:`~mpft.training.outputs`: ``best/`` and ``last/`` checkpoints and their ``training`` record;
- :mod:`~mpft.training.state`: the resume state (safetensors + JSON, no pickle).
"""

from __future__ import annotations

from mpft.training.config import BLOCK_LR, LORA_LR, TrainConfig, TrainResult
from mpft.training.loop import train

__all__ = ["BLOCK_LR", "LORA_LR", "TrainConfig", "TrainResult", "train"]
