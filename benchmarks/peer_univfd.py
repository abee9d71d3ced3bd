"""A plain UnivFD-style scorer, the peer of ``mpft predict --views center`` in benchmarks/cold_start.py.

What most CLIP detectors ship: import torch and transformers, build the CLIP ViT-B/16 image tower,
load the same weights mpft uses (the cached clip-vit-b16 safetensors), then a simple loop: PIL open,
the standard CLIP transform (shorter side to 224, bicubic, centre crop), one fp32 forward per image,
a linear head on the embedding. Run as a script so its wall time includes its own start-up:

    python benchmarks/peer_univfd.py IMAGE... > scores.txt
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors.torch import load_file
from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

MEAN = np.asarray((0.48145466, 0.4578275, 0.40821073), np.float32)
STD = np.asarray((0.26862954, 0.26130258, 0.27577711), np.float32)


def clip_transform(path: str, size: int = 224) -> torch.Tensor:
    with Image.open(path) as im:
        im = im.convert("RGB")
        w, h = im.size
        scale = size / min(w, h)
        im = im.resize((max(size, round(w * scale)), max(size, round(h * scale))), Image.Resampling.BICUBIC)
        w, h = im.size
        left, top = (w - size) // 2, (h - size) // 2
        arr = np.asarray(im.crop((left, top, left + size, top + size)), dtype=np.float32) / 255.0
    return torch.from_numpy(((arr - MEAN) / STD).transpose(2, 0, 1).copy())


def main(paths: list[str]) -> None:
    cache = Path(os.environ.get("MPFT_HOME", Path.home() / ".cache" / "mpft")) / "backbones" / "clip-vit-b16"
    meta = json.loads((cache / "config.json").read_text())
    model = CLIPVisionModelWithProjection(CLIPVisionConfig(**meta["vision_config"]))
    model.load_state_dict(load_file(str(cache / "model.safetensors")), strict=False)
    model.eval()
    torch.manual_seed(0)
    head = torch.nn.Linear(model.config.projection_dim, 1)
    with torch.no_grad():
        for p in paths:
            emb = model(pixel_values=clip_transform(p).unsqueeze(0)).image_embeds
            print(f"{p}\t{float(torch.sigmoid(head(emb))):.6f}")


if __name__ == "__main__":
    main(sys.argv[1:])
