"""The test kit: every helper the tests share, each under one name.

Images
    noise_array(w, h, seed, channels)   uint8 noise (H, W, C), or (H, W) for one channel
    gradient_array(w, h, seed)          a smooth RGB gradient with a little noise ("real"-looking)
    noise_image(w, h, seed, mode)       noise as a PIL image
    write_image(path, w, h, seed, ...)  a noise (or, smooth=True, gradient) image file; parents made
    fill_folder(folder, n, seed, ...)   n such files in one folder
    encode(img, fmt)                    a PIL image as file bytes
    image_bytes(w, h, seed, fmt)        a noise image as file bytes
    write_corrupt(path)                 a truncated PNG: PNG magic bytes, fails to decode
    png_bomb(width, height)             a PNG header declaring width x height pixels, almost no data

Dataset trees (generated images are noise, real images smooth gradients, so a model can tell them apart)
    genimage_tree(root, ...)            GenImage style: [<generator>/]{train,val}/{ai,nature}
    ufd_tree(root, ...)                 UniversalFakeDetect style: <generator>/{0_real,1_fake}

Prerequisites
    require(available, what, how)       skip a test whose prerequisite (shared data, B/16, node, chromium)
                                        is missing; under CI=true fail it instead (CI cannot pass by skipping)
    under_ci()                          whether CI=true

Models and scripts
    tiny_checkpoint(path, strategy, ...)  a random:tiny detector (32 px input, 4x4 grid) saved at path,
                                          built by mpft.model.create_model (lora_std: non-zero adapters)
    tiny_family_dir(path, family, ...)    a tiny random transformers instance of a backbone family
                                          (TINY_FAMILIES: clip, metaclip2, siglip, siglip2, dinov2,
                                          dinov2-reg, dinov3) saved with save_pretrained + preprocessor_config.json,
                                          for hf:<path> (no download)
    load_script(name)                     benchmarks/<name>.py imported as module <name>

Fixtures built on the kit live in the conftest files: tests/conftest.py (data_root, tiny_ckpt =
the default tiny_checkpoint, b16), tests/training/conftest.py (train_tree), tests/evaluation/conftest.py
(eval_checkpoint, eval_tree, ufd_tree, shared_pool), tests/serve/conftest.py (serve_checkpoint,
tiny_detector, FakeDetector, live_server).
"""

from __future__ import annotations

import importlib.util
import io
import os
import struct
import sys
import zlib
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]


# ---- images --------------------------------------------------------------------------------------
def noise_array(w: int, h: int, seed: int = 0, channels: int = 3) -> np.ndarray:
    """Uniform uint8 noise of shape (h, w, channels), or (h, w) for one channel."""
    arr = np.random.default_rng(seed).integers(0, 256, size=(h, w, channels), dtype=np.uint8)
    return arr[:, :, 0] if channels == 1 else arr


def gradient_array(w: int, h: int, seed: int = 0) -> np.ndarray:
    """A smooth diagonal RGB gradient, shifted and sprinkled with +-5 noise by ``seed``."""
    rng = np.random.default_rng(seed)
    x, y = np.linspace(0, 255, w), np.linspace(0, 255, h)
    base = np.add.outer(y, x) / 2 + rng.integers(-40, 41)
    arr = np.stack([base] * 3, -1) + rng.integers(-5, 6, (h, w, 3))
    return np.clip(arr, 0, 255).astype(np.uint8)


def noise_image(w: int, h: int, seed: int = 0, mode: str = "RGB") -> Image.Image:
    """A random-noise image: any resampling or re-encoding changes its pixels."""
    channels = len(Image.new(mode, (1, 1)).getbands())
    return Image.fromarray(noise_array(w, h, seed, channels), mode=mode)


def write_image(path: Path, w: int = 40, h: int = 30, seed: int = 0, fmt: str = "PNG", *,
                smooth: bool = False, **save_kw) -> Path:
    """A noise image (``smooth``: a gradient) saved at ``path`` as ``fmt``, whatever its suffix."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = gradient_array(w, h, seed) if smooth else noise_array(w, h, seed)
    Image.fromarray(arr).save(path, format=fmt, **save_kw)
    return path


def fill_folder(folder: Path, n: int, seed: int = 0, *, smooth: bool = False, w: int = 36, h: int = 36,
                name: str = "img_{i:02d}.png", fmt: str = "PNG") -> Path:
    """``folder`` with ``n`` images named ``name.format(i=i)``; image i has seed ``seed * 100 + i``."""
    for i in range(n):
        write_image(Path(folder) / name.format(i=i), w, h, seed * 100 + i, fmt, smooth=smooth)
    return Path(folder)


def encode(img: Image.Image, fmt: str = "PNG", **save_kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **save_kw)
    return buf.getvalue()


def image_bytes(w: int = 40, h: int = 30, seed: int = 0, fmt: str = "PNG") -> bytes:
    """A noise image encoded in memory."""
    return encode(noise_image(w, h, seed), fmt)


def write_corrupt(path: Path) -> Path:
    """A truncated PNG: recognised as an image by its magic bytes, fails to decode."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)
    return path


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_bomb(width: int = 100_000, height: int = 100_000, *, pixel_data: bool = True) -> bytes:
    """A valid PNG header declaring width x height RGB pixels (a decompression-bomb stub).

    ``pixel_data``: add a tiny IDAT (far too little data for the declared size); without it the
    file is header-only. Only the header should ever be read.
    """
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = _png_chunk(b"IDAT", zlib.compress(b"\x00" * 64)) if pixel_data else b""
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + idat + _png_chunk(b"IEND", b"")


