"""Fixtures for the evaluation tests: a tiny random checkpoint and tiny datasets in tmp_path (built by tests/kit.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests import kit
from tests.kit import tiny_checkpoint


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


@pytest.fixture(scope="session")
def eval_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random:tiny LoRA detector whose head is scaled up so scores spread over (0, 1)."""
    return tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "run" / "best", "lora", head_std=3.0)


@pytest.fixture
def eval_tree(tmp_path: Path) -> Path:
    """GenImage style, two generators (sdv14, midjourney), each with train/ (2+2 images) and val/
    (6 ai + 6 nature); one corrupt file, sdv14/val/ai/broken.png."""
    return kit.genimage_tree(tmp_path / "genimage", generators=("sdv14", "midjourney"),
                             counts={"train": 2, "val": 6}, size=36, corrupt=True)


@pytest.fixture
def ufd_tree(tmp_path: Path) -> Path:
    """UniversalFakeDetect style: <root>/{progan,stylegan}/{0_real,1_fake}, 5 images each."""
    return kit.ufd_tree(tmp_path / "ufd")


@pytest.fixture
def shared_pool(tmp_path: Path) -> tuple[Path, list[Path]]:
    """A real pool (6 gradients) and two folders of generated images (4 noise images each)."""
    real = tmp_path / "pool" / "laion"
    kit.fill_folder(real, 6, seed=70, smooth=True)
    fakes = [tmp_path / "pool" / "dalle", tmp_path / "pool" / "glide"]
    for g, folder in enumerate(fakes):
        kit.fill_folder(folder, 4, seed=80 + g)
    return real, fakes
