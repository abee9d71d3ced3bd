"""Fixtures shared by every test folder: a tiny detector checkpoint, the shared data, the real B/16.

Helpers (images, trees, bombs, checkpoints, script loader) are in tests/kit.py.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.kit import require, tiny_checkpoint

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def data_root() -> Path:
    """The read-only shared data folder (MPFT_DATA, default <repo>/../shared/data); skip if absent (fail under CI)."""
    root = Path(os.environ.get("MPFT_DATA", REPO.parent / "shared" / "data"))
    require(root.is_dir(), f"the shared data folder {root}", "put it beside the repository or set MPFT_DATA")
    return root


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Tiny test models gain nothing from threads, and on a busy 2-core machine threads wait on each other."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_ckpt(tmp_path_factory) -> Path:
    """``kit.tiny_checkpoint`` with its defaults: random:tiny, LoRA, seed 0, head std 1 (do not modify it)."""
    return tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny")


@pytest.fixture(scope="session")
def b16():
    """The real CLIP ViT-B/16 (fetched into $MPFT_HOME on first use). Only for @pytest.mark.slow tests.

    Skipped when it can be neither found nor fetched (no index, no cache); under CI that fails.
    """
    from mpft.backbones import load_backbone
    from mpft.errors import BackboneNotAvailableError

    try:
        return load_backbone("clip-vit-b16")
    except BackboneNotAvailableError as exc:
        require(False, "the CLIP ViT-B/16 weights", f"run `mpft backbone fetch clip-vit-b16` ({exc})")
