"""The DINOv3 ViT family (model type ``dinov3_vit``).

Prefix tokens: CLS, then the register tokens. Positions are rotary (RoPE) and apply to patch
tokens only: when patches are dropped, their rotary angles are dropped with them, so the masked
forward stays exact. The embedding is the model's pooler output: the final LayerNorm of CLS.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import DINOv3ViTModel
from transformers.models.dinov3_vit.modeling_dinov3_vit import get_patches_center_coordinates

from mpft.backbones.base import VisionBackbone
from mpft.backbones.dinov2 import IMAGENET_MEAN, IMAGENET_STD


class Dinov3Encoder(VisionBackbone):
    """A DINOv3 ViT image tower: CLS + registers + patches, rotary positions on patches."""

    family = "dinov3"
    default_mean = IMAGENET_MEAN
    default_std = IMAGENET_STD
    default_interpolation = "bilinear"
    interpolates_positions = True

    def __init__(self, model: DINOv3ViTModel, **kwargs):
        super().__init__(model, **kwargs)
        self._embeddings = model.embeddings
        self._rope = model.rope_embeddings
        self._layers = model.model.layer
        self._norm = model.norm

    @property
    def num_prefix_tokens(self) -> int:
        return 1 + int(self.config.num_register_tokens)

    @property
    def blocks(self) -> nn.ModuleList:
        return self._layers

    @property
    def embed_dim(self) -> int:
        return self.width

    def embed_all(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) normalised -> (B, 1+R+N, D): CLS, registers, patches (positions are rotary)."""
        return self._embeddings(pixels.to(self._embeddings.patch_embeddings.weight.dtype))

    def rotary(self, keep: torch.Tensor | None, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """cos/sin of the patch tokens present: (N, hd) for all, (B, 1, K, hd) for ``keep`` (B, K).

        The model's own rule (``DINOv3ViTRopePositionEmbedding``) without its training-time jitter,
        so every block of one forward sees the same positions.
        """
        g = self.grid
        coords = get_patches_center_coordinates(g, g, dtype=torch.float32, device=like.device)
        angles = (2 * torch.pi * coords[:, :, None] * self._rope.inv_freq[None, None, :]).flatten(1, 2).tile(2)
        cos, sin = torch.cos(angles).to(like.dtype), torch.sin(angles).to(like.dtype)
        if keep is None:
            return cos, sin
        idx = keep.to(like.device, torch.long)
        return cos[idx].unsqueeze(1), sin[idx].unsqueeze(1)

    def run_block(self, index: int, hidden: torch.Tensor, keep: torch.Tensor | None) -> torch.Tensor:
        return self._layers[index](hidden, position_embeddings=self.rotary(keep, hidden))

    def pool(self, hidden: torch.Tensor) -> torch.Tensor:
        return self._norm(hidden[:, 0])

    def head_side_parameters(self) -> list[nn.Parameter]:
        return list(self._norm.parameters())

    def lora_target_modules(self) -> list[str]:
        return ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]

    @classmethod
    def load_pretrained(cls, name_or_dir: str) -> nn.Module:
        return DINOv3ViTModel.from_pretrained(name_or_dir, attn_implementation="sdpa")
