"""Inference throughput, images/s: the mpft detector forward alone, ``Detector.predict_iter`` end to
end, and the peer pipeline most CLIP detectors use (UnivFD style: PIL + numpy CLIP transform,
transformers fp32 forward, one image at a time).
"""

from __future__ import annotations

import copy
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from speedlib.timing import time_calls


def measure_forward(det, batch: int, *, warmup: int, iters: int, flops: float, roofline: float | None) -> dict:
    g = torch.Generator().manual_seed(batch)
    s = det.policy.size
    x = torch.randint(0, 256, (batch, 3, s, s), dtype=torch.uint8, generator=g)
    t = time_calls(lambda: det.score_tensors(x), warmup=warmup, iters=iters)
    ips = batch / t["median_s"]
    out = {"images_per_s": ips, **t, "gflops_achieved": ips * flops / 1e9}
    if roofline:
        out["roofline_fraction"] = out["gflops_achieved"] / roofline
    return out


def measure_e2e(det, paths: list[Path], *, batch: int, workers: int, resize: bool) -> dict:
    from mpft.data.transforms import PreprocessPolicy

    det = copy.copy(det)  # own policy, shared network
    det.policy = PreprocessPolicy(size=det.policy.size, resize=resize)
    list(det.predict_iter(paths[:1], batch_size=1, workers=0))  # warm kernels and caches
    t0 = time.perf_counter()
    preds = list(det.predict_iter(paths, batch_size=batch, workers=workers))
    dt = time.perf_counter() - t0
    errors = sum(p.error is not None for p in preds)
    return {"images_per_s": len(paths) / dt, "seconds": dt, "images": len(paths), "errors": errors}


def clip_transform(path: Path, size: int, mean, std) -> np.ndarray:
    """The standard CLIP eval transform in PIL + numpy: shorter side to ``size`` (bicubic), centre crop."""
    with Image.open(path) as im:
        im = im.convert("RGB")
        w, h = im.size
        scale = size / min(w, h)
        im = im.resize((max(size, round(w * scale)), max(size, round(h * scale))), Image.Resampling.BICUBIC)
        w, h = im.size
        left, top = (w - size) // 2, (h - size) // 2
        im = im.crop((left, top, left + size, top + size))
        arr = np.asarray(im, dtype=np.float32) / 255.0
    arr = (arr - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return arr.transpose(2, 0, 1)


def measure_peer(spec: str, paths: list[Path]) -> dict:
    """UnivFD-style pipeline: PIL open, CLIP transform, transformers fp32 forward, one image at a time."""
    from mpft.backbones import load_backbone

    enc = load_backbone(spec)
    model = enc.model.eval()  # a plain transformers CLIPVisionModelWithProjection, fresh weights
    head = torch.nn.Linear(enc.embed_dim, 1)
    size = enc.image_size

    def one(p: Path) -> float:
        x = torch.from_numpy(clip_transform(p, size, enc.mean, enc.std)).unsqueeze(0)
        with torch.no_grad():
            emb = model(pixel_values=x).image_embeds
            return float(torch.sigmoid(head(emb)))

    one(paths[0])
    t0 = time.perf_counter()
    for p in paths:
        one(p)
    dt = time.perf_counter() - t0
    return {"images_per_s": len(paths) / dt, "seconds": dt, "images": len(paths),
            "attn_implementation": getattr(model.config, "_attn_implementation", None)}