# ---- dataset trees -------------------------------------------------------------------------------
def genimage_tree(
    root: Path,
    *,
    generators: Sequence[str] = (),
    n_per_class: int = 8,
    splits: Sequence[str] = ("train", "val"),
    counts: dict[str, int] | None = None,
    size: int = 40,
    seed: int = 0,
    corrupt: bool = False,
) -> Path:
    """A GenImage-style tree: ``<root>/[<generator>/]<split>/{ai,nature}/img <i> (copy).png``.

    ai images are noise, nature images smooth gradients. No ``generators``: one generator's
    folder (split folders directly under root). ``counts`` ({split: n}) overrides
    ``n_per_class``/``splits``. ``corrupt``: add ``<first generator>/val/ai/broken.png``, a
    truncated PNG. File names hold spaces and brackets on purpose.
    """
    root = Path(root)
    counts = counts or {s: n_per_class for s in splits}
    for g, gen in enumerate(generators or ("",)):
        for s, (split, n) in enumerate(counts.items()):
            for c, cls in enumerate(("ai", "nature")):
                folder = root / gen / split / cls
                folder.mkdir(parents=True, exist_ok=True)
                for i in range(n):
                    rng_seed = [seed, g, s, c, i]
                    arr = noise_array(size, size, rng_seed) if cls == "ai" else gradient_array(size, size, rng_seed)
                    Image.fromarray(arr).save(folder / f"img {i} (copy).png")
    if corrupt:
        write_corrupt(root / (generators[0] if generators else "") / "val" / "ai" / "broken.png")
    return root


def ufd_tree(root: Path, *, generators: Sequence[str] = ("progan", "stylegan"), n_per_class: int = 5,
             seed: int = 0) -> Path:
    """A UniversalFakeDetect-style tree: ``<root>/<generator>/{0_real,1_fake}`` (gradients / noise)."""
    root = Path(root)
    for g, name in enumerate(generators):
        fill_folder(root / name / "0_real", n_per_class, seed=seed + 50 + g, smooth=True)
        fill_folder(root / name / "1_fake", n_per_class, seed=seed + 60 + g)
    return root


# ---- prerequisites ----------------------------------------------------------------------------------
def under_ci() -> bool:
    """True under CI (``CI=true``, as .ci/run and most CI services set it)."""
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def require(available: bool, what: str, how: str) -> None:
    """Skip a test whose prerequisite (shared data, the B/16 weights, node, chromium ...) is missing,
    or fail it under CI: CI must not pass by skipping what it was meant to test.

    what: the missing thing; how: how to provide it (the message a developer acts on).
    """
    if available:
        return
    message = f"{what} is missing: {how}"
    if under_ci():
        pytest.fail(f"{message} (CI=true: a missing prerequisite fails the test instead of skipping it)",
                    pytrace=False)
    pytest.skip(message)


# ---- models and scripts --------------------------------------------------------------------------
def tiny_checkpoint(
    path: Path,
    strategy: str = "lora",
    *,
    seed: int = 0,
    head_std: float | None = 1.0,
    layers: int = 2,
    views: dict | None = None,
    lora_std: float | None = None,
) -> Path:
    """A random:tiny detector (32x32 input, 4x4 grid) built by ``create_model`` and saved at ``path``.

    The network is built under ``torch.manual_seed(seed)`` (the global RNG is restored after), so
    LoRA adapters and the head are reproducible. peft starts LoRA's B matrices at zero (an adapter
    that changes nothing); ``lora_std`` redraws every adapter tensor from N(0, lora_std) so that
    the adapters act: tests/golden/random_tiny.json holds the scores of
    ``tiny_checkpoint(path, "lora", seed=0, lora_std=0.5)``. The head is then redrawn from N(0, head_std):
    the library's init (std 0.01, kept with ``head_std=None``) puts every probability near 0.5.
    ``layers``: the tuned blocks of last-k. ``views``: the checkpoint's view setting
    (a ``ViewConfig`` dict; {} or None = one centre crop).
    """
    import torch

    from mpft.backbones import load_backbone
    from mpft.checkpoint import save_checkpoint
    from mpft.model import TuneConfig, create_model

    enc = load_backbone("random:tiny")  # loaded before seeding, as the golden scores were made
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = create_model(enc, TuneConfig(strategy, layers=layers))
        if head_std is not None:
            torch.nn.init.normal_(model.head.weight, std=head_std)
        if lora_std is not None:
            for name, p in model.named_parameters():
                if "lora_" in name:
                    torch.nn.init.normal_(p, std=lora_std)
    return save_checkpoint(path, model, tiny_config(model, views=views))


