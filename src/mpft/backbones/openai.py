"""OpenAI ``clip`` checkpoints (as saved by ``clip.load``) <-> transformers' CLIP vision layout.

UnivFD, FatFormer and RINE load CLIP through OpenAI's package; this mapping lets their
checkpoints run through the same encoder as ``hf:`` specs, so the two loaders agree.
"""

from __future__ import annotations

import math
import re
import zipfile
from pathlib import Path

import torch

from mpft.backbones.clip_vit import ClipVitConfig
from mpft.errors import BackboneError

_LAYER = re.compile(r"^visual\.transformer\.resblocks\.(\d+)\.(.+)$")

# per-block names that map one-to-one (OpenAI suffix -> transformers suffix)
_BLOCK_DIRECT = {
    "attn.out_proj.weight": "self_attn.out_proj.weight",
    "attn.out_proj.bias": "self_attn.out_proj.bias",
    "ln_1.weight": "layer_norm1.weight",
    "ln_1.bias": "layer_norm1.bias",
    "ln_2.weight": "layer_norm2.weight",
    "ln_2.bias": "layer_norm2.bias",
    "mlp.c_fc.weight": "mlp.fc1.weight",
    "mlp.c_fc.bias": "mlp.fc1.bias",
    "mlp.c_proj.weight": "mlp.fc2.weight",
    "mlp.c_proj.bias": "mlp.fc2.bias",
}
_TOP_DIRECT = {
    "visual.class_embedding": "vision_model.embeddings.class_embedding",
    "visual.conv1.weight": "vision_model.embeddings.patch_embedding.weight",
    "visual.positional_embedding": "vision_model.embeddings.position_embedding.weight",
    "visual.ln_pre.weight": "vision_model.pre_layrnorm.weight",
    "visual.ln_pre.bias": "vision_model.pre_layrnorm.bias",
    "visual.ln_post.weight": "vision_model.post_layernorm.weight",
    "visual.ln_post.bias": "vision_model.post_layernorm.bias",
}
_HF_PREFIX = "vision_model.encoder.layers"


def config_from_openai(state: dict[str, torch.Tensor]) -> ClipVitConfig:
    """Infer the vision config (width, patch, layers, heads, projection) from tensor shapes."""
    try:
        conv = state["visual.conv1.weight"]
        pos = state["visual.positional_embedding"]
        proj = state["visual.proj"]
    except KeyError as exc:
        raise BackboneError(
            f"not an OpenAI CLIP ViT checkpoint: missing {exc.args[0]!r} "
            "(ResNet CLIP models are not supported)"
        ) from None
    width, _, patch, _ = conv.shape
    grid = math.isqrt(pos.shape[0] - 1)
    layers = 1 + max(int(m.group(1)) for k in state if (m := _LAYER.match(k)))
    fc = state["visual.transformer.resblocks.0.mlp.c_fc.weight"]
    return ClipVitConfig(
        hidden_size=int(width),
        intermediate_size=int(fc.shape[0]),
        num_hidden_layers=int(layers),
        # OpenAI CLIP uses 64-dim heads in every ViT variant
        num_attention_heads=int(width) // 64,
        patch_size=int(patch),
        image_size=int(grid * patch),
        projection_dim=int(proj.shape[1]),
        hidden_act="quick_gelu",
        layer_norm_eps=1e-5,
    )


def openai_to_hf(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map an OpenAI CLIP state dict's ``visual.*`` tensors to ``CLIPVisionModelWithProjection`` keys.

    Text-tower keys are ignored. Unknown ``visual.*`` keys raise BackboneError.
    """
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if not key.startswith("visual."):
            continue
        if key in _TOP_DIRECT:
            out[_TOP_DIRECT[key]] = value
        elif key == "visual.proj":
            # OpenAI computes x @ proj; nn.Linear stores the transpose
            out["visual_projection.weight"] = value.t().contiguous()
        elif m := _LAYER.match(key):
            i, rest = m.group(1), m.group(2)
            prefix = f"{_HF_PREFIX}.{i}"
            if rest in ("attn.in_proj_weight", "attn.in_proj_bias"):
                kind = "weight" if rest.endswith("weight") else "bias"
                q, k, v = value.chunk(3, dim=0)
                for name, part in zip(("q_proj", "k_proj", "v_proj"), (q, k, v), strict=True):
                    out[f"{prefix}.self_attn.{name}.{kind}"] = part.contiguous()
            elif rest in _BLOCK_DIRECT:
                out[f"{prefix}.{_BLOCK_DIRECT[rest]}"] = value
            else:
                raise BackboneError(f"unexpected tensor {key!r} in OpenAI CLIP checkpoint")
        else:
            raise BackboneError(f"unexpected tensor {key!r} in OpenAI CLIP checkpoint")
    return out


def hf_to_openai(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Inverse of :func:`openai_to_hf` (used to test the mapping by round trip, and to export)."""
    top_inv = {v: k for k, v in _TOP_DIRECT.items()}
    block_inv = {v: k for k, v in _BLOCK_DIRECT.items()}
    out: dict[str, torch.Tensor] = {}
    qkv: dict[tuple[str, str], dict[str, torch.Tensor]] = {}
    pat = re.compile(rf"^{re.escape(_HF_PREFIX)}\.(\d+)\.(.+)$")
    for key, value in state.items():
        if key in top_inv:
            out[top_inv[key]] = value
        elif key == "visual_projection.weight":
            out["visual.proj"] = value.t().contiguous()
        elif m := pat.match(key):
            i, rest = m.group(1), m.group(2)
            sub = re.match(r"^self_attn\.([qkv])_proj\.(weight|bias)$", rest)
            if sub:
                qkv.setdefault((i, sub.group(2)), {})[sub.group(1)] = value
            elif rest in block_inv:
                out[f"visual.transformer.resblocks.{i}.{block_inv[rest]}"] = value
            else:
                raise BackboneError(f"unexpected tensor {key!r} in transformers CLIP state dict")
        else:
            raise BackboneError(f"unexpected tensor {key!r} in transformers CLIP state dict")
    for (i, kind), parts in qkv.items():
        out[f"visual.transformer.resblocks.{i}.attn.in_proj_{kind}"] = torch.cat(
            [parts["q"], parts["k"], parts["v"]], dim=0
        )
    return out


def read_openai_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a TorchScript archive (``clip.load(jit=True)`` files) or a plain state dict."""
    path = Path(path)
    if not path.is_file():
        raise BackboneError(f"OpenAI CLIP checkpoint not found: {path}")
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as z:
                is_script = any(n.endswith("constants.pkl") or "/code/" in n for n in z.namelist())
            if is_script:
                return {
                    k: v.float()
                    for k, v in torch.jit.load(str(path), map_location="cpu").state_dict().items()
                }
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for bad files
        raise BackboneError(f"cannot read OpenAI CLIP checkpoint {path}: {exc}") from exc
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise BackboneError(f"{path} does not hold a state dict")
    # checkpoints saved from DataParallel/DDP wrappers carry a 'module.' prefix
    return {k.removeprefix("module."): v.float() for k, v in state.items() if torch.is_tensor(v)}
