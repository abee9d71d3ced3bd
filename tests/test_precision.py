"""Inference precisions (``mpft.precision``): LoRA merge, int8 dynamic quantization, bf16 autocast,
Detector/CLI plumbing.

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
from mpft.precision import (
    PRECISION_CHOICES,
    PRECISIONS,
    apply_precision,
    check_precision,
    cpu_has_native_bf16,
    merge_lora,
    model_precision,
    precision_device,
    quantize_int8,
    resolve_precision,
)
from tests.kit import tiny_checkpoint

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
    tiny_checkpoint(path, strategy="lora")
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
def test_precision_int8_lora_close_to_fp32(lora_model, pixels):
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
def test_precision_int8_other_strategies_and_shared_modules(tmp_path, pixels):
    for strategy in ("linear", "last-k", "full"):
        model, _ = load_checkpoint(tiny_checkpoint(tmp_path / strategy, strategy=strategy))
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
    assert PRECISIONS == ("fp32", "bf16", "int8")
    assert check_precision("BF16") == "bf16"
    assert precision_device("bf16", "auto") == "auto"  # bf16 runs on any device
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

    ckpt = tiny_checkpoint(tmp_path / "lin", strategy="linear")
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


@torch.inference_mode()
def test_int8_activation_range_flag(lora_model, pixels, monkeypatch):
    """7-bit (reduce_range) vs 8-bit activations: the flag reaches every layer and changes the result."""
    import mpft.precision as prec

    ref = lora_model(pixels)
    q7 = quantize_int8(lora_model, reduce_range=True)
    q8 = quantize_int8(lora_model, reduce_range=False)
    layers7 = [m for m in q7.encoder.modules() if isinstance(m, DynamicQuantizedLinear)]
    assert layers7 and all(m.reduce_range for m in layers7)
    assert all(not m.reduce_range for m in q8.encoder.modules() if isinstance(m, DynamicQuantizedLinear))
    out7, out8 = q7(pixels), q8(pixels)
    assert not torch.equal(out7, out8)
    assert _rel(out7, ref) < REL_TOL
    if prec.cpu_has_vnni():  # without VNNI, 8-bit products may saturate int16 accumulators
        # one more bit of activation precision: about half the error (measured 0.5x on B/16)
        assert _rel(out8, ref) < _rel(out7, ref)
    # the default follows the CPU
    monkeypatch.setattr(prec, "cpu_has_vnni", lambda: False)
    assert all(m.reduce_range for m in quantize_int8(lora_model).encoder.modules()
               if isinstance(m, DynamicQuantizedLinear))
    monkeypatch.setattr(prec, "cpu_has_vnni", lambda: True)
    assert not any(m.reduce_range for m in quantize_int8(lora_model).encoder.modules()
                   if isinstance(m, DynamicQuantizedLinear))


def test_cpu_has_vnni_reads_cpu_flags(monkeypatch, tmp_path):
    import builtins

    import mpft.precision as prec

    assert isinstance(prec.cpu_has_vnni(), bool)
    real_open = builtins.open

    def fake(flags):
        f = tmp_path / "cpuinfo"
        f.write_text(f"processor\t: 0\nflags\t\t: {flags}\n")
        return lambda path, *a, **k: real_open(f if path == "/proc/cpuinfo" else path, *a, **k)

    monkeypatch.setattr(builtins, "open", fake("fpu avx2 avx512f avx512_vnni"))
    assert prec.cpu_has_vnni() is True
    monkeypatch.setattr(builtins, "open", fake("fpu avx2 avx512f"))
    assert prec.cpu_has_vnni() is False


@torch.inference_mode()
def test_bf16_precision_merges_lora_and_runs_in_autocast(lora_model, pixels):
    from mpft.precision import autocast_for

    b = apply_precision(lora_model, "bf16", inplace=False)
    assert model_precision(b) == "bf16" and model_precision(lora_model) == "fp32"
    assert _lora_layers(b) == 0 and _lora_layers(lora_model) > 0
    assert all(p.dtype == torch.float32 for p in b.parameters())  # weights stay fp32; autocast casts
    cpu = torch.device("cpu")
    with autocast_for(cpu, "bf16"):
        out = b(pixels)
    with autocast_for(cpu, "fp32"):
        ref = lora_model(pixels)
    assert not torch.is_autocast_enabled("cpu")
    assert not torch.equal(out.float(), ref)  # bf16 matmuls really ran
    assert _rel(out.float(), ref) < 0.05  # bf16 keeps 8 mantissa bits: ~1% per layer, fp32 residuals


def test_detector_and_cli_bf16(lora_ckpt, tmp_path, capsys):
    from mpft.detector import Detector

    images = _write_images(tmp_path / "imgs")
    fp = Detector.load(lora_ckpt, device="cpu")
    b = Detector.load(lora_ckpt, device="cpu", precision="bf16")
    assert b.precision == "bf16" and b.model_id == fp.model_id + "-bf16" and b.info()["precision"] == "bf16"
    p_fp = np.array([p.probability for p in fp.predict(images)])
    p_b = np.array([p.probability for p in b.predict(images)])
    assert np.max(np.abs(p_b - p_fp)) < PROB_TOL and not np.array_equal(p_b, p_fp)

    code = main(["predict", str(tmp_path / "imgs"), "--model", str(lora_ckpt), "--format", "jsonl",
                 "--precision", "bf16"])
    out, err = capsys.readouterr()
    assert code == 0, err
    rows = [json.loads(line) for line in out.splitlines()]
    assert len(rows) == len(images) and all(r["model_id"].endswith("-bf16") for r in rows)
    got = {Path(r["path"]).name: r["probability"] for r in rows}
    ref = {Path(p.source).name: p.probability for p in b.predict(images)}
    assert got.keys() == ref.keys() and all(abs(got[k] - ref[k]) < 1e-6 for k in got)  # the CLI ran bf16


# --------------------------------------------------------------------------------------------------
# auto: bf16 only where the CPU computes bf16 natively
# --------------------------------------------------------------------------------------------------

# /proc/cpuinfo flag lines of real CPUs (abridged): an AVX2-only desktop part, where bf16 was measured
# at 2.2x the fp32 time (issue 13), an AVX-512 CPU without BF16 (Skylake/Cascade Lake server),
# Cooper Lake / Zen 4 (AVX512_BF16), Sapphire Rapids (AMX), and an Arm CPU with bf16.
AVX2_ONLY = "fpu sse sse2 ssse3 sse4_1 sse4_2 avx f16c fma avx2 bmi2"
AVX512_NO_BF16 = AVX2_ONLY + " avx512f avx512dq avx512bw avx512vl avx512_vnni"
AVX512_BF16 = AVX512_NO_BF16 + " avx512_bf16"
AMX = AVX512_NO_BF16 + " amx_bf16 amx_tile amx_int8"


def _cpuinfo(monkeypatch, tmp_path, text):
    import builtins

    real_open = builtins.open
    f = tmp_path / "cpuinfo"
    f.write_text(text)
    monkeypatch.setattr(builtins, "open", lambda path, *a, **k: real_open(f if path == "/proc/cpuinfo" else path,
                                                                          *a, **k))


@pytest.mark.parametrize(("flags", "native"), [
    (AVX2_ONLY, False), (AVX512_NO_BF16, False), (AVX512_BF16, True), (AMX, True), ("fp asimd bf16", False),
])
def test_auto_precision_is_bf16_only_with_native_bf16(monkeypatch, tmp_path, flags, native):
    # Arm's "bf16" feature is left out on purpose: bf16 speed there was never measured
    assert cpu_has_native_bf16(set(flags.split())) is native
    key = "Features" if flags.startswith("fp asimd") else "flags"
    _cpuinfo(monkeypatch, tmp_path, f"processor\t: 0\n{key}\t\t: {flags}\n\n")
    assert cpu_has_native_bf16() is native
    assert resolve_precision("auto", "cpu") == ("bf16" if native else "fp32")
    assert resolve_precision("AUTO", "cpu:0") == ("bf16" if native else "fp32")


def test_auto_precision_rules(monkeypatch):
    import mpft.precision as prec

    assert PRECISION_CHOICES == ("auto", "fp32", "bf16", "int8")
    for name in PRECISIONS:  # an explicit choice is kept whatever the CPU
        assert resolve_precision(name, "cpu", native_bf16=False) == name
        assert resolve_precision(name, "cpu", native_bf16=True) == name
    assert resolve_precision("auto", "cuda", native_bf16=True) == "fp32"  # GPU fp32 is bf16 autocast already
    assert resolve_precision("auto", torch.device("cpu"), native_bf16=True) == "bf16"
    assert precision_device("auto", "auto") == "auto" and precision_device("auto", "cuda") == "cuda"
    assert check_precision(" Auto ") == "auto"
    with pytest.raises(ConfigError, match="auto, fp32, bf16, int8"):
        resolve_precision("fp16")
    # no /proc/cpuinfo (macOS, Windows): torch's answer, which in this torch is "unknown" = no
    monkeypatch.setattr(prec, "cpu_flags", lambda: None)
    monkeypatch.setattr(prec, "_torch_reports_native_bf16", lambda: False)
    assert resolve_precision("auto", "cpu") == "fp32"
    monkeypatch.setattr(prec, "_torch_reports_native_bf16", lambda: True)
    assert resolve_precision("auto", "cpu") == "bf16"


@pytest.mark.parametrize("native", [False, True])
def test_detector_load_auto(lora_ckpt, monkeypatch, native):
    import mpft.precision as prec
    from mpft.detector import Detector

    monkeypatch.setattr(prec, "cpu_has_native_bf16", lambda flags=None: native)
    det = Detector.load(lora_ckpt, device="cpu", precision="auto")
    assert det.precision == ("bf16" if native else "fp32")
    assert det.model_id.endswith("-bf16") is native


def test_cli_precision_auto(lora_ckpt, tmp_path, capsys, monkeypatch):
    import mpft.precision as prec

    monkeypatch.setattr(prec, "cpu_has_native_bf16", lambda flags=None: False)
    _write_images(tmp_path / "imgs", n=2)
    code = main(["predict", str(tmp_path / "imgs"), "--model", str(lora_ckpt), "--format", "jsonl",
                 "--precision", "auto"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert [json.loads(line)["model_id"].endswith("-bf16") for line in out.splitlines()] == [False, False]