def tiny_config(model, *, views: dict | None = None):
    """The ``DetectorConfig`` of a ``random:tiny`` model as ``mpft train`` would write it (the backbone
    sets the input size, so ``preprocess`` only says: crop, do not resize)."""
    from mpft.checkpoint import DetectorConfig
    from mpft.data.transforms import PreprocessPolicy
    from mpft.tam import MaskConfig

    return DetectorConfig(
        backbone="random:tiny",
        backbone_sha256=model.encoder.weights_sha256,
        tune=model.tune.to_dict(),
        mask=MaskConfig().to_dict(),
        preprocess=PreprocessPolicy().to_dict(),
        views=dict(views or {}),
    )


# tiny shapes of every family: 32 px inputs, 8 px patches (4x4 grid), 4 blocks, width 32
_TINY = {"hidden_size": 32, "num_hidden_layers": 4, "num_attention_heads": 2, "patch_size": 8}
_CLIP_TINY = {**_TINY, "intermediate_size": 64, "image_size": 32, "projection_dim": 16, "hidden_act": "quick_gelu"}
_IMAGENET = {"image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225]}
# family -> (vision config class, model class, config kwargs, image processor settings); DINOv2's
# position embeddings are for 48 px and interpolated to its 32 px crop, as the real ones (518 -> 224)
TINY_FAMILIES = {
    "clip": ("CLIPVisionConfig", "CLIPVisionModelWithProjection", _CLIP_TINY,
             {"image_mean": [0.48145466, 0.4578275, 0.40821073], "image_std": [0.26862954, 0.26130258, 0.27577711],
              "do_center_crop": True, "crop_size": {"height": 32, "width": 32}, "size": {"shortest_edge": 32},
              "resample": 3}),
    "metaclip2": ("MetaClip2VisionConfig", "MetaClip2VisionModelWithProjection", _CLIP_TINY,
                  {"image_mean": [0.48145466, 0.4578275, 0.40821073],
                   "image_std": [0.26862954, 0.26130258, 0.27577711], "do_center_crop": True,
                   "crop_size": {"height": 32, "width": 32}, "resample": 3}),
    "siglip": ("SiglipVisionConfig", "SiglipVisionModel", {**_TINY, "intermediate_size": 64, "image_size": 32},
               {"image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5], "size": {"height": 32, "width": 32},
                "resample": 2}),
    # NaFlex: no image size; 16 position embeddings = a 4x4 grid (32 px), max_num_patches states the same
    "siglip2": ("Siglip2VisionConfig", "Siglip2VisionModel", {**_TINY, "intermediate_size": 64, "num_patches": 16},
                {"image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5], "max_num_patches": 16, "resample": 2}),
    "dinov2": ("Dinov2Config", "Dinov2Model", {**_TINY, "mlp_ratio": 2, "image_size": 48},
               {**_IMAGENET, "do_center_crop": True, "crop_size": {"height": 32, "width": 32},
                "size": {"shortest_edge": 36}, "resample": 3}),
    "dinov2-reg": ("Dinov2WithRegistersConfig", "Dinov2WithRegistersModel",
                   {**_TINY, "mlp_ratio": 2, "image_size": 48, "num_register_tokens": 2},
                   {**_IMAGENET, "do_center_crop": True, "crop_size": {"height": 32, "width": 32}, "resample": 3}),
    "dinov3": ("DINOv3ViTConfig", "DINOv3ViTModel",
               {**_TINY, "intermediate_size": 64, "image_size": 32, "num_register_tokens": 2},
               {**_IMAGENET, "size": {"height": 32, "width": 32}, "resample": 2}),
}


def tiny_family_dir(path: Path, family: str, seed: int = 0) -> Path:
    """A tiny random ``family`` vision tower (TINY_FAMILIES) written to ``path`` as a transformers
    checkpoint (save_pretrained) with a ``preprocessor_config.json``; load it with ``hf:<path>``."""
    import json

    import torch
    import transformers

    config_cls, model_cls, shape, processor = TINY_FAMILIES[family]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = getattr(transformers, model_cls)(getattr(transformers, config_cls)(**shape))
    model.save_pretrained(path)
    (Path(path) / "preprocessor_config.json").write_text(json.dumps(processor))
    return Path(path)


def load_script(name: str) -> ModuleType:
    """``benchmarks/<name>.py`` imported once as module ``name`` (registered in sys.modules first:
    dataclasses look their module up by name while the file executes)."""
    mod = sys.modules.get(name)
    path = REPO / "benchmarks" / f"{name}.py"
    if mod is not None and Path(getattr(mod, "__file__", "") or "") == path:
        return mod
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod
