"""Fixtures shared by every test folder: a tiny detector checkpoint, the shared data, the real B/16."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def data_root() -> Path:
    """The read-only shared data folder (MPFT_DATA, default <repo>/../shared/data); skip if absent."""
    root = Path(os.environ.get("MPFT_DATA", REPO.parent / "shared" / "data"))
    if not root.is_dir():
        pytest.skip(f"shared data not found at {root}")
    return root


def make_tiny_checkpoint(path: Path, strategy: str = "lora", seed: int = 0, head_std: float = 1.0) -> Path:
    """A random:tiny detector (32x32 input, 4x4 grid) with a seeded head, saved at ``path``.

    The default head init (std 0.01) puts every probability near 0.5; ``head_std`` spreads them.
    """
    import torch

    from mpft.backbones import load_backbone
    from mpft.checkpoint import DetectorConfig, save_checkpoint
    from mpft.data.transforms import PreprocessPolicy
    from mpft.model import DetectorModel, TuneConfig
    from mpft.tam import MaskConfig

    enc = load_backbone("random:tiny")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = DetectorModel(enc, TuneConfig(strategy, layers=2))
        torch.nn.init.normal_(model.head.weight, std=head_std)
    cfg = DetectorConfig(
        backbone="random:tiny",
        backbone_sha256=enc.weights_sha256,
        tune=model.tune.to_dict(),
        mask=MaskConfig().to_dict(),
        preprocess=PreprocessPolicy(size=32).to_dict(),
    )
    return save_checkpoint(path, model, cfg)


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Tiny test models gain nothing from threads, and on a busy 2-core machine threads wait on each other."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    return make_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny")


@pytest.fixture(scope="session")
def b16():
    """The real CLIP ViT-B/16 (fetched into $MPFT_HOME on first use). Only for @pytest.mark.slow tests."""
    from mpft.backbones import load_backbone

    return load_backbone("clip-vit-b16")
