from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image


def make_genimage_tree(
    root: Path, n_per_class: int = 8, size: int = 40, splits=("train", "val"), seed: int = 0
) -> Path:
    """<root>/{train,val}/{ai,nature}: 'ai' images are noisy, 'nature' images smooth gradients."""
    rng = np.random.default_rng(seed)
    for split in splits:
        for cls in ("ai", "nature"):
            d = root / split / cls
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n_per_class):
                if cls == "ai":
                    arr = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
                else:
                    ramp = np.linspace(0, 255, size, dtype=np.float32)
                    arr = np.stack([np.add.outer(ramp, ramp) / 2] * 3, -1).astype(np.uint8)
                    arr = np.clip(arr.astype(int) + rng.integers(-5, 6, arr.shape), 0, 255).astype(np.uint8)
                Image.fromarray(arr).save(d / f"img {i} (copy).png")
    return root


@pytest.fixture
def genimage_tree(tmp_path) -> Path:
    return make_genimage_tree(tmp_path / "data")
