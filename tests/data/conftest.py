"""Shared helpers for the data tests: tiny images written into tmp_path, the shared data dir."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[2]


def noise_image(w: int, h: int, seed: int = 0, mode: str = "RGB") -> Image.Image:
    """A random-noise image: any resampling or re-encoding changes its pixels."""
    rng = np.random.default_rng(seed)
    channels = len(Image.new(mode, (1, 1)).getbands())
    arr = rng.integers(0, 256, size=(h, w, channels), dtype=np.uint8)
    return Image.fromarray(arr[:, :, 0] if channels == 1 else arr, mode=mode)


def write_image(path: Path, w: int = 40, h: int = 30, seed: int = 0, fmt: str = "PNG") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    noise_image(w, h, seed).save(path, format=fmt)
    return path


@pytest.fixture
def shared_data() -> Path:
    """The read-only shared data folder (MPFT_DATA, default <repo>/../shared/data); skip if absent."""
    root = Path(os.environ.get("MPFT_DATA", REPO.parent / "shared" / "data"))
    if not root.is_dir():
        pytest.skip(f"shared data not found at {root}")
    return root
