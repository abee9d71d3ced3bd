"""A plain-torch CLIP ViT image tower for the offline checkpoints (``clip-vit-b16``, ``openai:``).

Why it exists: importing transformers' CLIP modelling code pulls in torch._dynamo,
torch.distributed.tensor, sympy and huggingface_hub, 2-3 s of a 2-core cold start
(docs/performance.md, issue 19), although these checkpoints need nothing of it. The modules here
carry transformers' ``CLIPVisionModelWithProjection`` / ``CLIPVisionModel`` parameter names one to one,
so the same safetensors load into either, peft finds the same LoRA targets (``q_proj`` ...
``fc2``) and :class:`mpft.backbones.encoder.ClipEncoder` wraps either unchanged; tests check that both
compute the same tokens (tests/backbones/test_clip_vit.py). ``hf:`` checkpoints keep transformers'
classes (any family, any attention implementation).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields

import torch
from torch import nn
from torch.nn import functional as F

from mpft.errors import BackboneError

__all__ = ["ClipVisionTower", "ClipVitConfig", "build_clip_vit"]


@dataclass
class ClipVitConfig:
    """Shape of a CLIP ViT image tower (the fields of transformers' ``CLIPVisionConfig`` it uses)."""

    hidden_size: int = 768
    intermediate_size: int = 3072
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    patch_size: int = 16
    image_size: int = 224
    projection_dim: int = 512
    hidden_act: str = "quick_gelu"
    layer_norm_eps: float = 1e-5
    num_channels: int = 3
    # what info() reports; this tower always calls torch's scaled_dot_product_attention
    _attn_implementation: str = "sdpa"

    @classmethod
    def from_dict(cls, d: dict) -> ClipVitConfig:
        """Keys of a transformers CLIP vision config; others (dropout 0, initializer ranges) are ignored."""
        known = {f.name for f in fields(cls)}
        cfg = cls(**{k: v for k, v in d.items() if k in known and not k.startswith("_")})
        if cfg.hidden_act not in _ACTIVATIONS:
            raise BackboneError(
                f"CLIP activation {cfg.hidden_act!r} is not supported; use one of {sorted(_ACTIVATIONS)}"
            )
        if cfg.hidden_size % cfg.num_attention_heads:
            raise BackboneError(f"hidden size {cfg.hidden_size} is not divisible by {cfg.num_attention_heads} heads")
        return cfg

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if not k.startswith("_")}


def _quick_gelu(x: torch.Tensor) -> torch.Tensor:
    return x * torch.sigmoid(1.702 * x)


_ACTIVATIONS = {"quick_gelu": _quick_gelu, "gelu": F.gelu}


class _Embeddings(nn.Module):
    def __init__(self, cfg: ClipVitConfig):
        super().__init__()
        self.class_embedding = nn.Parameter(torch.empty(cfg.hidden_size))
        self.patch_embedding = nn.Conv2d(cfg.num_channels, cfg.hidden_size, cfg.patch_size, cfg.patch_size, bias=False)
        n = (cfg.image_size // cfg.patch_size) ** 2
        self.position_embedding = nn.Embedding(n + 1, cfg.hidden_size)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, C, S, S) -> (B, 1+N, D): CLS then patch tokens, positions added."""
        patches = self.patch_embedding(pixels.to(self.patch_embedding.weight.dtype)).flatten(2).transpose(1, 2)
        cls = self.class_embedding.expand(pixels.shape[0], 1, -1)
        return torch.cat([cls, patches], dim=1) + self.position_embedding.weight


class _Attention(nn.Module):
    def __init__(self, cfg: ClipVitConfig):
        super().__init__()
        d = cfg.hidden_size
        self.heads = cfg.num_attention_heads
        self.k_proj, self.v_proj, self.q_proj, self.out_proj = (nn.Linear(d, d) for _ in range(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, D) -> (B, T, D)."""
        b, t, d = x.shape

        def split(y: torch.Tensor) -> torch.Tensor:
            return y.view(b, t, self.heads, d // self.heads).transpose(1, 2)

        out = F.scaled_dot_product_attention(split(self.q_proj(x)), split(self.k_proj(x)), split(self.v_proj(x)))
        return self.out_proj(out.transpose(1, 2).reshape(b, t, d))


class _Mlp(nn.Module):
    def __init__(self, cfg: ClipVitConfig):
        super().__init__()
        self.fc1 = nn.Linear(cfg.hidden_size, cfg.intermediate_size)
        self.fc2 = nn.Linear(cfg.intermediate_size, cfg.hidden_size)
        self.act = _ACTIVATIONS[cfg.hidden_act]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class _Block(nn.Module):
    def __init__(self, cfg: ClipVitConfig):
        super().__init__()
        self.self_attn = _Attention(cfg)
        self.layer_norm1 = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.mlp = _Mlp(cfg)
        self.layer_norm2 = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)

    def forward(self, hidden: torch.Tensor, attention_mask: None = None) -> torch.Tensor:
        """(B, T, D) -> (B, T, D): pre-norm attention and MLP, each with its residual."""
        hidden = hidden + self.self_attn(self.layer_norm1(hidden))
        return hidden + self.mlp(self.layer_norm2(hidden))


