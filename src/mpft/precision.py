"""Inference precision: fp32 as trained, bf16 autocast, or int8 weights for faster CPU inference.

``bf16`` keeps the fp32 weights and runs the forward under ``torch.autocast(dtype=bfloat16)``:
matrix multiplications in bfloat16 (fp32 accumulation), LayerNorms, softmax and the residual
stream in fp32. On CPUs with native bf16 instructions (AVX512_BF16 / AMX) it is ~1.8x faster
than fp32 and scores move by a few 1e-3 (measured in docs/performance.md); on older CPUs
oneDNN emulates it and it can be slower than fp32, which ``benchmarks/speed.py`` shows. On a
GPU, ``fp32`` inference already runs in bf16 autocast (tensor cores), so ``bf16`` is the same there.

``auto`` picks for the machine: ``bf16`` where the CPU has native bf16 instructions
(``avx512_bf16`` or ``amx_bf16`` in ``/proc/cpuinfo``), ``fp32`` everywhere else, including on a
GPU. Measured on an AVX2-only CPU, bf16 took 2.2x as long as fp32 and moved scores by up to
0.0085, so bf16 is never chosen by guesswork (:func:`resolve_precision`).

``int8`` is PyTorch dynamic quantization of the backbone's ``nn.Linear`` layers (attention
q/k/v/out and MLP projections, which hold ~99% of a ViT's FLOPs): weights are stored as int8
with one scale per output channel; activations are quantized per batch at run time. It runs on
the CPU only (fbgemm / x86 kernels). The patch-embedding convolution, LayerNorms and the
detector head stay fp32: they are a negligible share of the work, and the head decides the
score, so it keeps full precision.

Activations are quantized with ``reduce_range`` (7-bit) unless the CPU has VNNI: without it,
fbgemm multiplies u8 x s8 pairs into int16 accumulators (``vpmaddubsw``) that saturate with
full 8-bit ranges, and 7 bits avoid that. With VNNI (``avx512_vnni`` / ``avx_vnni`` in the CPU
flags) the products accumulate in int32, so the full 8-bit range is safe and halves the error
(max |dp| 0.168 -> 0.070 on the default detector, docs/performance.md). Torch's dynamic Linear
always asks for 7 bits; :class:`_DynamicLinear` passes the flag through. Whether int8 is worth
using is measured, not assumed: ``benchmarks/speed.py`` compares speed, score agreement and
AUC against fp32 (see docs/performance.md).

LoRA checkpoints: the adapters are first merged into their base weights (W + B @ A * scale),
then the merged Linear is quantized; quantizing the wrapper would leave the adapter path fp32
and the base weights unmerged.
"""

from __future__ import annotations

import copy
import functools
import logging
import sys
import warnings
from collections.abc import Callable
from contextlib import nullcontext

import torch
from torch import nn

from mpft.errors import ConfigError
from mpft.model import DetectorModel

__all__ = [
    "NATIVE_BF16_FLAGS",
    "PRECISIONS",
    "PRECISION_CHOICES",
    "apply_precision",
    "autocast_for",
    "cpu_flags",
    "cpu_has_native_bf16",
    "cpu_has_vnni",
    "check_precision",
    "merge_lora",
    "model_precision",
    "precision_device",
    "quantize_int8",
    "resolve_precision",
]

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "bf16", "int8")
#: What ``--precision`` accepts: a precision, or ``auto`` (:func:`resolve_precision` picks one).
PRECISION_CHOICES = ("auto", *PRECISIONS)
#: x86 CPU flags of native bf16 arithmetic (AVX512-BF16 dot products, AMX bf16 tiles). Without
#: one of them oneDNN emulates bf16 with fp32 instructions plus conversions: slower than fp32.
NATIVE_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})
#: Attribute set on a model prepared by :func:`apply_precision` (read with :func:`model_precision`).
_PRECISION_ATTR = "mpft_precision"


def check_precision(precision: str) -> str:
    """The normalised precision name: one of :data:`PRECISION_CHOICES` (``auto`` kept as it is).

    Raises:
        ConfigError: not one of :data:`PRECISION_CHOICES`.
    """
    name = str(precision).strip().lower()
    if name not in PRECISION_CHOICES:
        raise ConfigError(f"unknown --precision {precision!r}; choose one of {', '.join(PRECISION_CHOICES)}")
    return name


def cpu_flags() -> frozenset[str] | None:
    """The CPU feature flags of ``/proc/cpuinfo`` (x86 ``flags``, Arm ``Features``); None if unreadable."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                key, sep, value = line.partition(":")
                if sep and key.strip() in ("flags", "Features"):
                    return frozenset(value.split())
    except OSError:
        pass
    return None


def _torch_reports_native_bf16() -> bool:
    # Where /proc/cpuinfo is missing (macOS, Windows): some torch builds expose the check; this
    # one (2.13) does not, and then the answer is no, which keeps auto on fp32.
    probe = getattr(torch._C._cpu, "_is_avx512_bf16_supported", None)
    amx = getattr(torch._C._cpu, "_is_amx_tile_supported", None)
    try:
        return bool(probe is not None and probe()) or bool(amx is not None and amx())
    except RuntimeError:
        return False


def cpu_has_native_bf16(flags: frozenset[str] | set[str] | None = None) -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX-BF16).

    Args:
        flags: CPU flags to judge; default: :func:`cpu_flags`, or torch's own check where
            ``/proc/cpuinfo`` cannot be read.
    """
    if flags is None:
        flags = cpu_flags()
        if flags is None:
            return _torch_reports_native_bf16()
    return bool(NATIVE_BF16_FLAGS & set(flags))


