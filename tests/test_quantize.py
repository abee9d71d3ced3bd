"""int8 inference (``mpft.quantize``): LoRA merge, dynamic quantization, Detector/CLI plumbing.

Tolerances. The random:tiny backbone is 32 wide with 4 blocks (24 quantized Linear layers).
Dynamic int8 quantizes each Linear's input with one per-tensor scale over 7 bits
(``reduce_range``): a step of range/127, i.e. a relative noise of roughly 1-3% per layer at
this width, compounding over the blocks. Measured relative logit error: ~5%; we allow 15% and
require a correlation above 0.99. A wrong conversion is far outside that: dropping the LoRA
adapters instead of merging them moves the logits by ~140% of their norm (checked below, so
the tolerance is known to be discriminative). Wide models quantize better (B/16's error is
measured by benchmarks/speed.py, not here).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from torch.ao.nn.quantized.dynamic import Linear as DynamicQuantizedLinear

from mpft.checkpoint import load_checkpoint
from mpft.cli import main
from mpft.errors import ConfigError
from mpft.quantize import (
    PRECISIONS,
    apply_precision,
    check_precision,
    merge_lora,
    model_precision,
    precision_device,
    quantize_int8,
)
from tests.conftest import make_tiny_checkpoint

REL_TOL = 0.15
PROB_TOL = 0.05  # |p_int8 - p_fp32| with the tiny head (std 0.5-1 logits): ~0.02 measured


def _randomize_lora(model: nn.Module, seed: int = 0) -> None:
    """peft starts lora_B at zero (a no-op adapter); give it weight so merging matters."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.2)


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