class _Encoder(nn.Module):
    def __init__(self, cfg: ClipVitConfig):
        super().__init__()
        self.layers = nn.ModuleList(_Block(cfg) for _ in range(cfg.num_hidden_layers))


class _VisionTransformer(nn.Module):
    def __init__(self, cfg: ClipVitConfig):
        super().__init__()
        self.embeddings = _Embeddings(cfg)
        self.pre_layrnorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)  # transformers' spelling
        self.encoder = _Encoder(cfg)
        self.post_layernorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)


class ClipVisionTower(nn.Module):
    """``vision_model`` (+ ``visual_projection``): transformers' module tree and parameter names.

    ``forward`` is not defined: :class:`~mpft.backbones.encoder.ClipEncoder` runs the parts.
    """

    def __init__(self, cfg: ClipVitConfig, with_projection: bool = True):
        super().__init__()
        self.config = cfg
        self.vision_model = _VisionTransformer(cfg)
        if with_projection:
            self.visual_projection = nn.Linear(cfg.hidden_size, cfg.projection_dim, bias=False)


_INITS = ("normal_", "uniform_", "kaiming_uniform_", "ones_", "zeros_")


@contextmanager
def _no_init() -> Iterator[None]:
    """Modules built inside keep their uninitialised storage (transformers' ``no_init_weights`` idea).

    Not the meta device: its first use imports torch's decomposition tables (1.6 s of a cold start).
    """
    saved = {name: getattr(nn.init, name) for name in _INITS}
    try:
        for name in _INITS:
            setattr(nn.init, name, lambda tensor, *args, **kwargs: tensor)
        yield
    finally:
        for name, fn in saved.items():
            setattr(nn.init, name, fn)


def build_clip_vit(cfg: ClipVitConfig, state: dict[str, torch.Tensor], *, spec: str) -> ClipVisionTower:
    """The tower holding ``state`` (transformers names; a ``visual_projection.weight`` makes it projected).

    No random initialisation (0.9 s for B/16 on 2 cores): the modules are built uninitialised and the
    loaded tensors become their parameters (no copy; safetensors' memory map stays shared between
    processes). Tensors are cast to float32 where stored otherwise (fp16 OpenAI checkpoints).

    Raises:
        BackboneError: a tensor is missing, unexpected or of the wrong shape.
    """
    with _no_init():
        model = ClipVisionTower(cfg, with_projection="visual_projection.weight" in state)
    # transformers' tower without a projection names its tensors without the "vision_model." prefix
    state = {k if k.startswith(("vision_model.", "visual_projection.")) else f"vision_model.{k}": v
             for k, v in state.items() if not k.endswith("position_ids")}
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or wrong:
        raise BackboneError(
            f"{spec}: weights do not fit the CLIP vision model; missing {missing[:5]}, unexpected {unexpected[:5]}, "
            f"wrong shape {wrong[:5]}"
        )
    state = {k: v if v.dtype == torch.float32 else v.float() for k, v in state.items()}
    model.load_state_dict(state, strict=True, assign=True)
    return model.eval()
