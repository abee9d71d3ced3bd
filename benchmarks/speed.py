"""CPU speed, memory and reduced-precision (bf16, int8) accuracy of mpft against its targets (issue 7).

Measures, prints and saves to JSON (``--json PATH``) one entry per configuration, written as
soon as that configuration finishes; a rerun skips the entries already there (same settings,
same machine) unless ``--force``, so an interrupted run resumes where it stopped. At the end it
prints every target with PASS / FAIL / SKIP (targets and method: docs/performance.md).

Sections (``--only a,b`` / ``--skip a,b``):

- ``roofline``: fp32 matmul GFLOP/s of this machine (large square torch.mm, best of several),
  and analytic FLOPs per image of each backbone;
- ``forward``: images/s of the detector forward alone (uint8 batch in, probabilities out) at
  batch 1/8/32, fp32, bf16 and int8, for the main backbone (B/16) and the large one (L/14);
- ``e2e``: images/s of ``Detector.predict_iter`` (what ``mpft predict`` runs: decode +
  preprocess in worker processes + forward) on real JPEGs (ImageNet ~500x375, resize policy)
  and on CIFAKE 32x32;
- ``peer``: the plain pipeline most CLIP detectors use (PIL + numpy CLIP transform,
  transformers CLIPVisionModelWithProjection fp32, one image at a time, no workers);
- ``accuracy``: for bf16 and int8, max |p - p_fp32| on real images, and the AUC change on
  ``--auc-data``: the gate a reduced precision must pass to count for the peer target;
- ``train``: training step time with TAM drop / fill / no masking (last-k K=4 and full);
- ``memory``: peak RSS of ``mpft predict`` and of a few last-k training steps (subprocesses);
- ``paths``: optional speed paths (inference_mode, bf16 autocast, channels-last, torch.compile,
  threads, LoRA merge), each kept only if faster and equivalent (|dp| < 1e-3);
- ``decode``: ms per image of decode + preprocess, with and without PIL's JPEG draft mode.

    python benchmarks/speed.py --json runs/speed.json                 # full run (~20-30 min on 2 cores)
    python benchmarks/speed.py --json runs/speed.json --model runs/x/best \\
        --auc-data ../shared/data/cifake_sd14 --auc-limit 200
    python benchmarks/speed.py --quick --json /tmp/speed-quick.json   # tiny sizes, seconds (CI smoke)

Without ``--model`` a detector is built on the backbone (``clip-vit-b16`` when cached, else
``random:b16``) with a LoRA adapter and a head fitted so that logits on real photos have a
standard deviation of 3 (a trained detector's spread), so score differences mean something.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import logging
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
DEFAULT_NATURE = SHARED / "imagenet_samples" / "nature"
DEFAULT_CIFAKE = SHARED / "cifake_sd14" / "val"
SCHEMA = 1
SECTIONS = ("roofline", "forward", "e2e", "peer", "accuracy", "train", "memory", "paths", "decode")
PRECISIONS = ("fp32", "bf16", "int8")
#: reduced precisions: each counts for the peer target only if it passes the accuracy gate
REDUCED = ("bf16", "int8")
GB = 1e9

# target id -> (description, comparison, threshold)
TARGETS: dict[str, tuple[str, str, float]] = {
    "forward_roofline": ("B/16 fp32 forward at batch 32: fraction of the matmul roofline", ">=", 0.70),
    "e2e_vs_forward": ("end to end (decode+preprocess+forward, batch 32) / forward alone", ">=", 0.85),
    "peer_ratio": ("our end-to-end images/s / the peer pipeline's (best kept precision)", ">=", 1.5),
    "int8_agreement": ("int8 vs fp32: max |probability difference| on real images", "<", 0.01),
    "int8_auc": ("int8 vs fp32: |AUC difference| on --auc-data", "<", 0.005),
    "bf16_agreement": ("bf16 vs fp32: max |probability difference| on real images", "<", 0.01),
    "bf16_auc": ("bf16 vs fp32: |AUC difference| on --auc-data", "<", 0.005),
    "tam_drop_speedup": ("training step time, TAM drop rho=0.5 / no masking (each strategy)", "<=", 0.6),
    "memory_predict": ("peak RSS of mpft predict (GB, 1e9 bytes)", "<=", 1.5),
    "memory_train": ("peak RSS of last-k training at batch 16 (GB, 1e9 bytes)", "<=", 6.0),
}
# a speed path is kept only when at least this much faster and equivalent within PATH_TOL
PATH_MIN_SPEEDUP = 1.03
PATH_TOL = 1e-3

log = logging.getLogger("speed")


# --------------------------------------------------------------------------------------------------
# Settings
# --------------------------------------------------------------------------------------------------


@dataclass
class Plan:
    """Sizes of every measurement; ``--quick`` swaps them all for tiny ones."""

    mode: str
    backbone: str
    large: str
    train_backbone: str
    batches: tuple[int, ...] = (1, 8, 32)
    fwd_iters: dict = field(default_factory=lambda: {1: 8, 8: 4, 32: 3})
    large_iters: dict = field(default_factory=lambda: {1: 3, 8: 2, 32: 2})
    warmup: int = 1
    n_e2e: int = 64
    n_peer: int = 24
    n_agree: int = 64
    n_head_fit: int = 16
    train_batch: int = 16
    train_steps: int = 2
    mem_images: int = 32
    mem_train_steps: int = 3
    mm_sizes: tuple[int, ...] = (2048, 4096)
    mm_repeats: int = 4
    paths_batch: int = 8
    paths_iters: int = 3
    n_decode: int = 48

    @classmethod
    def quick(cls) -> Plan:
        return cls(
            mode="quick", backbone="random:tiny", large="random:tiny@1", train_backbone="random:tiny",
            fwd_iters={1: 2, 8: 2, 32: 2}, large_iters={1: 1, 8: 1, 32: 1}, n_e2e=16, n_peer=4, n_agree=16,
            n_head_fit=8, train_batch=4, train_steps=2, mem_images=4, mem_train_steps=2, mm_sizes=(256,),
            mm_repeats=2, paths_iters=2, n_decode=4,
        )


def machine_fingerprint() -> dict:
    """What makes figures comparable: a cached figure from another machine is measured again."""
    cpu = platform.processor()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "host": platform.node(),
    }


# --------------------------------------------------------------------------------------------------
# Resumable store
# --------------------------------------------------------------------------------------------------


class Store:
    """The JSON file: ``results[key]`` holds one configuration's figures, its params and machine."""

    def __init__(self, path: Path | None, *, force: bool, machine: dict):
        self.path, self.force, self.machine = path, force, machine
        self.data: dict = {"schema": SCHEMA, "meta": {}, "results": {}, "targets": {}}
        if path is not None and path.is_file():
            try:
                old = json.loads(path.read_text())
            except json.JSONDecodeError as exc:
                raise SystemExit(f"--json {path} is not valid JSON ({exc}); move it away or pass another") from None
            if old.get("schema") == SCHEMA:
                self.data = old
        self.measured: list[str] = []
        self.reused: list[str] = []

    @property
    def results(self) -> dict:
        return self.data["results"]

    def cached(self, key: str, params: dict) -> dict | None:
        r = self.results.get(key)
        if self.force or r is None or r.get("failed"):
            return None
        if r.get("params") != params:
            return None
        if r.get("machine") != self.machine:
            print(f"  {key}: cached figure is from another machine or thread count; measuring again")
            return None
        return r

    def put(self, key: str, params: dict, value: dict) -> dict:
        entry = {**value, "params": params, "machine": self.machine,
                 "finished": datetime.now(UTC).isoformat(timespec="seconds")}
        self.results[key] = entry
        self.save()
        return entry

    def save(self) -> None:
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        tmp.write_text(json.dumps(self.data, indent=2, default=_json_default) + "\n")
        os.replace(tmp, self.path)  # atomic: an interrupted write never corrupts finished entries

    def run(self, key: str, params: dict, fn: Callable[[], dict], show: Callable[[dict], str], *,
            force: bool = False) -> dict:
        hit = None if force else self.cached(key, params)
        if hit is not None:
            self.reused.append(key)
            print(f"  {key:<44} {show(hit)}  (cached)")
            return hit
        t0 = time.perf_counter()
        try:
            value = fn()
        except Exception as exc:  # noqa: BLE001 - one failed configuration must not lose the others
            traceback.print_exc()
            value = {"failed": True, "error": f"{type(exc).__name__}: {exc}"}
        value["wall_s"] = round(time.perf_counter() - t0, 2)
        entry = self.put(key, params, value)
        self.measured.append(key)
        print(f"  {key:<44} {show(entry) if not entry.get('failed') else 'FAILED: ' + entry['error']}")
        return entry


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(type(o))


