"""Why int8 fails the accuracy gate: error of int8 variants on a trained detector (CPU).

For each variant, max and mean |P_variant - P_fp32| over real photos, the largest logit change
and images/s at batch 64 (one process, same inputs):

- ``dynamic-7bit`` / ``dynamic-8bit``: what ``--precision int8`` runs (torch dynamic quantization,
  per-channel weights, per-tensor activations), with 7-bit (``reduce_range``) or 8-bit activations;
- ``dynamic-8bit-skip-<layer>``: the same with one layer type left in fp32, to see whether one
  layer type carries the error;
- ``w8a8-per-token`` and ``w8a8-smooth-<alpha>``: per-token symmetric activations and
  per-channel weights through ``torch._int_mm``, without and with SmoothQuant-style smoothing
  (per-input-channel scales from activation maxima on calibration photos, folded into the
  weights), written here in plain torch (unfused, so slower than the kernels above).

    python benchmarks/int8_variants.py --model src/mpft/detectors/default      # ~12 min on 2 cores

Figures go to stdout (and ``--json PATH``); docs/performance.md quotes them.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
import warnings
from pathlib import Path

import torch
from torch import nn

REPO = Path(__file__).resolve().parents[1]
NATURE = REPO.parent / "shared" / "data" / "imagenet_samples" / "nature"
LAYERS = ("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2")


class W8A8Linear(nn.Module):
    """int8 x int8 -> int32 Linear: per-token activation scales, per-output-channel weight scales."""

    def __init__(self, lin: nn.Linear, smooth: torch.Tensor | None = None):
        super().__init__()
        w = lin.weight.detach().float()
        self.inv_smooth = None
        if smooth is not None:
            w = w * smooth
            self.inv_smooth = 1.0 / smooth
        scale = w.abs().amax(1).clamp_min(1e-8) / 127
        self.wq = torch.round(w / scale[:, None]).clamp(-127, 127).to(torch.int8).t().contiguous()
        self.w_scale = scale
        self.bias = None if lin.bias is None else lin.bias.detach().clone()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        x = x.reshape(-1, shape[-1])
        if self.inv_smooth is not None:
            x = x * self.inv_smooth
        xs = x.abs().amax(1, keepdim=True).clamp_min(1e-8) / 127
        xq = torch.round(x / xs).to(torch.int8)
        m = xq.shape[0]
        if m <= 16:  # _int_mm wants more than 16 rows
            xq = nn.functional.pad(xq, (0, 0, 0, 17 - m))
        y = torch._int_mm(xq, self.wq)[:m].float() * xs * self.w_scale
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*shape[:-1], -1)


def replace_linears(model, make) -> None:
    from mpft.precision import _replace_modules

    names = {id(m): n for n, m in model.encoder.named_modules()}
    _replace_modules(model.encoder, lambda c: make(names.get(id(c), ""), c) if type(c) is nn.Linear else None)


def input_maxima(model, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-input-channel max |activation| entering each encoder Linear."""
    stats: dict[str, torch.Tensor] = {}
    hooks = []
    for name, m in model.encoder.named_modules():
        if type(m) is nn.Linear:
            def hook(_mod, inp, _out, name=name):
                a = inp[0].detach().reshape(-1, inp[0].shape[-1]).abs().amax(0)
                stats[name] = torch.maximum(stats[name], a) if name in stats else a
            hooks.append(m.register_forward_hook(hook))
    with torch.inference_mode():
        model(x)
    for h in hooks:
        h.remove()
    return stats


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path, default=REPO / "src" / "mpft" / "detectors" / "default")
    ap.add_argument("--images", type=Path, default=NATURE)
    ap.add_argument("--n", type=int, default=64, help="Photos compared.")
    ap.add_argument("--n-calib", type=int, default=32, help="Other photos for the smoothing statistics.")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    warnings.filterwarnings("ignore")
    from mpft.detector import Detector
    from mpft.precision import _replace_modules, quantize_int8

    det = Detector.load(args.model, device="cpu")
    files = sorted(p for p in args.images.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    if len(files) < args.n + args.n_calib:
        print(f"need {args.n + args.n_calib} photos in {args.images}, found {len(files)}", file=sys.stderr)
        return 2
    x = torch.cat([det.prepare(p)[1] for p in files[: args.n]])
    calib = torch.cat([det.prepare(p)[1] for p in files[args.n: args.n + args.n_calib]])
    base = det.model
    with torch.inference_mode():
        ref = base(x).float()
    p_ref = torch.sigmoid(ref)

    def dynamic(reduce_range: bool, skip: str | None = None):
        q = quantize_int8(copy.deepcopy(base), inplace=True, reduce_range=reduce_range)
        if skip is not None:  # put that layer type back in fp32
            fp = dict(base.encoder.named_modules())
            names = {id(mod): n for n, mod in q.encoder.named_modules()}
            _replace_modules(q.encoder, lambda c: copy.deepcopy(fp[names[id(c)]])
                             if names.get(id(c), "").endswith(skip) else None)
        return q

    def w8a8(alpha: float | None):
        m = copy.deepcopy(base)
        stats = input_maxima(base, calib) if alpha is not None else {}

        def make(name: str, lin: nn.Linear):
            smooth = None
            if alpha is not None:
                a = stats[name].clamp_min(1e-5)
                w = lin.weight.detach().abs().amax(0).clamp_min(1e-5)
                smooth = (a**alpha / w ** (1 - alpha)).clamp_min(1e-5)
            return W8A8Linear(lin, smooth)

        replace_linears(m, make)
        return m

    variants = {"fp32": lambda: base, "dynamic-7bit": lambda: dynamic(True), "dynamic-8bit": lambda: dynamic(False)}
    for layer in LAYERS:
        variants[f"dynamic-8bit-skip-{layer}"] = lambda layer=layer: dynamic(False, layer)
    variants["w8a8-per-token"] = lambda: w8a8(None)
    for alpha in (0.5, 0.85):
        variants[f"w8a8-smooth-{alpha}"] = lambda alpha=alpha: w8a8(alpha)

    rows = {}
    print(f"{'variant':32s} {'max|dp|':>8s} {'mean|dp|':>9s} {'max|dlogit|':>11s} {'img/s':>6s}")
    for name, build in variants.items():
        m = build()
        with torch.inference_mode():
            m(x[:2])
            t0 = time.perf_counter()
            out = m(x).float()
            dt = time.perf_counter() - t0
        d = (torch.sigmoid(out) - p_ref).abs()
        rows[name] = {"max_abs_dp": float(d.max()), "mean_abs_dp": float(d.mean()),
                      "max_abs_dlogit": float((out - ref).abs().max()), "images_per_s": args.n / dt}
        r = rows[name]
        print(f"{name:32s} {r['max_abs_dp']:8.4f} {r['mean_abs_dp']:9.4f} {r['max_abs_dlogit']:11.3f} "
              f"{r['images_per_s']:6.2f}", flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"model": str(args.model), "images": args.n, "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