def resolve_precision(
    precision: str, device: str | torch.device = "cpu", *, native_bf16: bool | None = None
) -> str:
    """The precision to run: ``precision`` itself, or for ``auto`` the right one for the machine.

    ``auto`` is ``bf16`` on a CPU with native bf16 (:func:`cpu_has_native_bf16`; ~1.8x faster than
    fp32 there, scores within 0.005) and ``fp32`` elsewhere: on CPUs without it bf16 is emulated
    and slower than fp32, and on a GPU fp32 already runs in bf16 autocast. Never ``int8`` (it
    fails the accuracy gate, docs/performance.md).

    Args:
        device: where the model will run ("cpu", "cuda:0", "auto", a torch.device); "auto"
            means a GPU when torch sees one.
        native_bf16: override the CPU check (tests).

    Raises:
        ConfigError: unknown precision.
    """
    name = check_precision(precision)
    if name != "auto":
        return name
    kind = torch.device(device).type if str(device) != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    if kind != "cpu":
        choice, why = "fp32", f"on {kind} fp32 already runs in bf16 autocast"
    else:
        native = cpu_has_native_bf16() if native_bf16 is None else native_bf16
        choice = "bf16" if native else "fp32"
        why = "the CPU has native bf16" if native else "no native bf16 (AVX512-BF16/AMX) on this CPU: bf16 is slower"
    log.info("--precision auto: %s (%s)", choice, why)
    return choice


def precision_device(precision: str, device: str) -> str:
    """The device name to run ``precision`` on: int8 turns ``auto`` into ``cpu``.

    ``precision`` may be ``auto``, which never chooses int8, so it leaves ``device`` as it is.

    Raises:
        ConfigError: unknown precision, or int8 asked for on a GPU.
    """
    precision = check_precision(precision)
    if precision == "int8":
        if device == "auto":
            return "cpu"
        if device != "cpu":
            raise ConfigError(
                f"--precision int8 runs on the CPU only (PyTorch dynamic quantization), not on {device!r}; "
                "use --device cpu, or fp32 on the GPU (which already runs in bf16 autocast)"
            )
    return device


def model_precision(model: nn.Module) -> str:
    """The precision a model was prepared for by :func:`apply_precision` (``"fp32"`` if none)."""
    return str(getattr(model, _PRECISION_ATTR, "fp32"))


def _replace_modules(root: nn.Module, make: Callable[[nn.Module], nn.Module | None]) -> int:
    """Swap submodules for ``make(child)`` wherever ``make`` returns one. Returns how many were swapped.

    A module registered under several parents (a backbone adapter keeps references to the blocks and
    the projection of the transformers model it wraps) is converted once and the same new
    module is put in every parent, so the copies never diverge.
    """
    done: dict[int, nn.Module] = {}
    for parent in list(root.modules()):
        for name, child in list(parent._modules.items()):
            if child is None:
                continue
            key = id(child)
            if key not in done:
                new = make(child)
                if new is None:
                    continue
                done[key] = new
            parent._modules[name] = done[key]
    return len(done)


def merge_lora(model: DetectorModel, *, inplace: bool = False) -> DetectorModel:
    """Fold every LoRA adapter into its base Linear (W <- W + B @ A * scale) and drop the wrappers.

    The result computes the same function (up to fp32 rounding) with plain ``nn.Linear``
    layers; it is for inference: it no longer has adapter tensors to train or save.
    A model without adapters is returned unchanged (copied unless ``inplace``).
    """
    if "peft" not in sys.modules:
        # adapters only exist once peft was imported to inject them; importing it to find none costs 0.2 s
        return model if inplace else copy.deepcopy(model)
    if not inplace:
        model = copy.deepcopy(model)
    try:
        from peft.tuners.lora import LoraLayer
    except ImportError:  # pragma: no cover - peft is a dependency; without it there are no adapters
        return model

    def unwrap(child: nn.Module) -> nn.Module | None:
        if not isinstance(child, LoraLayer):
            return None
        with torch.no_grad():
            child.merge()
        return child.get_base_layer()

    n = _replace_modules(model, unwrap)
    if n:
        log.debug("merged %d LoRA adapters into their base weights", n)
    return model


def cpu_has_vnni() -> bool:
    """Whether this CPU multiplies int8 pairs into int32 (AVX512-VNNI or AVX-VNNI); False if unknown.

    Read from ``/proc/cpuinfo`` (Linux). Elsewhere the answer is False, which keeps int8 on the
    safe 7-bit activation range.
    """
    return bool((cpu_flags() or frozenset()) & {"avx512_vnni", "avx_vnni", "amx_int8"})