# --------------------------------------------------------------------------------------------------
# FLOPs and timing helpers
# --------------------------------------------------------------------------------------------------


def vit_flops(image_size: int, patch: int, width: int, layers: int, mlp: int, embed: int,
              tokens: int | None = None) -> dict:
    """Forward FLOPs of one image through a CLIP ViT (multiply-add = 2 FLOPs).

    N tokens (patches + CLS), D width, L blocks, M MLP width, E projection:
    patch embedding 2*P*(3*p^2)*D over the P patches; per block 4*N*D^2*2 (q, k, v, out),
    2*N^2*D*2 (QK^T and attention x V), 2*N*D*M*2 (two MLP matmuls); projection 2*D*E.
    LayerNorms, softmax, GELU and the bias adds are O(N*D) and left out (<1%).
    """
    patches = (image_size // patch) ** 2
    n = 1 + patches if tokens is None else tokens
    parts = {
        "patch_embed": 2 * patches * 3 * patch * patch * width,
        "attn_proj": layers * 4 * n * width * width * 2,
        "attn_scores": layers * 2 * n * n * width * 2,
        "mlp": layers * 2 * n * width * mlp * 2,
        "projection": 2 * width * embed,
    }
    parts["total"] = sum(parts.values())
    return parts


def encoder_flops(enc) -> dict:
    cfg = enc.config
    return vit_flops(enc.image_size, enc.patch_size, enc.width, enc.num_layers, int(cfg.intermediate_size),
                     enc.embed_dim)


def time_calls(fn: Callable[[], object], *, warmup: int, iters: int) -> dict:
    """Median and best seconds per call after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(max(1, iters)):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return {"median_s": statistics.median(times), "best_s": min(times), "times_s": [round(t, 4) for t in times]}


@contextlib.contextmanager
def num_threads(n: int | None) -> Iterator[None]:
    before = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


# --------------------------------------------------------------------------------------------------
# Images
# --------------------------------------------------------------------------------------------------


def _synthetic(folder: Path, n: int, size: tuple[int, int], seed: int) -> list[Path]:
    """JPEGs with smooth gradients and noise (stand-ins when the shared data is absent)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    out = []
    for i in range(n):
        base = (xx * rng.uniform(0.2, 1) + yy * rng.uniform(0.2, 1)) % 256
        arr = np.stack([base, base[::-1], rng.integers(0, 256, (h, w))], -1).astype(np.uint8)
        p = folder / f"synthetic_{i:04d}.jpg"
        Image.fromarray(arr).save(p, quality=90)
        out.append(p)
    return out


def image_set(folder: Path | None, n: int, *, fallback_size: tuple[int, int], scratch: Path, name: str,
              ) -> tuple[list[Path], str]:
    """The first ``n`` images of ``folder`` (sorted, recursive), or synthetic ones when it is absent."""
    from mpft.data.layouts import list_images

    if folder is not None and folder.is_dir():
        files = sorted(list_images(folder, recursive=True))
        if files:
            # interleave sub-folders (cifake val/ai and val/nature) so a prefix holds both
            by_dir: dict[Path, list[Path]] = {}
            for f in files:
                by_dir.setdefault(f.parent, []).append(f)
            mixed = [f for group in zip(*by_dir.values(), strict=False) for f in group] if len(by_dir) > 1 else files
            if len(mixed) < n:
                mixed = files
            return [mixed[i % len(mixed)] for i in range(n)], str(folder)
    return _synthetic(scratch / name, n, fallback_size, seed=hash(name) % 1000), "synthetic"


# --------------------------------------------------------------------------------------------------
# Detectors
# --------------------------------------------------------------------------------------------------


def default_backbone() -> str:
    from mpft.backbones.registry import b16_cache_dir

    return "clip-vit-b16" if (b16_cache_dir() / "model.safetensors").is_file() else "random:b16"


def fit_head(model, images: list[Path], policy, logit_std: float = 3.0, seed: int = 0) -> None:
    """A random head direction scaled so that logits on ``images`` have std ``logit_std`` and mean 0.

    An untrained head (std 0.01) puts every probability at 0.5, where fp32 and int8 always
    agree; a trained detector's logits spread over several units, where differences show.
    """
    from mpft.data.images import decode_image
    from mpft.pipeline import view_pixels
    from mpft.views import ViewConfig

    x = torch.cat([view_pixels(decode_image(p).image, policy, ViewConfig()) for p in images])
    with torch.inference_mode():
        emb = model.encoder(model.encoder.normalize(x.float() / 255.0)).embedding
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(emb.shape[1], generator=g)
    proj = emb @ w
    scale = logit_std / float(proj.std().clamp_min(1e-8))
    with torch.no_grad():
        model.head.weight.copy_((w * scale).view(1, -1))
        model.head.bias.fill_(-float(proj.mean()) * scale)


def build_checkpoint(spec: str, strategy: str, folder: Path, fit_images: list[Path]) -> Path:
    """A detector on ``spec`` (resize policy at the backbone's input size) with a fitted head."""
    from mpft.backbones import load_backbone
    from mpft.checkpoint import DetectorConfig, save_checkpoint
    from mpft.data.transforms import PreprocessPolicy
    from mpft.model import TuneConfig, create_model
    from mpft.tam import MaskConfig

    enc = load_backbone(spec)
    torch.manual_seed(0)
    model = create_model(enc, TuneConfig(strategy))
    policy = PreprocessPolicy(size=enc.image_size, resize=True)
    fit_head(model, fit_images, policy)
    cfg = DetectorConfig(backbone=spec, backbone_sha256=enc.weights_sha256, tune=model.tune.to_dict(),
                         mask=MaskConfig().to_dict(), preprocess=policy.to_dict())
    return save_checkpoint(folder, model, cfg)


class Detectors:
    """Loads each (checkpoint, precision) once, only when a measurement needs it."""

    def __init__(self):
        self._cache: dict[tuple[str, str], object] = {}

    def get(self, ckpt: Path, precision: str):
        from mpft.detector import Detector

        key = (str(ckpt), precision)
        if key not in self._cache:
            self._cache[key] = Detector.load(ckpt, device="cpu", precision=precision)
        return self._cache[key]

    def drop(self) -> None:
        self._cache.clear()


# --------------------------------------------------------------------------------------------------
# Measurements
# --------------------------------------------------------------------------------------------------


def measure_matmul(sizes: tuple[int, ...], repeats: int) -> dict:
    best = {}
    for n in sizes:
        a, b = torch.randn(n, n), torch.randn(n, n)
        t = time_calls(lambda a=a, b=b: torch.mm(a, b), warmup=1, iters=repeats)
        best[n] = 2 * n**3 / t["best_s"] / 1e9
    return {"gflops": max(best.values()), "by_size": {str(k): round(v, 2) for k, v in best.items()}}


def measure_forward(det, batch: int, *, warmup: int, iters: int, flops: float, roofline: float | None) -> dict:
    g = torch.Generator().manual_seed(batch)
    s = det.policy.size
    x = torch.randint(0, 256, (batch, 3, s, s), dtype=torch.uint8, generator=g)
    t = time_calls(lambda: det.score_tensors(x), warmup=warmup, iters=iters)
    ips = batch / t["median_s"]
    out = {"images_per_s": ips, **t, "gflops_achieved": ips * flops / 1e9}
    if roofline:
        out["roofline_fraction"] = out["gflops_achieved"] / roofline
    return out


def measure_e2e(det, paths: list[Path], *, batch: int, workers: int, resize: bool) -> dict:
    from mpft.data.transforms import PreprocessPolicy

    det = copy.copy(det)  # own policy, shared network
    det.policy = PreprocessPolicy(size=det.policy.size, resize=resize)
    list(det.predict_iter(paths[:1], batch_size=1, workers=0))  # warm kernels and caches
    t0 = time.perf_counter()
    preds = list(det.predict_iter(paths, batch_size=batch, workers=workers))
    dt = time.perf_counter() - t0
    errors = sum(p.error is not None for p in preds)
    return {"images_per_s": len(paths) / dt, "seconds": dt, "images": len(paths), "errors": errors}


def clip_transform(path: Path, size: int, mean, std) -> np.ndarray:
    """The standard CLIP eval transform in PIL + numpy: shorter side to ``size`` (bicubic), centre crop."""
    with Image.open(path) as im:
        im = im.convert("RGB")
        w, h = im.size
        scale = size / min(w, h)
        im = im.resize((max(size, round(w * scale)), max(size, round(h * scale))), Image.Resampling.BICUBIC)
        w, h = im.size
        left, top = (w - size) // 2, (h - size) // 2
        im = im.crop((left, top, left + size, top + size))
        arr = np.asarray(im, dtype=np.float32) / 255.0
    arr = (arr - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return arr.transpose(2, 0, 1)


def measure_peer(spec: str, paths: list[Path]) -> dict:
    """UnivFD-style pipeline: PIL open, CLIP transform, transformers fp32 forward, one image at a time."""
    from mpft.backbones import load_backbone

    enc = load_backbone(spec)
    model = enc.model.eval()  # a plain transformers CLIPVisionModelWithProjection, fresh weights
    head = torch.nn.Linear(enc.embed_dim, 1)
    size = enc.image_size

    def one(p: Path) -> float:
        x = torch.from_numpy(clip_transform(p, size, enc.mean, enc.std)).unsqueeze(0)
        with torch.no_grad():
            emb = model(pixel_values=x).image_embeds
            return float(torch.sigmoid(head(emb)))

    one(paths[0])
    t0 = time.perf_counter()
    for p in paths:
        one(p)
    dt = time.perf_counter() - t0
    return {"images_per_s": len(paths) / dt, "seconds": dt, "images": len(paths),
            "attn_implementation": getattr(model.config, "_attn_implementation", None)}


def probabilities(det, paths: list[Path], batch: int = 32) -> np.ndarray:
    return np.array([p.probability for p in det.predict_iter(paths, batch_size=batch)], dtype=np.float64)


def measure_agreement(det_fp, det_q, paths: list[Path]) -> dict:
    p_fp, p_q = probabilities(det_fp, paths), probabilities(det_q, paths)
    ok = ~(np.isnan(p_fp) | np.isnan(p_q))
    d = np.abs(p_fp[ok] - p_q[ok])
    return {"max_abs_diff": float(d.max()), "mean_abs_diff": float(d.mean()), "images": int(ok.sum()),
            "prob_std_fp32": float(p_fp[ok].std()),
            "verdict_flips_at_0.5": int(((p_fp[ok] >= 0.5) != (p_q[ok] >= 0.5)).sum())}


def measure_auc(ckpt: Path, data: Path, limit: int, workers: int, precision: str) -> dict:
    """AUC of fp32 and of ``precision`` on the same images (one process, one sample), each detector
    loaded by ``Detector.load`` and scored as ``mpft eval`` scores it."""
    from sklearn.metrics import roc_auc_score

    from mpft.data.dataset import ImageDataset
    from mpft.data.layouts import limit_per_class
    from mpft.detector import Detector
    from mpft.evaluation.inputs import resolve_eval_data
    from mpft.inference import score_dataset

    samples = limit_per_class(resolve_eval_data([data]).samples, limit, 0)
    labels = np.array([s.label for s in samples])
    out: dict = {"images": len(samples)}
    for p in ("fp32", precision):
        det = Detector.load(ckpt, device="cpu", precision=p)
        ds = ImageDataset(samples, det.policy, train=False, views=det.views)
        scores, _ = score_dataset(det.model, ds, batch_size=32, workers=workers, device=det.device,
                                  combine=det.views.combine)
        ok = ~np.isnan(scores)
        out[f"auc_{p}"] = float(roc_auc_score(labels[ok], scores[ok]))
    out["auc_reduced"] = out[f"auc_{precision}"]
    out["auc_diff"] = abs(out["auc_reduced"] - out["auc_fp32"])
    return out


def train_step_fn(spec: str, strategy: str, mask: str, batch: int, seed: int = 0) -> Callable[[], float]:
    """One optimiser step of the detector on random pixels (content does not change the cost)."""
    from mpft.model import TuneConfig, create_model
    from mpft.tam import MaskConfig, apply_mask

    torch.manual_seed(seed)
    model = create_model(spec, TuneConfig(strategy, layers=4))
    model.train()
    cfg = None if mask == "none" else MaskConfig(strategy="tam", ratio=0.5, apply=mask)
    optim = torch.optim.AdamW(model.parameter_groups(1e-3, 2e-5, 0.01))
    loss_fn = torch.nn.BCEWithLogitsLoss()
    g = torch.Generator().manual_seed(seed)
    s = model.encoder.image_size
    x = torch.randint(0, 256, (batch, 3, s, s), dtype=torch.uint8, generator=g)
    y = torch.randint(0, 2, (batch,), generator=g).float()

    def step() -> float:
        # masking is part of a training step's cost, as in mpft.training
        pixels, keep = apply_mask(x, cfg, model.encoder.patch_size, fill=model.encoder.mean, generator=g)
        logits = model(pixels, keep=keep)
        loss = loss_fn(logits.float(), y)
        optim.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)
        optim.step()
        return float(loss.detach())

    return step


_LAUNCHER = (
    "import json, resource, subprocess, sys\n"
    "r = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL)\n"
    "print(json.dumps({'rc': r.returncode, 'maxrss_kb': resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}))\n"
)


def peak_rss(cmd: list[str]) -> dict:
    """Peak resident memory of ``cmd`` (its largest process), measured by a fresh launcher process."""
    path = [str(REPO / "src"), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(path)}
    r = subprocess.run([sys.executable, "-c", _LAUNCHER, *cmd], capture_output=True, text=True, env=env,
                       check=False)
    if r.returncode != 0 or not r.stdout.strip():
        raise RuntimeError(f"launcher failed ({r.returncode}): {r.stderr[-500:]}")
    out = json.loads(r.stdout.strip().splitlines()[-1])
    if out["rc"] != 0:
        raise RuntimeError(f"{' '.join(cmd[:4])} ... exited with {out['rc']}")
    return {"peak_gb": out["maxrss_kb"] * 1024 / GB, "maxrss_kb": out["maxrss_kb"], "command": cmd}


def train_child(argv: list[str]) -> int:
    """``speed.py _train-child SPEC STRATEGY BATCH STEPS``: a few training steps, for peak RSS."""
    spec, strategy, batch, steps = argv[0], argv[1], int(argv[2]), int(argv[3])
    step = train_step_fn(spec, strategy, "drop", batch)
    for _ in range(steps):
        step()
    return 0


def decode_times(paths: list[Path], size: int, *, draft: bool) -> dict:
    """ms per image of decode + resize-policy preprocessing, as ``mpft predict`` runs it.

    ``draft``: reduced-scale JPEG decoding (``decode_image(draft_min_side=draft_side(policy))``,
    what a resizing detector uses); the model inputs are compared with full-size decoding's.
    """
    from mpft.data.images import decode_image
    from mpft.data.transforms import PreprocessPolicy, draft_side
    from mpft.pipeline import view_pixels
    from mpft.views import ViewConfig

    policy, center = PreprocessPolicy(size=size, resize=True), ViewConfig()
    side = draft_side(policy) if draft else None

    def view(p: Path, draft_min_side: int | None) -> np.ndarray:
        return view_pixels(decode_image(p, draft_min_side=draft_min_side).image, policy, center).numpy()

    t0 = time.perf_counter()
    inputs = [view(p, side) for p in paths]
    out = {"ms_per_image": 1000 * (time.perf_counter() - t0) / len(paths), "images": len(paths),
           "draft_min_side": side}
    if draft:
        diffs = [np.abs(x.astype(np.int16) - view(p, None).astype(np.int16))
                 for p, x in zip(paths, inputs, strict=True)]
        out["input_mean_abs_diff"] = float(np.mean([d.mean() for d in diffs]))
        out["input_max_abs_diff"] = int(max(d.max() for d in diffs))
    return out


# --------------------------------------------------------------------------------------------------
# Speed paths
# --------------------------------------------------------------------------------------------------


def speed_paths(det, batch: int, iters: int, *, try_compile: bool) -> dict[str, Callable[[], dict]]:
    """name -> measurement; each returns images/s and max |dp| against the baseline's probabilities."""
    from mpft.precision import merge_lora

    g = torch.Generator().manual_seed(123)
    s = det.policy.size
    x = torch.randint(0, 256, (batch, 3, s, s), dtype=torch.uint8, generator=g)
    model = det.model
    ref: dict = {}

    def run(fn: Callable[[], torch.Tensor], threads: int | None = None) -> dict:
        with num_threads(threads):
            t = time_calls(fn, warmup=1, iters=iters)
            probs = torch.sigmoid(fn().float())
        out = {"images_per_s": batch / t["median_s"], **t}
        if "probs" in ref:
            out["max_abs_diff"] = float((probs - ref["probs"]).abs().max())
            out["speedup"] = out["images_per_s"] / ref["ips"]
        else:
            ref["probs"], ref["ips"] = probs, out["images_per_s"]
        return out

    def inference_mode():
        with torch.inference_mode():
            return model(x)

    # first calls pay allocator growth and page faults: without this the baseline, measured
    # first, looked 1.5x slower than the identical no_grad path
    for _ in range(2):
        inference_mode()

    def no_grad():
        with torch.no_grad():
            return model(x)

    def bf16():
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
            return model(x)

    xc = x.contiguous(memory_format=torch.channels_last)

    def channels_last():
        with torch.inference_mode():
            return model(xc)

    paths: dict[str, Callable[[], dict]] = {
        "baseline_inference_mode": lambda: run(inference_mode),
        "no_grad": lambda: run(no_grad),
        "bf16_autocast": lambda: run(bf16),
        "channels_last": lambda: run(channels_last),
        "threads_1": lambda: run(inference_mode, threads=1),
    }
    if os.cpu_count() and os.cpu_count() > 1:
        paths[f"threads_{os.cpu_count()}"] = lambda: run(inference_mode, threads=os.cpu_count())

    def merged() -> dict:
        m = merge_lora(model)

        def f():
            with torch.inference_mode():
                return m(x)

        return run(f)

    paths["lora_merged"] = merged

    def compiled() -> dict:
        if not try_compile:
            return {"skipped": "torch.compile not attempted (--quick or --no-compile)"}
        try:
            cm = torch.compile(model)

            def f():
                with torch.inference_mode():
                    return cm(x)

            t0 = time.perf_counter()
            f()
            compile_s = time.perf_counter() - t0
        except Exception as exc:  # noqa: BLE001 - no compiler offline, unsupported op...: report it
            return {"unavailable": f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"}
        return {**run(f), "compile_s": compile_s}

    paths["torch_compile"] = compiled
    # the baseline once more, last: how far apart two measurements of the same path are
    paths["baseline_again"] = lambda: {**run(inference_mode), "noise_check": True}
    return paths


def path_kept(r: dict) -> bool:
    if r.get("noise_check"):
        return False
    return ("speedup" in r and r["speedup"] >= PATH_MIN_SPEEDUP and r.get("max_abs_diff", 1.0) < PATH_TOL)


# --------------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------------


def _fmt_ips(r: dict) -> str:
    s = f"{r['images_per_s']:8.2f} img/s"
    if "roofline_fraction" in r:
        s += f"  {r['gflops_achieved']:7.1f} GFLOP/s = {100 * r['roofline_fraction']:5.1f}% of matmul"
    return s


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", type=Path, default=None, help="Results file (resumable; created if absent).")
    ap.add_argument("--force", action="store_true", help="Measure again configurations already in --json.")
    ap.add_argument("--quick", action="store_true", help="Tiny model and sizes: a smoke test in seconds.")
    ap.add_argument("--only", default="", help=f"Comma-separated sections to run: {','.join(SECTIONS)}.")
    ap.add_argument("--skip", default="", help="Comma-separated sections to leave out.")
    ap.add_argument("--backbone", default=None, help="Main backbone (default: clip-vit-b16 if cached, else "
                    "random:b16).")
    ap.add_argument("--large", default=None, help="Large backbone for the forward-only figures (random:l14).")
    ap.add_argument("--model", type=Path, default=None, help="A trained checkpoint to measure instead of the "
                    "fitted-head detector.")
    ap.add_argument("--strategy", default="lora", help="Tuning strategy of the built detector (no --model).")
    ap.add_argument("--auc-data", type=Path, default=None, help="Labelled data for the bf16 / int8 AUC check.")
    ap.add_argument("--auc-limit", type=int, default=200, help="Images per class for the AUC check.")
    ap.add_argument("--images", type=Path, default=DEFAULT_NATURE, help="Real photos (~500x375 JPEG).")
    ap.add_argument("--cifake", type=Path, default=DEFAULT_CIFAKE, help="CIFAKE 32x32 images.")
    ap.add_argument("--workers", type=int, default=1, help="Decoding processes of the end-to-end runs.")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice).")
    ap.add_argument("--no-compile", action="store_true", help="Do not try torch.compile.")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["_train-child"]:
        return train_child(argv[1:])
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    plan = Plan.quick() if args.quick else Plan(mode="full", backbone="", large="random:l14",
                                                  train_backbone="random:b16")
    if not args.quick:
        plan.backbone = args.backbone or default_backbone()
    elif args.backbone:
        plan.backbone = args.backbone
    if args.large:
        plan.large = args.large
    only = {s for s in args.only.split(",") if s}
    skip = {s for s in args.skip.split(",") if s}
    bad = (only | skip) - set(SECTIONS)
    if bad:
        print(f"unknown sections {sorted(bad)}; choose from {', '.join(SECTIONS)}", file=sys.stderr)
        return 2
    sections = [s for s in SECTIONS if (not only or s in only) and s not in skip]

    machine = machine_fingerprint()
    store = Store(args.json, force=args.force, machine=machine)
    store.data["meta"] = {"plan": asdict(plan), "machine": machine, "args": vars(args) | {"json": str(args.json)},
                          "updated": datetime.now(UTC).isoformat(timespec="seconds")}
    print(f"mpft speed benchmark ({plan.mode}): {machine['cpu']}, {machine['cores']} cores, "
          f"torch {machine['torch']} with {machine['threads']} threads; backbone {plan.backbone}")

    scratch = Path(tempfile.mkdtemp(prefix="mpft-speed-"))
    try:
        run_sections(args, plan, store, sections, scratch)
    finally:
        import shutil

        shutil.rmtree(scratch, ignore_errors=True)
    targets = judge(store, plan)
    store.data["targets"] = targets
    store.save()
    print_targets(targets)
    print(f"\n{len(store.measured)} configurations measured, {len(store.reused)} reused"
          + (f"; results in {args.json}" if args.json else ""))
    return 0


def run_sections(args, plan: Plan, store: Store, sections: list[str], scratch: Path) -> None:
    from mpft.backbones import load_backbone

    mode = {"mode": plan.mode}
    nature, nature_src = image_set(args.images, max(plan.n_e2e, plan.n_agree, plan.n_head_fit), scratch=scratch,
                                   fallback_size=(500, 375), name="nature")
    cifake, cifake_src = image_set(args.cifake, plan.n_e2e, scratch=scratch, fallback_size=(32, 32),
                                   name="cifake")
    datasets = {"nature": (nature, nature_src, True), "cifake": (cifake, cifake_src, False)}

    # the detector under test: --model, or a LoRA detector with a fitted head on the backbone
    def checkpoint() -> Path:
        if args.model is not None:
            return args.model
        if "ckpt" not in _ckpt:
            _ckpt["ckpt"] = build_checkpoint(plan.backbone, args.strategy, scratch / "ckpt",
                                             nature[: plan.n_head_fit])
        return _ckpt["ckpt"]

    _ckpt: dict = {}
    model_id = str(args.model) if args.model else f"{plan.backbone}+{args.strategy}+fitted-head"
    dets = Detectors()
    flops: dict[str, dict] = {}

    def spec_flops(spec: str) -> dict:
        if spec not in flops:
            key = f"flops/{spec}"
            enc = load_backbone(spec) if store.cached(key, {"spec": spec}) is None else None
            flops[spec] = store.run(key, {"spec": spec}, lambda: encoder_flops(enc),
                                    lambda r: f"{r['total'] / 1e9:8.2f} GFLOP/image")
        return flops[spec]

    roof: dict = {}
    if "roofline" in sections or "forward" in sections:
        print("\n[roofline]")
        roof = store.run("roofline/matmul", {**mode, "sizes": list(plan.mm_sizes), "repeats": plan.mm_repeats},
                         lambda: measure_matmul(plan.mm_sizes, plan.mm_repeats),
                         lambda r: f"{r['gflops']:8.1f} GFLOP/s fp32 matmul {r['by_size']}")
        spec_flops(plan.backbone)
        spec_flops(plan.large)
    gflops = roof.get("gflops")

    if "forward" in sections:
        print("\n[forward alone: uint8 batch -> probabilities]")
        f_main = spec_flops(plan.backbone)["total"]
        for precision in PRECISIONS:
            for b in plan.batches:
                params = {**mode, "model": model_id, "batch": b, "iters": plan.fwd_iters[b], "warmup": plan.warmup}
                store.run(f"forward/main/{precision}/b{b}", params,
                          lambda b=b, p=precision: measure_forward(dets.get(checkpoint(), p), b, warmup=plan.warmup,
                                                                   iters=plan.fwd_iters[b], flops=f_main,
                                                                   roofline=gflops), _fmt_ips)
        # the large backbone, forward only: a plain detector on it, no fitted head needed
        f_large = spec_flops(plan.large)["total"]
        large_ckpt = scratch / "large"
        for precision in PRECISIONS:
            for b in plan.batches:
                params = {**mode, "spec": plan.large, "batch": b, "iters": plan.large_iters[b], "warmup": plan.warmup}
                key = f"forward/large/{precision}/b{b}"
                if store.cached(key, params) is None and not large_ckpt.exists():
                    dets.drop()  # two B/16 detectors and an L/14 need not share memory
                    build_checkpoint(plan.large, "linear", large_ckpt, nature[:2])
                store.run(key, params,
                          lambda b=b, p=precision: measure_forward(dets.get(large_ckpt, p), b, warmup=plan.warmup,
                                                                   iters=plan.large_iters[b], flops=f_large,
                                                                   roofline=gflops), _fmt_ips)
        dets.drop()

    if "e2e" in sections:
        print(f"\n[end to end: Detector.predict_iter, {args.workers} worker(s) unless noted]")
        for name, (paths, src, resize) in datasets.items():
            for precision in PRECISIONS:
                for b in plan.batches:
                    sweep = name == "nature" and precision == "fp32" and b == max(plan.batches)
                    for w in sorted({args.workers, 0, 2} if sweep else {args.workers}):
                        params = {**mode, "model": model_id, "source": src, "images": len(paths), "batch": b,
                                  "workers": w, "resize": resize}
                        store.run(f"e2e/{name}/{precision}/b{b}/w{w}", params,
                                  lambda paths=paths, b=b, w=w, p=precision, resize=resize: measure_e2e(
                                      dets.get(checkpoint(), p), paths, batch=b, workers=w, resize=resize),
                                  _fmt_ips)
        dets.drop()

    if "peer" in sections:
        print("\n[peer pipeline: PIL + numpy CLIP transform, transformers fp32, one image at a time]")
        for name, (paths, src, _) in datasets.items():
            params = {**mode, "spec": plan.backbone, "source": src, "images": plan.n_peer}
            store.run(f"peer/{name}", params, lambda paths=paths: measure_peer(plan.backbone, paths[: plan.n_peer]),
                      _fmt_ips)

    if "accuracy" in sections:
        print("\n[reduced precisions: agreement with fp32, AUC change]")
        for precision in REDUCED:
            params = {**mode, "model": model_id, "source": nature_src, "images": plan.n_agree}
            store.run(f"{precision}/agreement", params,
                      lambda p=precision: measure_agreement(dets.get(checkpoint(), "fp32"), dets.get(checkpoint(), p),
                                                            nature[: plan.n_agree]),
                      lambda r: f"max |dp| {r['max_abs_diff']:.5f} (mean {r['mean_abs_diff']:.5f}, p std "
                                f"{r['prob_std_fp32']:.3f}, {r['verdict_flips_at_0.5']} flips)")
            dets.drop()
            if args.model is not None and args.auc_data is not None:
                params = {**mode, "model": model_id, "data": str(args.auc_data), "limit": args.auc_limit}
                store.run(f"{precision}/auc", params,
                          lambda p=precision: measure_auc(args.model, args.auc_data, args.auc_limit, args.workers, p),
                          lambda r: f"AUC fp32 {r['auc_fp32']:.4f} reduced {r['auc_reduced']:.4f} (|diff| "
                                    f"{r['auc_diff']:.4f}, {r['images']} images)")
            else:
                print(f"  {precision}/auc: not measured (needs --model and --auc-data)")

    if "train" in sections:
        print(f"\n[training step: {plan.train_backbone}, batch {plan.train_batch}, TAM rho 0.5]")
        for strategy in ("last-k", "full"):
            for mask in ("none", "drop", "fill"):
                params = {**mode, "spec": plan.train_backbone, "batch": plan.train_batch,
                          "steps": plan.train_steps, "warmup": plan.warmup}

                def measure(strategy=strategy, mask=mask) -> dict:
                    step = train_step_fn(plan.train_backbone, strategy, mask, plan.train_batch)
                    t = time_calls(step, warmup=plan.warmup, iters=plan.train_steps)
                    return {**t, "step_s": t["median_s"]}

                store.run(f"train/{strategy}/{mask}", params, measure,
                          lambda r: f"{r['step_s']:8.3f} s/step (best {r['best_s']:.3f})")

    if "memory" in sections:
        print("\n[peak memory, in subprocesses]")
        folder = scratch / "mem-images"
        folder.mkdir(exist_ok=True)
        for i, p in enumerate(nature[: plan.mem_images]):
            (folder / f"{i:04d}{p.suffix}").symlink_to(p.resolve())
        jobs: list[tuple[str, dict, list[str]]] = []
        for precision in PRECISIONS:
            jobs.append((f"memory/predict/{precision}", {**mode, "model": model_id, "images": plan.mem_images},
                         ["-m", "mpft", "predict", str(folder), "--model", "CKPT", "--format", "jsonl",
                          "--device", "cpu", "--precision", precision]))
        jobs.append(("memory/train/last-k",
                     {**mode, "spec": plan.train_backbone, "batch": plan.train_batch, "steps": plan.mem_train_steps},
                     [str(Path(__file__).resolve()), "_train-child", plan.train_backbone, "last-k",
                      str(plan.train_batch), str(plan.mem_train_steps)]))
        todo = [(k, p, cmd) for k, p, cmd in jobs if store.cached(k, p) is None]
        if any("CKPT" in cmd for _, _, cmd in todo):
            ckpt = str(checkpoint())
            todo = [(k, p, [ckpt if a == "CKPT" else a for a in cmd]) for k, p, cmd in todo]
        # each child's peak is its own (ru_maxrss of its process tree), so they can run side by side
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=max(1, len(todo))) as pool:
            futures = {k: pool.submit(peak_rss, [sys.executable, *cmd]) for k, _, cmd in todo}
            for key, params, _ in jobs:
                store.run(key, params, lambda key=key: futures[key].result(),
                          lambda r: f"{r['peak_gb']:8.3f} GB peak RSS")

    if "paths" in sections:
        print(f"\n[optional speed paths: fp32 forward, batch {plan.paths_batch}]")
        names = ["baseline_inference_mode", "no_grad", "bf16_autocast", "channels_last", "threads_1",
                 f"threads_{os.cpu_count()}", "lora_merged", "torch_compile", "baseline_again"]
        names = list(dict.fromkeys(names))
        params = {**mode, "model": model_id, "batch": plan.paths_batch, "iters": plan.paths_iters}
        # speed-ups are only meaningful against a baseline timed in the same process: when any
        # path is missing, the whole table is measured again
        redo = any(store.cached(f"paths/{n}", params) is None for n in names)
        runs = (speed_paths(dets.get(checkpoint(), "fp32"), plan.paths_batch, plan.paths_iters,
                            try_compile=not (args.quick or args.no_compile)) if redo else {})
        for name in names:
            if redo and name not in runs:
                continue
            store.run(f"paths/{name}", params, lambda name=name: runs[name](), _fmt_path, force=redo)
        dets.drop()

    if "decode" in sections:
        print("\n[decode + preprocess (resize policy), ms per image, inline]")
        size = 32 if plan.mode == "quick" else 224
        big = scratch / "large-jpeg"
        big.mkdir(exist_ok=True)
        sets = {"nature": nature[: plan.n_decode]}
        big_paths = []
        for i, p in enumerate(nature[: max(2, plan.n_decode // 4)]):
            with Image.open(p) as im:
                q = big / f"{i:03d}.jpg"
                im.convert("RGB").resize((im.width * 4, im.height * 4), Image.Resampling.BILINEAR).save(q, quality=90)
                big_paths.append(q)
        sets["nature_x4"] = big_paths
        for set_name, paths in sets.items():
            for draft in (False, True):
                params = {**mode, "source": nature_src, "images": len(paths), "size": size, "policy": "resize"}
                store.run(f"decode/{set_name}/{'draft' if draft else 'plain'}", params,
                          lambda paths=paths, draft=draft: decode_times(paths, size, draft=draft),
                          lambda r: f"{r['ms_per_image']:8.2f} ms/image" + (
                              f"  input |diff| mean {r['input_mean_abs_diff']:.2f} max {r['input_max_abs_diff']}"
                              if "input_mean_abs_diff" in r else ""))


def _fmt_path(r: dict) -> str:
    for k in ("skipped", "unavailable"):
        if k in r:
            return f"{k}: {r[k]}"
    s = f"{r['images_per_s']:8.2f} img/s"
    if "speedup" in r:
        verdict = "(noise check)" if r.get("noise_check") else ("KEEP" if path_kept(r) else "drop")
        s += f"  x{r['speedup']:.2f}  max|dp| {r['max_abs_diff']:.1e}  {verdict}"
    return s


def judge(store: Store, plan: Plan) -> dict:
    """Each target's measured value and PASS / FAIL / SKIP (SKIP: its figures are not in the file)."""
    R = store.results

    def ok(key: str) -> dict | None:
        r = R.get(key)
        return r if r and not r.get("failed") and r.get("params", {}).get("mode") == plan.mode else None

    out: dict[str, dict] = {}

    def put(tid: str, value: float | None, detail: str = "", note: str = "") -> None:
        desc, cmp, thr = TARGETS[tid]
        if value is None or (isinstance(value, float) and math.isnan(value)):
            status = "SKIP"
        else:
            status = "PASS" if {"<": value < thr, "<=": value <= thr, ">=": value >= thr}[cmp] else "FAIL"
        out[tid] = {"description": desc, "target": f"{cmp} {thr:g}", "value": value, "status": status,
                    "detail": detail, "note": note}

    bmax = max(plan.batches)
    f32 = ok(f"forward/main/fp32/b{bmax}")
    put("forward_roofline", f32.get("roofline_fraction") if f32 else None,
        f"{f32['gflops_achieved']:.1f} GFLOP/s achieved" if f32 else "")

    kept = []
    for precision in REDUCED:
        agree = ok(f"{precision}/agreement")
        auc = ok(f"{precision}/auc")
        put(f"{precision}_agreement", agree["max_abs_diff"] if agree else None,
            f"{agree['images']} images" if agree else "")
        put(f"{precision}_auc", auc["auc_diff"] if auc else None,
            f"fp32 {auc['auc_fp32']:.4f} {precision} {auc['auc_reduced']:.4f}" if auc
            else "needs --model and --auc-data")
        # the AUC check needs a trained detector; without one, agreement alone decides (stated in the note)
        if out[f"{precision}_agreement"]["status"] == "PASS" and out[f"{precision}_auc"]["status"] != "FAIL":
            kept.append(precision)

    ratios, peer_ratios, details = [], [], []
    for ds in ("nature", "cifake"):
        for precision in PRECISIONS:
            fwd = ok(f"forward/main/{precision}/b{bmax}")
            e2e = [r for k, r in R.items() if k.startswith(f"e2e/{ds}/{precision}/b{bmax}/") and ok(k)]
            if fwd and e2e:
                best = max(e2e, key=lambda r: r["images_per_s"])
                ratios.append(best["images_per_s"] / fwd["images_per_s"])
                details.append(f"{ds}/{precision} {ratios[-1]:.2f} (w{best['params']['workers']})")
        peer = ok(f"peer/{ds}")
        cands = [r for k, r in R.items() if k.startswith(f"e2e/{ds}/") and ok(k)
                 and k.split("/")[2] in ("fp32", *kept)]
        if peer and cands:
            best = max(r["images_per_s"] for r in cands)
            peer_ratios.append((ds, best / peer["images_per_s"]))
    put("e2e_vs_forward", min(ratios) if ratios else None, "; ".join(details), "worst of datasets x precisions")
    put("peer_ratio", min(r for _, r in peer_ratios) if peer_ratios else None,
        "; ".join(f"{ds} x{r:.2f}" for ds, r in peer_ratios),
        f"fp32 and {', '.join(kept)} (passed the accuracy gate)" if kept
        else "fp32 only (no reduced precision passed the accuracy gate, or it was not measured)")

    drops = []
    for strategy in ("last-k", "full"):
        none, drop = ok(f"train/{strategy}/none"), ok(f"train/{strategy}/drop")
        if none and drop:
            drops.append((strategy, drop["step_s"] / none["step_s"]))
    put("tam_drop_speedup", max(r for _, r in drops) if drops else None,
        "; ".join(f"{s} {r:.2f}" for s, r in drops), "worst strategy")

    mp = [ok(f"memory/predict/{p}") for p in PRECISIONS]
    mp = [m for m in mp if m]
    put("memory_predict", min(m["peak_gb"] for m in mp) if mp else None,
        "; ".join(f"{k.split('/')[-1]} {R[k]['peak_gb']:.2f}" for k in R if k.startswith("memory/predict/") and ok(k)),
        "best precision")
    mt = ok("memory/train/last-k")
    put("memory_train", mt["peak_gb"] if mt else None)
    if plan.mode == "quick":
        for t in out.values():
            t["note"] = (t["note"] + "; " if t["note"] else "") + "quick mode: tiny model, not a result"
    out["_precisions_kept"] = {"value": kept}
    out["_paths_kept"] = {"value": sorted(k.split("/", 1)[1] for k in R if k.startswith("paths/") and ok(k)
                                          and path_kept(R[k]))}
    return out


def print_targets(targets: dict) -> None:
    print("\n[targets]")
    for tid, t in targets.items():
        if tid.startswith("_"):
            continue
        v = t["value"]
        vs = "-" if v is None else f"{v:.4g}"
        print(f"  {t['status']:<4}  {tid:<18} {vs:>9} (target {t['target']})  {t['detail']}"
              + (f"  [{t['note']}]" if t["note"] else ""))
    kept = targets["_paths_kept"]["value"] or "none"
    precisions = ", ".join(targets["_precisions_kept"]["value"]) or "none"
    print(f"  reduced precisions kept: {precisions}; speed paths kept: {kept}")


if __name__ == "__main__":
    sys.exit(main())
