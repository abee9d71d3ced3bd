"""Fixtures for the evaluation runner tests: a tiny random checkpoint and tiny datasets in tmp_path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from tests.conftest import make_tiny_checkpoint


def write_png(path: Path, seed: int, *, smooth: bool = False, size: int = 36) -> Path:
    """A noise image (or a smooth gradient, so the two classes score differently)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    if smooth:
        ramp = np.linspace(0, 255, size, dtype=np.float64)
        base = (ramp[None, :, None] + ramp[:, None, None] * 0.5 + rng.integers(0, 60)) % 256
        arr = np.repeat(base, 3, axis=2).astype(np.uint8)
    else:
        arr = rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8)
    Image.fromarray(arr).save(path, format="PNG")
    return path


def write_corrupt(path: Path) -> Path:
    """A truncated PNG: recognised as an image by its magic bytes, fails to decode."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)
    return path


def flat(value: Any, prefix: str = "") -> dict[str, Any]:
    """``value`` as one flat ``{"key.sub.0": scalar}`` dict, for ``pytest.approx``.

    pytest.approx compares flat mappings and sequences of scalars only (pytest 9.2 raises a
    TypeError for a list inside a dict, such as a metric's ``acc_ci`` interval), so nested
    reports are flattened before comparing.
    """
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(flat(v, f"{prefix}{k}."))
        return out
    if isinstance(value, list | tuple):
        out = {}
        for i, v in enumerate(value):
            out.update(flat(v, f"{prefix}{i}."))
        return out
    return {prefix.rstrip("."): value}


def _fill(folder: Path, n: int, seed: int, smooth: bool) -> None:
    for i in range(n):
        write_png(folder / f"img_{i:02d}.png", seed * 100 + i, smooth=smooth)


@pytest.fixture(scope="session")
def eval_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random:tiny LoRA detector whose head is scaled up so scores spread over (0, 1)."""
    return make_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "run" / "best", head_std=3.0)


@pytest.fixture
def genimage_tree(tmp_path: Path) -> Path:
    """GenImage style: two generators, each with train/ and val/ holding ai/ and nature/; one corrupt file."""
    root = tmp_path / "genimage"
    for g, name in enumerate(("sdv14", "midjourney")):
        for split in ("train", "val"):
            n = 2 if split == "train" else 6
            _fill(root / name / split / "ai", n, seed=10 * g + 1, smooth=False)
            _fill(root / name / split / "nature", n, seed=10 * g + 2, smooth=True)
    write_corrupt(root / "sdv14" / "val" / "ai" / "broken.png")
    return root


@pytest.fixture
def ufd_tree(tmp_path: Path) -> Path:
    """UniversalFakeDetect style: <root>/<generator>/{0_real,1_fake}."""
    root = tmp_path / "ufd"
    for g, name in enumerate(("progan", "stylegan")):
        _fill(root / name / "0_real", 5, seed=50 + g, smooth=True)
        _fill(root / name / "1_fake", 5, seed=60 + g, smooth=False)
    return root


@pytest.fixture
def shared_pool(tmp_path: Path) -> tuple[Path, list[Path]]:
    """A real pool and two folders of generated images."""
    real = tmp_path / "pool" / "laion"
    _fill(real, 6, seed=70, smooth=True)
    fakes = [tmp_path / "pool" / "dalle", tmp_path / "pool" / "glide"]
    for g, folder in enumerate(fakes):
        _fill(folder, 4, seed=80 + g, smooth=False)
    return real, fakes
