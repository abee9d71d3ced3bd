"""The SigLIP family (SigLIP and the fixed-resolution SigLIP 2 checkpoints, model type ``siglip``).

No CLS token: every token is a patch token, so TAM keeps and drops them all alike. The embedding
is pooled as the model does: post-LayerNorm over the tokens, then the multi-head attention
pooling head (``vision_use_head``), or their mean for a tower without one.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import SiglipVisionModel

from mpft.backbones.base import VisionBackbone

SIGLIP_MEAN = (0.5, 0.5, 0.5)
SIGLIP_STD = (0.5, 0.5, 0.5)


class SiglipEncoder(VisionBackbone):
    """A SigLIP ViT image tower: patch tokens only, attention-pooling head."""

    family = "siglip"
    default_mean = SIGLIP_MEAN
    default_std = SIGLIP_STD
    default_interpolation = "bicubic"
    interpolates_positions = False

    def __init__(self, model: SiglipVisionModel, **kwargs):
        super().__init__(model, **kwargs)
        self._embeddings = model.embeddings
        self._layers = model.encoder.layers
        self._post_ln = model.post_layernorm
        self._head = model.head if getattr(model, "use_head", False) else None

    @property
    def num_prefix_tokens(self) -> int:
        return 0

    @property
    def blocks(self) -> nn.ModuleList:
        return self._layers

    @property
    def embed_dim(self) -> int:
        return self.width

    def embed_all(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) normalised -> (B, N, D) patch embeddings with positions added."""
        return self._embeddings(pixels)

    def pool(self, hidden: torch.Tensor) -> torch.Tensor:
        """(B, K, D) -> (B, D): post-LayerNorm, then the attention-pooling head (or the mean)."""
        hidden = self._post_ln(hidden)
        return self._head(hidden) if self._head is not None else hidden.mean(dim=1)

    def head_side_parameters(self) -> list[nn.Parameter]:
        params = list(self._post_ln.parameters())
        if self._head is not None:
            params += list(self._head.parameters())
        return params

    def lora_target_modules(self) -> list[str]:
        # matched inside the blocks only: the pooling head's MLP (fc1/fc2) and the out_proj of its
        # nn.MultiheadAttention stay untouched
        return ["q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"]

    @classmethod
    def load_pretrained(cls, name_or_dir: str) -> nn.Module:
        """The vision tower of a SigLIP checkpoint (full model or tower)."""
        return SiglipVisionModel.from_pretrained(name_or_dir, attn_implementation="sdpa")
