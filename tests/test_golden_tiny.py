"""Golden probabilities of a fixed ``random:tiny`` detector on images this test makes itself.

The whole inference path (decode, EXIF, mode conversion, crop / views, normalisation, forward with
LoRA adapters, view combination, sigmoid) in one number per image and view setting, without the
real B/16 or the shared data: any change in what the pipeline feeds the model shows up here, in the
quick loop, on every machine. The LoRA adapters are non-zero (``lora_std``): peft's zero-initialised
B matrices would leave the adapter path untested. The shipped detector has its own golden logits
(tests/test_detector_api.py, slow).

Regenerate after an intended change: ``MPFT_REGEN_GOLDEN=1 python -m pytest tests/test_golden_tiny.py``
and say why in the commit.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.kit import gradient_array, noise_array, tiny_checkpoint

GOLDEN = Path(__file__).parent / "golden" / "random_tiny.json"
VIEWS = ("center", "grid:2+whole", "grid:3@max")
_ORIENTATION = 0x0112


def _mixed(w: int, h: int, seed: int) -> np.ndarray:
    """A gradient with a noisy band: smooth and textured regions in one image, so crops differ."""
    arr = gradient_array(w, h, seed)
    arr[h // 3 : h // 2] = noise_array(w, h // 2 - h // 3, seed)
    return arr


def _make_images(folder: Path) -> dict[str, Path]:
    """PNG, WebP, JPEG with an EXIF rotation, a palette GIF, RGBA PNG; portrait, landscape, small."""
    folder.mkdir(parents=True, exist_ok=True)
    made = {
        "landscape.png": (Image.fromarray(_mixed(96, 64, 1)), {}),
        "portrait.webp": (Image.fromarray(_mixed(48, 80, 2)), {"lossless": True}),
        "small_rgba.png": (Image.fromarray(noise_array(24, 44, 3, channels=4), "RGBA"), {}),
        "palette.gif": (Image.fromarray(_mixed(72, 72, 4)).convert("P"), {}),
    }
    out = {}
    for name, (img, kw) in made.items():
        img.save(folder / name, **kw)
        out[name] = folder / name
    exif = Image.Exif()
    exif[_ORIENTATION] = 6  # rotate 90 degrees on display: the decoder must apply it
    Image.fromarray(_mixed(88, 56, 5)).save(folder / "rotated.jpg", quality=92, exif=exif.tobytes())
    out["rotated.jpg"] = folder / "rotated.jpg"
    return out


@pytest.fixture(scope="module")
def tiny_lora(tmp_path_factory):
    from mpft import Detector

    ckpt = tiny_checkpoint(tmp_path_factory.mktemp("golden") / "tiny", strategy="lora", seed=0, lora_std=0.5)
    return ckpt, Detector


def _probabilities(images: dict[str, Path], ckpt: Path, detector_cls) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for views in VIEWS:
        det = detector_cls.load(ckpt, views=views)
        preds = det.predict(list(images.values()))
        assert all(p.ok for p in preds), [p.error for p in preds]
        out[views] = {name: p.probability for name, p in zip(images, preds, strict=True)}
    return out


def test_random_tiny_golden_probabilities(tmp_path, tiny_lora):
    images = _make_images(tmp_path / "images")
    got = _probabilities(images, *tiny_lora)
    if os.environ.get("MPFT_REGEN_GOLDEN"):
        GOLDEN.write_text(json.dumps(got, indent=2) + "\n")
    want = json.loads(GOLDEN.read_text())
    assert set(got) == set(want)
    for views, rows in want.items():
        assert set(rows) == set(got[views]), views
        for name, p in rows.items():
            assert got[views][name] == pytest.approx(p, abs=1e-5), f"{views} {name}"
    # the numbers discriminate: views and images give different probabilities
    flat = [p for rows in want.values() for p in rows.values()]
    assert len({round(p, 4) for p in flat}) == len(flat)


def test_the_lora_adapters_change_the_scores(tmp_path, tiny_lora):
    """The golden model's adapters act: zeroing them changes every probability."""
    import torch
    from safetensors.torch import load_file, save_file

    ckpt, detector_cls = tiny_lora
    zeroed = tmp_path / "zeroed"
    zeroed.mkdir()
    (zeroed / "config.json").write_text((ckpt / "config.json").read_text())
    tensors = load_file(str(ckpt / "model.safetensors"))
    lora = [k for k in tensors if "lora_" in k]
    assert lora and all(tensors[k].abs().sum() > 0 for k in lora)
    save_file({k: torch.zeros_like(v) if k in lora else v for k, v in tensors.items()},
              str(zeroed / "model.safetensors"))
    images = _make_images(tmp_path / "images")
    with_adapters = _probabilities(images, ckpt, detector_cls)["center"]
    without = _probabilities(images, zeroed, detector_cls)["center"]
    assert all(abs(with_adapters[k] - without[k]) > 1e-4 for k in images)