@pytest.fixture(scope="module")
def lora_ckpt(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("q") / "lora"
    make_tiny_checkpoint(path, strategy="lora")
    # store non-zero adapters in the checkpoint itself, so loading exercises the merge
    model, cfg = load_checkpoint(path)
    _randomize_lora(model)
    from mpft.checkpoint import save_checkpoint

    return save_checkpoint(path, model, cfg)


@pytest.fixture(scope="module")
def lora_model(lora_ckpt):
    model, _ = load_checkpoint(lora_ckpt)
    return model


@pytest.fixture(scope="module")
def pixels() -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    return torch.randint(0, 256, (48, 3, 32, 32), dtype=torch.uint8, generator=g)


def _lora_layers(model: nn.Module) -> int:
    from peft.tuners.lora import LoraLayer

    return sum(isinstance(m, LoraLayer) for m in model.modules())


@torch.inference_mode()
def test_merge_lora_is_exact_and_removes_wrappers(lora_model, pixels):
    ref = lora_model(pixels)
    merged = merge_lora(lora_model)
    assert _lora_layers(lora_model) > 0, "merge_lora must not touch its input unless inplace"
    assert _lora_layers(merged) == 0
    assert torch.allclose(merged(pixels), ref, atol=1e-5, rtol=1e-5)
    # the adapters matter: without them the logits are far off (so 'exact' above means something)
    without = copy.deepcopy(lora_model)
    for name, p in without.named_parameters():
        if "lora_B" in name:
            p.zero_()
    assert _rel(without(pixels), ref) > 0.5


@torch.inference_mode()
def test_quantize_int8_lora_close_to_fp32(lora_model, pixels):
    ref = lora_model(pixels)
    q = quantize_int8(lora_model)
    assert model_precision(q) == "int8" and model_precision(lora_model) == "fp32"
    assert _lora_layers(q) == 0
    assert not any(type(m) is nn.Linear for m in q.encoder.modules())  # every encoder Linear converted
    assert sum(isinstance(m, DynamicQuantizedLinear) for m in q.encoder.modules()) >= 4 * 6
    assert type(q.head) is nn.Linear  # the head stays fp32
    out = q(pixels)
    assert out.shape == ref.shape and out.dtype == torch.float32
    assert _rel(out, ref) < REL_TOL
    assert float(torch.corrcoef(torch.stack([out, ref]))[0, 1]) > 0.99
    # the input model still computes what it did (it was copied, not converted)
    assert torch.equal(lora_model(pixels), ref)


@torch.inference_mode()
def test_quantize_int8_other_strategies_and_shared_modules(tmp_path, pixels):
    for strategy in ("linear", "last-k", "full"):
        model, _ = load_checkpoint(make_tiny_checkpoint(tmp_path / strategy, strategy=strategy))
        ref = model(pixels)
        q = quantize_int8(model)
        enc = q.encoder
        # ClipEncoder and the transformers model refer to one projection and one block list
        assert enc._projection is enc.model.visual_projection
        assert isinstance(enc._projection, DynamicQuantizedLinear)
        assert enc._layers[0] is enc.model.vision_model.encoder.layers[0]
        assert _rel(q(pixels), ref) < REL_TOL, strategy
        assert quantize_int8(q, inplace=True) is q  # already int8: unchanged


def test_precision_names_and_devices():
    assert PRECISIONS == ("fp32", "int8")
    assert check_precision(" INT8 ") == "int8"
    with pytest.raises(ConfigError, match="precision"):
        check_precision("fp16")
    assert precision_device("int8", "auto") == "cpu"
    assert precision_device("fp32", "auto") == "auto"
    with pytest.raises(ConfigError, match="CPU only"):
        precision_device("int8", "cuda")


def test_apply_precision_fp32_is_identity(lora_model):
    assert apply_precision(lora_model, "fp32") is lora_model


def _write_images(folder: Path, n: int = 6) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        # smooth gradients plus noise: varied content, so probabilities spread out
        base = np.linspace(0, 255, 48 * 40).reshape(40, 48)
        arr = np.stack([base * rng.uniform(0.2, 1), base.T.reshape(40, 48), rng.integers(0, 256, (40, 48))], -1)
        p = folder / f"img{i}.jpg"
        Image.fromarray(arr.astype(np.uint8)).save(p, quality=90)
        paths.append(p)
    return paths


def test_detector_load_int8(lora_ckpt, tmp_path):
    from mpft.detector import Detector

    images = _write_images(tmp_path / "imgs")
    fp = Detector.load(lora_ckpt, device="cpu")
    q = Detector.load(lora_ckpt, device="auto", precision="int8")
    assert fp.precision == "fp32" and q.precision == "int8"
    assert q.model_id == fp.model_id + "-int8"
    assert q.info()["precision"] == "int8"
    p_fp = np.array([p.probability for p in fp.predict(images)])
    p_q = np.array([p.probability for p in q.predict(images)])
    assert np.ptp(p_fp) > 0.05  # the images are told apart, so agreement is not trivial
    assert np.max(np.abs(p_q - p_fp)) < PROB_TOL
    with pytest.raises(ConfigError):
        Detector.load(lora_ckpt, device="cuda", precision="int8")


def test_detector_load_int8_leaves_shared_encoder_alone(tmp_path):
    """A linear-head checkpoint shares the caller's encoder: int8 must convert a copy."""
    from mpft.backbones import load_backbone
    from mpft.detector import Detector

    ckpt = make_tiny_checkpoint(tmp_path / "lin", strategy="linear")
    enc = load_backbone("random:tiny")
    det = Detector.load(ckpt, encoder=enc, precision="int8")
    assert det.precision == "int8"
    assert type(enc._projection) is nn.Linear
    assert not any(isinstance(m, DynamicQuantizedLinear) for m in enc.modules())


def test_predict_cli_precision_int8(lora_ckpt, tmp_path, capsys):
    images = _write_images(tmp_path / "imgs", n=3)
    code = main(["predict", str(tmp_path / "imgs"), "--model", str(lora_ckpt), "--format", "jsonl",
                 "--precision", "int8"])
    out, err = capsys.readouterr()
    assert code == 0, err
    rows = [json.loads(line) for line in out.splitlines()]
    assert len(rows) == len(images)
    assert all(r["model_id"].endswith("-int8") and 0.0 <= r["probability"] <= 1.0 for r in rows)

    code = main(["predict", str(images[0]), "--model", str(lora_ckpt), "--precision", "fp16"])
    _, err = capsys.readouterr()
    assert code == 2 and "precision" in err
    code = main(["predict", str(images[0]), "--model", str(lora_ckpt), "--precision", "int8",
                 "--device", "cuda"])
    _, err = capsys.readouterr()
    assert code == 2 and "CPU only" in err
