"""Randomly initialised CLIP ViT shapes for tests and speed benchmarks (no download)."""

from __future__ import annotations

from mpft.backbones.clip_vit import ClipVitConfig
from mpft.backbones.offline import B16_CONFIG

RANDOM_PRESETS: dict[str, dict] = {
    # tiny: 32 px images, 8 px patches -> a 4x4 grid; four blocks so last-k with k=2 is meaningful
    "tiny": {
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 4,
        "num_attention_heads": 2,
        "patch_size": 8,
        "image_size": 32,
        "projection_dim": 16,
        "hidden_act": "quick_gelu",
        "layer_norm_eps": 1e-5,
    },
    "b16": dict(B16_CONFIG),
    "l14": {
        "hidden_size": 1024,
        "intermediate_size": 4096,
        "num_hidden_layers": 24,
        "num_attention_heads": 16,
        "patch_size": 14,
        "image_size": 224,
        "projection_dim": 768,
        "hidden_act": "quick_gelu",
        "layer_norm_eps": 1e-5,
    },
}


def preset_config(name: str) -> ClipVitConfig:
    return ClipVitConfig.from_dict(RANDOM_PRESETS[name])
