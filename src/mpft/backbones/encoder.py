"""The CLIP family adapter: a CLIP vision tower behind :class:`VisionBackbone`.

The tower is transformers' (``hf:``, ``random:``) or mpft's plain-torch copy of its module tree
(:mod:`mpft.backbones.clip_vit`: the offline ``clip-vit-b16`` and ``openai:``, without importing
transformers). This is the only module that knows CLIP's module names (MetaCLIP 2 has the same
layout and uses it too): tuning strategies select parameters through the interface
(:mod:`mpft.backbones.base`), never by matching strings elsewhere.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from mpft.backbones.base import VisionBackbone
from mpft.backbones.clip_vit import ClipVitConfig

if TYPE_CHECKING:
    from transformers import CLIPVisionConfig

# OpenAI CLIP's pixel statistics: the one definition (every CLIP backbone here uses them unless its
# own preprocessor config says otherwise)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class ClipEncoder(VisionBackbone):
    """A CLIP ViT image tower: CLS at index 0, pre-LayerNorm, post-LayerNorm of CLS, optional projection."""

    family = "clip"

    default_mean = CLIP_MEAN
    default_std = CLIP_STD
    default_interpolation = "bicubic"
    interpolates_positions = False

    def __init__(self, model: nn.Module, **kwargs):
        super().__init__(model, **kwargs)
        # a tower with a projection nests the plain vision model; the plain one is it
        vm = getattr(model, "vision_model", model)
        self._embeddings = vm.embeddings
        self._pre_ln = vm.pre_layrnorm
        self._post_ln = vm.post_layernorm
        self._layers = vm.encoder.layers
        self._projection = getattr(model, "visual_projection", None)

    @property
    def num_prefix_tokens(self) -> int:
        return 1

    @property
    def blocks(self) -> nn.ModuleList:
        return self._layers

    @property
    def embed_dim(self) -> int:
        """Projection dim, or the width without projection."""
        return int(self._projection.out_features) if self._projection is not None else self.width

    def head_side_parameters(self) -> list[nn.Parameter]:
        """Post-LayerNorm and projection: what sits between the last block and a detector head."""
        params = list(self._post_ln.parameters())
        if self._projection is not None:
            params += list(self._projection.parameters())
        return params

    def lora_target_modules(self) -> list[str]:
        """Module name suffixes of the attention and MLP projections inside a block (for peft's LoRA)."""
        return ["q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"]

    def embed_all(self, pixels: torch.Tensor) -> torch.Tensor:
        """pixels: (B, 3, S, S) normalised -> (B, 1+N, D) token embeddings with positions added."""
        return self._embeddings(pixels)

    def pre_norm(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, T, D) embeddings -> (B, T, D) after CLIP's pre-LayerNorm (the input of block 0)."""
        return self._pre_ln(tokens)

    def pool(self, hidden: torch.Tensor) -> torch.Tensor:
        """hidden: (B, T, D) -> (B, E): post-LayerNorm of CLS, then the projection if any."""
        pooled = self._post_ln(hidden[:, 0])
        return self._projection(pooled) if self._projection is not None else pooled

    def info(self) -> dict:
        return {**super().info(), "has_projection": self._projection is not None}

    @classmethod
    def towers(cls) -> tuple[type, type]:
        """transformers classes of the tower with and without the projection (MetaCLIP 2 names its own);
        imported here, not at module level, so that the offline towers never import them."""
        from transformers import CLIPVisionModel, CLIPVisionModelWithProjection

        return CLIPVisionModelWithProjection, CLIPVisionModel

    @classmethod
    def load_pretrained(cls, name_or_dir: str) -> nn.Module:
        """The transformers vision tower of a checkpoint (full model or tower), with its projection
        when the checkpoint has one; a projection it lacks is never initialised at random."""
        with_proj, plain = cls.towers()
        model, info = with_proj.from_pretrained(name_or_dir, attn_implementation="sdpa", output_loading_info=True)
        if any(k.startswith("visual_projection") for k in info.get("missing_keys", ())):
            model = plain.from_pretrained(name_or_dir, attn_implementation="sdpa")
        return model


def build_model(
    config: CLIPVisionConfig | ClipVitConfig, *, with_projection: bool = True, empty: bool = False
) -> nn.Module:
    """Instantiate a transformers CLIP vision tower with SDPA attention (``random:`` backbones, tests).

    ``empty``: skip the random initialisation (0.9 s for B/16 on 2 cores) because the caller
    replaces every parameter with loaded weights (``load_state_dict(..., assign=True)``); buffers
    such as the position ids are still built.
    """
    from transformers import CLIPVisionConfig

    if isinstance(config, ClipVitConfig):
        config = CLIPVisionConfig(**config.to_dict())
    cls = ClipEncoder.towers()[0 if with_projection else 1]
    if not empty:
        return cls._from_config(config, attn_implementation="sdpa")
    from transformers.initialization import no_init_weights

    with no_init_weights():
        return cls._from_config(config, attn_implementation="sdpa")