@functools.cache
def _dynamic_linear_class() -> type[nn.Module]:
    """torch's dynamic int8 Linear, with the activation range (7 or 8 bits) chosen per layer."""
    from torch.ao.nn.quantized.dynamic import Linear as DynamicQuantizedLinear

    class _DynamicLinear(DynamicQuantizedLinear):
        # torch's forward hard-codes reduce_range=True (7-bit activations), right for CPUs
        # without VNNI and a needless loss of accuracy on the others
        reduce_range: bool = True

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = torch.ops.quantized.linear_dynamic(x, self._packed_params._packed_params,
                                                   reduce_range=self.reduce_range)
            return y.to(x.dtype)

        def extra_repr(self) -> str:
            return super().extra_repr() + f", reduce_range={self.reduce_range}"

    return _DynamicLinear


def quantize_int8(model: DetectorModel, *, inplace: bool = False, reduce_range: bool | None = None) -> DetectorModel:
    """Dynamic int8 quantization of the encoder's Linear layers (LoRA merged first); CPU only.

    Args:
        model: an fp32 detector (any tuning strategy), on the CPU.
        inplace: convert ``model`` itself (saves a copy's memory when loading for inference).
        reduce_range: quantize activations to 7 bits instead of 8. ``None``: 7 bits unless
            :func:`cpu_has_vnni` (8 bits would saturate int16 accumulators without VNNI).

    Returns:
        The converted model in eval mode, ``model_precision(result) == "int8"``. Its forward takes
        the same inputs and gives (B,) logits close to the fp32 ones; how close depends on the
        model (on the default detector, up to 0.07 in probability: int8 fails this project's
        0.01 agreement gate, see docs/performance.md).

    Raises:
        ConfigError: the model has parameters outside the CPU.
    """
    if model_precision(model) == "int8":
        return model
    devices = {p.device.type for p in model.parameters()}
    if devices - {"cpu"}:
        raise ConfigError(f"int8 quantization runs on the CPU only; the model is on {sorted(devices)}")
    if reduce_range is None:
        reduce_range = not cpu_has_vnni()
    model = merge_lora(model, inplace=inplace)
    model.eval()
    # torch.ao.quantization and quantized tensors are deprecated in favour of torchao (not
    # installed here); their dynamic Linear kernels are still the fast CPU path in this torch,
    # so the notices would only alarm users of `mpft predict --precision int8`.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        warnings.filterwarnings("ignore", message=r".*quantized tensor creation functions", category=UserWarning)
        from torch.ao.quantization import per_channel_dynamic_qconfig

        linear_cls = _dynamic_linear_class()
        enc = model.encoder
        # the transformer's compute (blocks, head side) only: an input embedding that is a Linear
        # (SigLIP 2 NaFlex's patch embedding) takes pixels and stays fp32, like CLIP's conv
        quantizable = {id(p) for i in range(enc.num_layers) for p in enc.block_parameters(i)}
        quantizable |= {id(p) for p in enc.head_side_parameters()}

        def to_int8(child: nn.Module) -> nn.Module | None:
            if type(child) is not nn.Linear or id(child.weight) not in quantizable:
                return None
            child.qconfig = per_channel_dynamic_qconfig
            q = linear_cls.from_float(child)
            q.reduce_range = bool(reduce_range)
            return q

        n = _replace_modules(model.encoder, to_int8)
    if n == 0:
        raise ConfigError("int8 quantization found no Linear layer to convert in the encoder")
    setattr(model, _PRECISION_ATTR, "int8")
    log.info("quantized %d Linear layers to int8 (dynamic, per-channel weights, %d-bit activations)",
             n, 7 if reduce_range else 8)
    return model


def autocast_for(device: torch.device, precision: str = "fp32"):
    """The autocast context a forward in ``precision`` runs under on ``device``.

    GPU: bf16 autocast for fp32 and bf16 (tensor cores; the long-standing default). CPU: bf16
    autocast only for ``bf16``: fp32 stays exact, and int8 layers take fp32 activations.
    """
    if device.type == "cuda" or (precision == "bf16" and device.type == "cpu"):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return nullcontext()


def apply_precision(
    model: DetectorModel, precision: str, *, inplace: bool = True, device: str | torch.device | None = None
) -> DetectorModel:
    """``model`` prepared for inference in ``precision``.

    "fp32": unchanged. "bf16": LoRA merged, weights unchanged, marked so that
    :func:`autocast_for` runs it in bf16 autocast. "int8": :func:`quantize_int8`. "auto":
    :func:`resolve_precision` for ``device`` (default: where the model's parameters are), so
    :func:`model_precision` of the result says what was chosen.
    """
    precision = check_precision(precision)
    if precision == "auto":
        if device is None:
            device = next((p.device for p in model.parameters()), torch.device("cpu"))
        precision = resolve_precision(precision, device)
    if precision == "int8":
        return quantize_int8(model, inplace=inplace)
    if precision == "bf16":
        model = merge_lora(model, inplace=inplace)
        setattr(model, _PRECISION_ATTR, "bf16")
    return model
