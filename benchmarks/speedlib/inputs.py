"""What the measurements run on: the image sets (shared data or synthetic stand-ins) and the
detector under test (a built checkpoint with a fitted head, loaded once per precision).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image


def _synthetic(folder: Path, n: int, size: tuple[int, int], seed: int) -> list[Path]:
    """JPEGs with smooth gradients and noise (stand-ins when the shared data is absent)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    out = []
    for i in range(n):
        base = (xx * rng.uniform(0.2, 1) + yy * rng.uniform(0.2, 1)) % 256
        arr = np.stack([base, base[::-1], rng.integers(0, 256, (h, w))], -1).astype(np.uint8)
        p = folder / f"synthetic_{i:04d}.jpg"
        Image.fromarray(arr).save(p, quality=90)
        out.append(p)
    return out


def image_set(folder: Path | None, n: int, *, fallback_size: tuple[int, int], scratch: Path, name: str,
              ) -> tuple[list[Path], str]:
    """The first ``n`` images of ``folder`` (sorted, recursive), or synthetic ones when it is absent."""
    from mpft.data.scan import list_images

    if folder is not None and folder.is_dir():
        files = sorted(list_images(folder, recursive=True))
        if files:
            # interleave sub-folders (cifake val/ai and val/nature) so a prefix holds both
            by_dir: dict[Path, list[Path]] = {}
            for f in files:
                by_dir.setdefault(f.parent, []).append(f)
            mixed = [f for group in zip(*by_dir.values(), strict=False) for f in group] if len(by_dir) > 1 else files
            if len(mixed) < n:
                mixed = files
            return [mixed[i % len(mixed)] for i in range(n)], str(folder)
    return _synthetic(scratch / name, n, fallback_size, seed=hash(name) % 1000), "synthetic"


def default_backbone() -> str:
    from mpft.backbones.registry import b16_cache_dir

    return "clip-vit-b16" if (b16_cache_dir() / "model.safetensors").is_file() else "random:b16"


def fit_head(model, images: list[Path], policy, logit_std: float = 3.0, seed: int = 0) -> None:
    """A random head direction scaled so that logits on ``images`` have std ``logit_std`` and mean 0.

    An untrained head (std 0.01) puts every probability at 0.5, where fp32 and int8 always
    agree; a trained detector's logits spread over several units, where differences show.
    """
    from mpft.data.images import decode_image
    from mpft.pipeline import view_pixels
    from mpft.views import ViewConfig

    x = torch.cat([view_pixels(decode_image(p).image, policy, ViewConfig()) for p in images])
    with torch.inference_mode():
        emb = model.encoder(model.encoder.normalize(x.float() / 255.0)).embedding
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(emb.shape[1], generator=g)
    proj = emb @ w
    scale = logit_std / float(proj.std().clamp_min(1e-8))
    with torch.no_grad():
        model.head.weight.copy_((w * scale).view(1, -1))
        model.head.bias.fill_(-float(proj.mean()) * scale)


def build_checkpoint(spec: str, strategy: str, folder: Path, fit_images: list[Path]) -> Path:
    """A detector on ``spec`` (resize policy at the backbone's input size) with a fitted head."""
    from mpft.backbones import load_backbone
    from mpft.checkpoint import DetectorConfig, save_checkpoint
    from mpft.data.transforms import PreprocessPolicy
    from mpft.model import TuneConfig, create_model
    from mpft.tam import MaskConfig

    enc = load_backbone(spec)
    torch.manual_seed(0)
    model = create_model(enc, TuneConfig(strategy))
    policy = PreprocessPolicy(size=enc.image_size, resize=True)
    fit_head(model, fit_images, policy)
    cfg = DetectorConfig(backbone=spec, backbone_sha256=enc.weights_sha256, tune=model.tune.to_dict(),
                         mask=MaskConfig().to_dict(), preprocess=policy.to_dict())
    return save_checkpoint(folder, model, cfg)


class Detectors:
    """Loads each (checkpoint, precision) once, only when a measurement needs it."""

    def __init__(self):
        self._cache: dict[tuple[str, str], object] = {}

    def get(self, ckpt: Path, precision: str):
        from mpft.detector import Detector

        key = (str(ckpt), precision)
        if key not in self._cache:
            self._cache[key] = Detector.load(ckpt, device="cpu", precision=precision)
        return self._cache[key]

    def drop(self) -> None:
        self._cache.clear()
