"""The DINOv2 family: DINOv2 and DINOv2 with registers (model types ``dinov2``,
``dinov2_with_registers``).

Prefix tokens: CLS, then the register tokens (none for plain DINOv2); TAM drops patch tokens only.
The embedding is the model's pooler output: the final LayerNorm of CLS. Position embeddings are
interpolated to the input size (the checkpoints are trained at 518 px, used at 224).
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import AutoConfig, Dinov2Model, Dinov2WithRegistersModel

from mpft.backbones.base import VisionBackbone

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class Dinov2Encoder(VisionBackbone):
    """A DINOv2 ViT image tower: CLS + registers + patches, LayerScale blocks."""

    family = "dinov2"
    default_mean = IMAGENET_MEAN
    default_std = IMAGENET_STD
    default_interpolation = "bicubic"
    interpolates_positions = True

    def __init__(self, model: Dinov2Model | Dinov2WithRegistersModel, **kwargs):
        super().__init__(model, **kwargs)
        self._embeddings = model.embeddings
        self._layers = model.encoder.layer
        self._norm = model.layernorm

    @property
    def num_prefix_tokens(self) -> int:
        return 1 + int(getattr(self.config, "num_register_tokens", 0) or 0)

    @property
    def blocks(self) -> nn.ModuleList:
        return self._layers

    @property
    def embed_dim(self) -> int:
        return self.width

    def embed_all(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) normalised -> (B, 1+R+N, D): CLS, registers, patches, positions added."""
        return self._embeddings(pixels)

    def pool(self, hidden: torch.Tensor) -> torch.Tensor:
        """(B, P+K, D) -> (B, D): the final LayerNorm of CLS (the model's pooler output)."""
        return self._norm(hidden[:, 0])

    def head_side_parameters(self) -> list[nn.Parameter]:
        return list(self._norm.parameters())

    def lora_target_modules(self) -> list[str]:
        # fc1/fc2 for the plain MLP, gate/up/down for the SwiGLU one (the giant checkpoints)
        return ["q_proj", "k_proj", "v_proj", "o_proj", "fc1", "fc2", "gate_proj", "up_proj", "down_proj"]

    @classmethod
    def load_pretrained(cls, name_or_dir: str) -> nn.Module:
        config = AutoConfig.from_pretrained(name_or_dir)
        tower = Dinov2WithRegistersModel if config.model_type == "dinov2_with_registers" else Dinov2Model
        return tower.from_pretrained(name_or_dir, attn_implementation="sdpa")
