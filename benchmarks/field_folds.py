"""Field benchmark: hold out whole real-photo sources *and* whole generator families (issue 17).

The in-source benchmark (``unseen_generators.py``) trains, calibrates and tests on photos of the same
two sources, so it cannot see how the detector treats a photo collection it never met. Here every
fold holds out one group of real-photo sources and one group of generator families: neither trains
the model nor sets its threshold, and the headline figures are measured on them.

Data (``../shared/data``, see its README): ``native.csv`` (17 open/commercial families, camera photos),
``wild.csv`` (2022-2026 generators, many social-media JPEGs; photos from 9 further sources),
``comfyui_t2i`` thumbnails (~40 systems) and 200 ``imagenet_samples`` photos.

Protocol
- ``REAL_GROUPS`` / ``GEN_GROUPS``: 7 groups each. Fold k of seed s holds out real group k and generator
  group (k + s) mod 7, so over 3 seeds each real group meets 3 different unseen families.
- Training: every other group. Photos of each training source split 60 / 20 / 20 per seed into train /
  calibration / in-source test. Each generator family and each real source gets an equal share of its
  class (``--balance``-style weights), classes 50/50.
- Two thresholds for a 5% false-positive target, both from training sources only:
  ``in-source``: 5% of the pooled calibration photos (today's practice);
  ``loso`` (leave one real source group out): for each training real group, a model trained without it
  scores all its photos; the threshold gives a 5% false-positive rate averaged over those groups.
- Test condition ``s512-jpeg95`` for both classes alike: shorter side resized to 512 (bicubic), JPEG q95
  (the normalisation of the team's independent collections; resizing also breaks the JPEG grid that
  social-media generated images carry). Format audit: the centre view as stored (lossless / original
  JPEG) against JPEG q95 at stored size.
- Headline, per held-out real group and source: the share of photos called generated at each
  threshold (Wilson 95%); recall on the held-out family at the same threshold; AUC of held-out family
  vs held-out photos (bootstrap 95%). Secondary: AUC / FPR against the in-source test photos.

Methods: frozen probes on CLS tokens of chosen blocks (``blocks``), on mean patch tokens (``patch``), on
the final embedding (``linear``); ``-nsp`` variants project out the top principal directions of the
training features first (a content-removal idea after NS-Net, which removes semantic directions);
fine-tuning of the last K blocks (MPFT) from a cached frozen prefix, with TAM / random / no mask
applied *at the input* (the frozen prefix of a masked view is cached once per view: last-K tuning
never updates those blocks, so this equals masking the input with the mask fixed per training view; the
cache does not keep which patches survived, so the tuned blocks get ``keep=None``: right for CLIP, whose
positions are added at the input, not for a family with rotary positions in its blocks such as DINOv3).

Cost control: the frozen backbone runs once per view; features are cached in ``--cache`` (memmaps with a
done-marker per image). Results: one JSON line per (method, fold, seed) in ``--out``/results.jsonl,
appended as each finishes; a rerun skips finished ones.

    python benchmarks/field_folds.py --extract-only           # features (the long part)
    python benchmarks/field_folds.py --methods blocks6-12 blocks6-7
    python benchmarks/field_folds.py --report > docs/benchmarks/field.md
    python benchmarks/field_folds.py --quick                  # random:tiny, a few images per group (CI)
"""

from __future__ import annotations

import argparse
import copy
import csv
import hashlib
import json
import logging
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))

from mpft.backbones import load_backbone  # noqa: E402
from mpft.data.dataset import balance_weights  # noqa: E402
from mpft.data.images import decode_image  # noqa: E402
from mpft.data.scan import list_images  # noqa: E402
from mpft.data.transforms import reencode, resize_shorter  # noqa: E402
from mpft.evaluation.intervals import wilson_interval  # noqa: E402
from mpft.evaluation.thresholds import threshold_at_fpr  # noqa: E402
from mpft.fsutil import atomic_file  # noqa: E402
from mpft.model import block_features  # noqa: E402
from mpft.tam import select_masked, texture_scores  # noqa: E402
from mpft.views import ViewConfig, make_views  # noqa: E402
from unseen_generators import TRAIN_AUGMENT, Suffix, auc_ci, sigmoid, train_probe, train_views
from unseen_generators import combine as ug_combine  # noqa: E402

log = logging.getLogger("field_folds")
REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("MPFT_DATA", REPO.parent / "shared" / "data"))
TARGET_FPR = 0.05

# ---- groups ----------------------------------------------------------------------------------------
# A generator's family: the unit of balancing (each an equal share of the generated class).
FAMILY = {
    "gpt-image": "gpt-image", "gpt-image-1": "gpt-image", "gpt-image-2": "gpt-image-2",
    "nano-banana-pro": "nano-banana-pro", "grok": "nano-banana-pro", "unknown-2025": "unknown-2025",
    "flux": "flux", "flux.2": "flux", "zimage-or-flux2": "flux",
    "sd1": "sd1-2", "sd2": "sd1-2", "sdxl": "sdxl-kolors", "kolors": "sdxl-kolors", "sd3": "sd3",
    "cascade": "open-small", "hidream": "open-small", "auraflow": "open-small", "qwen": "open-small",
    "hunyuan": "open-small", "lumina": "open-small", "omnigen": "open-small", "zimage": "open-small",
    "cosmos": "open-small", "comfyui": "comfyui",
}


def family_of(generator: str) -> str:
    if generator in FAMILY:
        return FAMILY[generator]
    if generator.startswith("pre2023") or generator == "deepfloyd-if":
        return "pre2023"
    return "api-2025-26"  # CogView4, Qwen-Image, HunyuanImage, MOSS, the 2026 API thumbnails


GEN_GROUPS: dict[str, tuple[str, ...]] = {  # held out together
    "openai": ("gpt-image", "gpt-image-2"),
    "nano-banana-pro": ("nano-banana-pro",),
    "unknown-2025": ("unknown-2025",),
    "flux": ("flux",),
    "sd-open": ("sd1-2", "sdxl-kolors", "sd3", "open-small"),
    "pre2023": ("pre2023",),
    "comfyui+api": ("comfyui", "api-2025-26"),
}
REAL_GROUPS: dict[str, tuple[str, ...]] = {
    # camera_photos holds Debian wallpaper photos too: the wild Debian wallpapers go with it
    "camera": ("camera", "debian_plasma_wallpapers"),
    "imagenet": ("imagenet",),
    "sr-benchmarks": ("sr_benchmarks",),
    "lowlight": ("lowlight_dicm_lime", "lowlight_zdcepp_real"),
    "filmscans": ("filmscans_kodak_mcmaster",),
    "scans+heic": ("old_scans_msft", "ianare_exif_samples"),
    "phone-series": ("openmvg_sceaux", "alicevision_monstree"),
}
REAL_ORDER, GEN_ORDER = list(REAL_GROUPS), list(GEN_GROUPS)


@dataclass(frozen=True)
class Item:
    path: str
    label: int
    family: str  # generated: family; real: its source
    group: str  # GEN_GROUPS / REAL_GROUPS key


def _real_group(source: str) -> str:
    return next(g for g, members in REAL_GROUPS.items() if source in members)


def _gen_group(family: str) -> str:
    return next(g for g, members in GEN_GROUPS.items() if family in members)


def load_items(n_imagenet: int = 200, quick: bool = False, cap: int = 0) -> list[Item]:
    items: list[Item] = []
    with open(DATA / "native.csv", newline="") as f:
        for row in csv.DictReader(f):
            if row["label"] == "ai":
                fam = family_of(row["generator"])
                items.append(Item(str(DATA / row["path"]), 1, fam, _gen_group(fam)))
            else:
                items.append(Item(str(DATA / row["path"]), 0, "camera", "camera"))
    with open(DATA / "wild.csv", newline="") as f:
        for row in csv.DictReader(f):
            if row["label"] == "ai":
                fam = family_of(row["generator"])
                items.append(Item(str(DATA / row["path"]), 1, fam, _gen_group(fam)))
            else:
                src = row["generator"]  # wild.csv names the photo source in its generator column
                items.append(Item(str(DATA / row["path"]), 0, src, _real_group(src)))
    photos = sorted(list_images(DATA / "imagenet_samples" / "nature"))
    pick = np.random.default_rng(1234).permutation(len(photos))[:n_imagenet]  # as unseen_generators.py
    items += [Item(str(photos[i]), 0, "imagenet", "imagenet") for i in sorted(pick)]
    items += [Item(str(p), 1, "comfyui", "comfyui+api") for p in sorted(list_images(DATA / "comfyui_t2i" / "ai"))]
    if cap:  # CPU budget: at most `cap` images of a family / source (seeded); balancing weighs them equally anyway
        rng = np.random.default_rng(4321)
        by: dict[str, list[Item]] = {}
        for it in items:
            by.setdefault(it.family, []).append(it)
        drop = set()
        for xs in by.values():
            c = cap if xs[0].label else int(1.5 * cap)  # photos: more, they carry the false-positive figures
            drop |= {it.path for it in rng.permutation(np.array(xs, object))[c:]}
        items = [it for it in items if it.path not in drop]
    if quick:  # a few per family / source: every fold keeps both classes
        seen: dict[str, int] = {}
        keep = []
        for it in items:
            if seen.get(it.family, 0) < (4 if it.label == 0 else 2):
                keep.append(it)
                seen[it.family] = seen.get(it.family, 0) + 1
        items = keep
    return items


def fold_groups(k: int, seed: int) -> tuple[str, str]:
    """Fold k of a seed: (held-out real group, held-out generator group)."""
    return REAL_ORDER[k], GEN_ORDER[(k + seed) % len(GEN_ORDER)]


# ---- views -----------------------------------------------------------------------------------------
S512_VIEWS = ("tl", "tr", "bl", "br", "whole")
VIEW_SETS = {"grid2+whole": (("tl", "tr", "bl", "br", "whole"), "mean"), "whole": (("whole",), "mean"),
             "grid2": (("tl", "tr", "bl", "br"), "mean")}


def normalise_s512(img: Image.Image) -> Image.Image:
    """Both classes alike: shorter side 512 (bicubic, up or down), then JPEG q95."""
    return reencode(resize_shorter(img, 512), "jpeg:95")


def grid_views(img: Image.Image, size: int, center: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(5, S, S, 3): grid:2's four corners and the resized whole image (``mpft.views`` grid:2+whole), and
    which are distinct; with ``center`` the centre crop alone (1, S, S, 3)."""
    base = img if min(img.size) >= size else resize_shorter(img, size)
    w, h = base.size
    if center:
        x, y = (w - size) // 2, (h - size) // 2
        return np.asarray(base.crop((x, y, x + size, y + size)), dtype=np.uint8)[None], np.ones(1, bool)
    boxes = [(0, 0), (w - size, 0), (0, h - size), (w - size, h - size)]
    out, distinct, seen = [], [], set()
    for x, y in boxes:
        out.append(np.asarray(base.crop((x, y, x + size, y + size)), dtype=np.uint8))
        distinct.append((x, y) not in seen)
        seen.add((x, y))
    out.append(make_views(img, size, ViewConfig(grid=0, whole=True))[0])
    distinct.append(True)
    return np.stack(out), np.array(distinct)


# ---- feature store ---------------------------------------------------------------------------------
class Store:
    """Named memmap arrays for one kind of view, with a done-marker per image (resumable)."""

    def __init__(self, root: Path, name: str, shapes: dict[str, tuple[tuple[int, ...], object]]):
        root.mkdir(parents=True, exist_ok=True)
        self.arrays = {}
        for k, (shape, dt) in shapes.items():
            p = root / f"{name}-{k}.npy"
            mode = "r+" if p.is_file() else "w+"
            self.arrays[k] = np.lib.format.open_memmap(p, mode=mode, dtype=dt, shape=shape)
        self.done_path = root / f"{name}-done.npy"
        n = next(iter(shapes.values()))[0][0]
        self.done = np.load(self.done_path) if self.done_path.is_file() else np.zeros(n, bool)

    def flush(self) -> None:
        for a in self.arrays.values():
            a.flush()
        with atomic_file(self.done_path) as tmp, open(tmp, "wb") as f:
            np.save(f, self.done)


def _shapes(enc, n: int, v: int, prefix_tokens: int | None) -> dict:
    L, D = enc.num_layers, enc.width
    s = {"cls": ((n, v, L, D), np.float16), "patch": ((n, v, L, D), np.float16),
         "emb": ((n, v, enc.embed_dim), np.float32), "distinct": ((n, v), np.bool_),
         "texture": ((n, v, enc.num_patches), np.float32)}
    if prefix_tokens:
        s["prefix"] = ((n, v, prefix_tokens, D), np.float16)
    return s


def _autocast(precision: str):
    if precision == "bf16":
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return torch.autocast("cpu", enabled=False)


@torch.inference_mode()
def encode(enc, views: np.ndarray, prefix_at: int | None) -> dict[str, np.ndarray]:
    """(B, S, S, 3) uint8 -> CLS and mean patch token per block (B, L, D), embedding, texture, prefix.

    Runs in the encoder's own dtype (the benchmark casts a bf16 copy once: autocast would cast every
    weight at every call, 1.6x slower here)."""
    dtype = next(enc.parameters()).dtype
    x01 = torch.from_numpy(views).permute(0, 3, 1, 2).float() / 255
    tex = texture_scores(x01, enc.patch_size, "gradient")
    hidden = enc.pre_norm(enc.embed(enc.normalize(x01).to(dtype)))
    cls, patch, prefix = [], [], None
    for i in range(enc.num_layers):
        if prefix_at is not None and i == prefix_at:
            prefix = hidden.float()
        hidden = enc.run_blocks(hidden, i, i + 1)
        cls.append(enc.summary_token(hidden).float())
        patch.append(hidden[:, enc.num_prefix_tokens:].float().mean(1))
    emb = enc.pool(hidden).float()
    out = {"cls": torch.stack(cls, 1).numpy(), "patch": torch.stack(patch, 1).numpy(), "emb": emb.numpy(),
           "texture": tex.numpy()}
    if prefix is not None:
        out["prefix"] = prefix.numpy()
    return out


@torch.inference_mode()
def masked_prefix(enc, views: np.ndarray, texture: np.ndarray, strategy: str, ratio: float, prefix_at: int,
                  key: int) -> np.ndarray:
    """Hidden states entering block ``prefix_at`` of views whose masked patch tokens were dropped at the input.

    views (V, S, S, 3) uint8, texture (V, N) -> (V, 1 + N - M, D) float32.
    """
    dtype = next(enc.parameters()).dtype
    x01 = torch.from_numpy(views).permute(0, 3, 1, 2).float() / 255
    g = torch.Generator().manual_seed(key)
    _, keep = select_masked(torch.from_numpy(texture), ratio, strategy, generator=g)
    tokens = enc.embed(enc.normalize(x01).to(dtype), keep)
    return enc.run_blocks(enc.pre_norm(tokens), 0, prefix_at, keep).float().numpy()


AUDIT, AUDIT_EVERY = ("stored", "jpeg95"), 3
VIEW_MAKERS = {  # store -> (image, size) -> (views, distinct); "train" views come from train_views
    "train": None,
    "s512": lambda img, size: grid_views(normalise_s512(img), size),
    "stored": lambda img, size: grid_views(img, size, center=True),
    "jpeg95": lambda img, size: grid_views(reencode(img, "jpeg:95"), size, center=True),
}
MASKS = {"tam25": ("tam", 0.25), "random25": ("random", 0.25)}


def _key(path: str) -> int:
    return int(hashlib.sha256(path.encode()).hexdigest()[:8], 16)


def extract(items: list[Item], enc, root: Path, n_train: int, prefix_at: int,
            masks: tuple[str, ...] = (), chunk: int = 4) -> dict[str, Store]:
    """Features of every store's views, ``chunk`` images per forward batch (CPU throughput grows with
    the batch); resumable per image."""
    n, size, T = len(items), enc.image_size, enc.num_prefix_tokens + enc.num_patches
    stores = {
        "train": Store(root, "train", _shapes(enc, n, n_train, T)),
        "s512": Store(root, "s512", _shapes(enc, n, len(S512_VIEWS), T)),
        "stored": Store(root, "stored", _shapes(enc, n, 1, None)),
        "jpeg95": Store(root, "jpeg95", _shapes(enc, n, 1, None)),
    }
    for m in masks:
        kept = enc.num_prefix_tokens + enc.num_patches - round(MASKS[m][1] * enc.num_patches)
        stores[f"train-{m}"] = Store(root, f"train-{m}", {"prefix": ((n, n_train, kept, enc.width), np.float16)})
    todo = [i for i in range(n) if not all(s.done[i] for s in stores.values())]
    t0 = time.perf_counter()
    for c0 in range(0, len(todo), chunk):
        batch: list[tuple[int, str, np.ndarray, np.ndarray]] = []  # (item, store, views, distinct)
        train_views_of: dict[int, np.ndarray] = {}
        for i in todo[c0:c0 + chunk]:
            img = decode_image(items[i].path).image
            if not all(stores[k].done[i] for k in stores if k.startswith("train")):
                train_views_of[i] = train_views(img, size, n_train, _key(items[i].path))
            for name, st in stores.items():
                if st.done[i] or name not in VIEW_MAKERS:
                    continue
                if name in AUDIT and i % AUDIT_EVERY:  # the format audit needs a sample, not every image
                    st.done[i] = True
                    continue
                views, distinct = ((train_views_of[i], np.ones(n_train, bool)) if name == "train"
                                   else VIEW_MAKERS[name](img, size))
                batch.append((i, name, views, distinct))
        if batch:
            feats = encode(enc, np.concatenate([b[2] for b in batch]), prefix_at)
            at = 0
            for i, name, views, distinct in batch:
                st, sl = stores[name], slice(at, at + len(views))
                at += len(views)
                for k, v in feats.items():
                    if k in st.arrays:
                        st.arrays[k][i] = v[sl]
                st.arrays["distinct"][i] = distinct
                st.done[i] = True
        for i, tv in train_views_of.items():
            for m in masks:
                st = stores[f"train-{m}"]
                if not st.done[i]:
                    tex = np.asarray(stores["train"].arrays["texture"][i])
                    st.arrays["prefix"][i] = masked_prefix(enc, tv, tex, *MASKS[m], prefix_at, _key(items[i].path))
                    st.done[i] = True
        done = min(c0 + chunk, len(todo))
        if done % 20 < chunk or done == len(todo):
            for st in stores.values():
                st.flush()
            log.info("extracted %d/%d images (%.2f img/s)", done, len(todo), done / (time.perf_counter() - t0))
    return stores


# ---- methods ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Method:
    name: str
    kind: str  # probe | finetune
    feature: str = "cls"  # probe: cls | patch | emb
    blocks: tuple[int, ...] = ()
    nsp: int = 0  # probe: number of top principal directions projected out
    mask: str = "none"  # finetune: none | tam25 | random25
    lora: bool = False
    epochs: int = 1


def _rng(a: int, b: int) -> tuple[int, ...]:
    return tuple(range(a, b + 1))


def methods_for(num_layers: int) -> dict[str, Method]:
    L = num_layers
    mid = max(1, L // 2)
    ms = [
        Method("linear", "probe", "emb"),
        Method(f"blocks{mid}-{L}", "probe", blocks=_rng(mid, L)),  # the shipped detector's recipe
        Method(f"blocks{mid}-{mid + 1}", "probe", blocks=_rng(mid, min(L, mid + 1))),
        Method(f"blocks{max(1, mid - 2)}-{min(L, mid + 2)}", "probe", blocks=_rng(max(1, mid - 2), min(L, mid + 2))),
        Method(f"blocks{max(1, L - 2)}-{L}", "probe", blocks=_rng(max(1, L - 2), L)),
        Method("blocks1-3", "probe", blocks=_rng(1, min(3, L))),
        Method(f"patch{mid}-{mid + 1}", "probe", "patch", blocks=_rng(mid, min(L, mid + 1))),
        Method(f"patch{mid}-{L}", "probe", "patch", blocks=_rng(mid, L)),
        # final embedding and intermediate tokens side by side (added after the first 10 probes)
        Method(f"linear+blocks{mid}-{L}", "probe", "emb+cls", blocks=_rng(mid, L)),
        Method(f"linear+patch{mid}-{L}", "probe", "emb+patch", blocks=_rng(mid, L)),
        Method(f"blocks{mid}-{L}-nsp16", "probe", blocks=_rng(mid, L), nsp=16),
        Method(f"blocks{mid}-{mid + 1}-nsp16", "probe", blocks=_rng(mid, min(L, mid + 1)), nsp=16),
        Method("last-k", "finetune"),
        Method("last-k-tam25", "finetune", mask="tam25"),
        Method("last-k-random25", "finetune", mask="random25"),
        Method("lora-tam25", "finetune", mask="tam25", lora=True),
    ]
    return {m.name: m for m in ms}


def probe_features(store: Store, m: Method) -> torch.Tensor:
    """(N, V, F) features of every item for a probe method (layer-normalised per block); ``a+b``: the
    features of ``a`` and ``b`` (``emb``, ``cls``, ``patch``) side by side, one head on both."""
    if "+" in m.feature:
        return torch.cat([probe_features(store, Method(m.name, m.kind, part, m.blocks))
                          for part in m.feature.split("+")], dim=-1)
    if m.feature == "emb":
        return torch.from_numpy(np.asarray(store.arrays["emb"], dtype=np.float32))
    tok = np.asarray(store.arrays[m.feature][:, :, [b - 1 for b in m.blocks]], dtype=np.float32)
    t = torch.from_numpy(tok)
    n, v = t.shape[:2]
    return block_features(t.flatten(0, 1)).view(n, v, -1)


def fit_probe(feats: torch.Tensor, labels: np.ndarray, weights: np.ndarray, seed: int, nsp: int,
              epochs: int = 3) -> torch.nn.Module:
    """feats (N, V, F) -> module mapping (..., F) to logits; AdamW + cosine like ``mpft train --tune linear``."""
    proj = None
    if nsp:
        flat = feats.flatten(0, 1)
        mu = flat.mean(0)
        # top principal directions of the training features: dominated by what the images show
        _, _, vt = torch.linalg.svd(flat[torch.randperm(len(flat), generator=torch.Generator().manual_seed(seed))
                                         [:4000]] - mu, full_matrices=False)
        proj = vt[:nsp]
        feats = feats - (feats - mu) @ proj.T @ proj
    # unseen_generators' probe trainer (AdamW lr 1e-3, wd 0.01, cosine, batch 32): the two benchmarks agree
    head = train_probe(feats, labels, weights, SimpleNamespace(epochs=epochs), seed)

    class Probe(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if proj is not None:
                x = x - (x - mu) @ proj.T @ proj
            return head(x).squeeze(-1)

    return Probe().eval()


def fit_suffix(enc, prefix: np.ndarray, idx: np.ndarray, labels: np.ndarray, weights: np.ndarray, m: Method,
               seed: int, prefix_at: int, precision: str, batch: int = 16) -> torch.nn.Module:
    """Train the last K blocks + head on cached prefix states ``prefix`` (N, V, T, D) of the training views."""
    model = Suffix(enc, prefix_at, m.lora, seed)
    head = list(model.head.parameters())
    back = [p for n_, p in model.named_parameters() if p.requires_grad and not n_.startswith("head.")]
    opt = torch.optim.AdamW([{"params": head, "lr": 1e-3}, {"params": back, "lr": 5e-4 if m.lora else 2e-5}],
                            weight_decay=0.01)
    v = prefix.shape[1]
    steps = max(1, len(idx) * v * m.epochs // batch)
    warm = max(1, steps // 10)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: (s + 1) / warm if s < warm else 0.5 * (1 + np.cos(np.pi * (s - warm) / max(1, steps - warm))))
    g = torch.Generator().manual_seed(seed)
    w = torch.from_numpy(weights)
    y = torch.from_numpy(labels.astype(np.float32))
    model.train()
    t0 = time.perf_counter()
    for step in range(steps):
        i = torch.multinomial(w, batch, replacement=True, generator=g).numpy()
        j = torch.randint(0, v, (batch,), generator=g).numpy()
        hidden = torch.from_numpy(np.stack([prefix[idx[a], b] for a, b in zip(i, j, strict=True)]).astype(np.float32))
        with _autocast(precision):
            logits = model(hidden).float()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, y[i])
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)
        opt.step()
        sched.step()
        if step in (10, steps // 2):
            log.info("  %s: step %d/%d (%.2f s/step)", m.name, step, steps, (time.perf_counter() - t0) / (step + 1))
    return model.eval()


@torch.inference_mode()
def view_logits(m: Method, fitted, store: Store, idx: np.ndarray, feats: torch.Tensor | None,
                precision: str) -> np.ndarray:
    """(len(idx), V) logits of stored views."""
    if m.kind == "probe":
        return fitted(feats[idx]).numpy()
    out = []
    v = store.arrays["prefix"].shape[1]
    for k in range(0, len(idx), 8):
        h = torch.from_numpy(np.asarray(store.arrays["prefix"][idx[k:k + 8]], dtype=np.float32))
        with _autocast(precision):
            out.append(fitted(h.flatten(0, 1)).float().view(-1, v).numpy())
    return np.concatenate(out) if out else np.zeros((0, v))


def combine(logits: np.ndarray, distinct: np.ndarray, names: tuple[str, ...], view_set: str) -> np.ndarray:
    return ug_combine(logits, distinct, names, view_set, VIEW_SETS)


def balanced_threshold(scores_by_group: dict[str, np.ndarray], target: float = TARGET_FPR) -> float:
    """Smallest threshold whose false-positive rate, averaged over groups (each counts once), is <= target."""
    cands = np.unique(np.concatenate(list(scores_by_group.values())))
    cands = np.concatenate([cands, [np.nextafter(cands[-1], np.inf)]])
    rates = np.mean([[(s >= t).mean() for t in cands] for s in scores_by_group.values()], axis=0)
    ok = np.where(rates <= target + 1e-12)[0]
    return float(cands[ok[0]])


# ---- one (method, fold, seed) ----------------------------------------------------------------------
@dataclass
class Fold:
    real: str
    gen: str
    train_real: np.ndarray
    calib: np.ndarray
    insource_test: np.ndarray
    train_gen: np.ndarray
    test_real: np.ndarray
    test_gen: np.ndarray
    by_group: dict[str, np.ndarray] = field(default_factory=dict)  # training real group -> its train idx


def make_fold(items: list[Item], k: int, seed: int) -> Fold:
    real_g, gen_g = fold_groups(k, seed)
    parts: dict[str, list[int]] = {"train": [], "calib": [], "test": []}
    by_group: dict[str, list[int]] = {}
    for src in sorted({it.family for it in items if it.label == 0 and it.group != real_g}):
        idx = np.array([i for i, it in enumerate(items) if it.label == 0 and it.family == src])
        idx = idx[np.random.default_rng([seed, _key(src)]).permutation(len(idx))]
        a, b = int(round(0.6 * len(idx))), int(round(0.8 * len(idx)))
        parts["train"] += idx[:a].tolist()
        parts["calib"] += idx[a:b].tolist()
        parts["test"] += idx[b:].tolist()
        by_group.setdefault(items[idx[0]].group, []).extend(idx[:a].tolist())
    arr = lambda xs: np.array(sorted(xs), dtype=np.int64)  # noqa: E731
    return Fold(real_g, gen_g, arr(parts["train"]), arr(parts["calib"]), arr(parts["test"]),
                arr([i for i, it in enumerate(items) if it.label == 1 and it.group != gen_g]),
                arr([i for i, it in enumerate(items) if it.label == 0 and it.group == real_g]),
                arr([i for i, it in enumerate(items) if it.label == 1 and it.group == gen_g]),
                {g: arr(v) for g, v in by_group.items()})


def _weights(items: list[Item], idx: np.ndarray) -> np.ndarray:
    return balance_weights([items[i].family for i in idx], [items[i].label for i in idx])


def _rates(scores: np.ndarray, t: float) -> dict:
    k = int((scores >= t).sum())
    return {"k": k, "n": len(scores), "rate": k / max(1, len(scores)), "ci": list(wilson_interval(k, len(scores)))}


def run_one(items: list[Item], stores: dict[str, Store], enc, m: Method, k: int, seed: int, prefix_at: int,
            precision: str, feats_cache: dict) -> dict:
    fd = make_fold(items, k, seed)
    y = np.array([it.label for it in items])
    names = S512_VIEWS
    st = stores["s512"]

    def fit(train_real: np.ndarray):
        idx = np.concatenate([train_real, fd.train_gen])
        if m.kind == "probe":
            return fit_probe(feats_cache["train"][idx], y[idx], _weights(items, idx), seed, m.nsp)
        prefix = stores["train" if m.mask == "none" else f"train-{m.mask}"].arrays["prefix"]
        return fit_suffix(enc, prefix, idx, y[idx], _weights(items, idx), m, seed, prefix_at, precision)

    def scores(fitted, idx: np.ndarray, vs: str, store: Store = st, nm: tuple[str, ...] = names,
               key: str = "s512") -> np.ndarray:
        lg = view_logits(m, fitted, store, idx, feats_cache.get(key), precision)
        return sigmoid(combine(lg, np.asarray(store.arrays["distinct"])[idx], nm, vs))

    t0 = time.perf_counter()
    model = fit(fd.train_real)
    train_s = time.perf_counter() - t0
    rec: dict = {"method": m.name, "fold": k, "seed": seed, "real_group": fd.real, "gen_group": fd.gen,
                 "n_train_real": len(fd.train_real), "n_train_gen": len(fd.train_gen),
                 "n_test_real": len(fd.test_real), "n_test_gen": len(fd.test_gen), "train_seconds": round(train_s, 1),
                 "views": {}}
    # leave-one-real-source-group-out calibration: inner models (probes only: fine-tuning x 6 is beyond a CPU)
    loso_scores: dict[str, dict[str, np.ndarray]] = {vs: {} for vs in VIEW_SETS}
    if m.kind == "probe":
        for g, members in fd.by_group.items():
            inner = fit(np.setdiff1d(fd.train_real, members))
            held = np.array([i for i in range(len(items)) if y[i] == 0 and items[i].group == g])
            for vs in VIEW_SETS:
                loso_scores[vs][g] = scores(inner, held, vs)
    for vs in VIEW_SETS:
        s_real, s_gen = scores(model, fd.test_real, vs), scores(model, fd.test_gen, vs)
        s_cal, s_ins = scores(model, fd.calib, vs), scores(model, fd.insource_test, vs)
        thresholds = {"in-source": threshold_at_fpr(s_cal, TARGET_FPR)}
        if loso_scores[vs]:
            thresholds["loso"] = balanced_threshold(loso_scores[vs])
        yy = np.r_[np.zeros(len(s_real)), np.ones(len(s_gen))]
        auc, ci = auc_ci(yy, np.r_[s_real, s_gen], n_boot=300)
        yi = np.r_[np.zeros(len(s_ins)), np.ones(len(s_gen))]
        auc_in, ci_in = auc_ci(yi, np.r_[s_ins, s_gen], n_boot=300)
        res = {"auc": auc, "auc_ci": ci, "auc_insource": auc_in, "auc_insource_ci": ci_in, "at": {}}
        srcs = np.array([items[i].family for i in fd.test_real])
        for name, t in thresholds.items():
            res["at"][name] = {"threshold": t, "fpr": _rates(s_real, t), "recall": _rates(s_gen, t),
                               "fpr_insource": _rates(s_ins, t),
                               "fpr_by_source": {s: _rates(s_real[srcs == s], t) for s in sorted(set(srcs))}}
            if name == "loso":
                res["at"][name]["loso_fpr_by_group"] = {g: float((v >= t).mean()) for g, v in loso_scores[vs].items()}
        if vs == "grid2+whole":  # kept for post-hoc analyses (calibration sample size, other targets)
            res["scores_real"] = [round(float(x), 5) for x in s_real]
            res["sources_real"] = srcs.tolist()
            res["scores_gen"] = [round(float(x), 5) for x in s_gen]
            res["scores_calib"] = [round(float(x), 5) for x in s_cal]
        rec["views"][vs] = res
    if m.kind == "probe":  # format audit: centre view as stored vs JPEG q95, on the held-out images
        real = fd.test_real[fd.test_real % AUDIT_EVERY == 0]
        gen = fd.test_gen[fd.test_gen % AUDIT_EVERY == 0]
        test = np.concatenate([real, gen])
        a = sigmoid(fit_logits(m, model, feats_cache["stored"][test]))
        b = sigmoid(fit_logits(m, model, feats_cache["jpeg95"][test]))
        d = np.abs(a - b)
        rec["audit"] = {"n": len(test), "stored_vs_jpeg95_mean": float(d.mean()),
                        "stored_vs_jpeg95_max": float(d.max()),
                        "gen_mean": float(d[len(real):].mean()) if len(gen) else None}
    return rec


@torch.inference_mode()
def fit_logits(m: Method, fitted, feats: torch.Tensor) -> np.ndarray:
    return fitted(feats[:, 0]).numpy()


def _seen(training: dict) -> tuple[set[str], set[str]]:
    """(photo sources, families) a detector trained on: the generator column of its one training manifest
    (make_default_detector.py's, in this benchmark's names), else the pre-field-benchmark detector's."""
    real: set[str] = set()
    gen: set[str] = set()
    data = training.get("data") or []
    data = [data] if isinstance(data, str) else list(data)
    if len(data) == 1:
        entry = data[0]
        path = Path(entry) if Path(entry).is_absolute() else Path(__file__).resolve().parents[1] / entry
        if path.suffix == ".csv" and path.is_file():
            with open(path, newline="") as f:
                for row in csv.DictReader(f):
                    (gen if row["label"] == "ai" else real).add(row.get("generator", ""))
    if real or gen:
        return real, gen
    return {"camera", "imagenet"}, {"gpt-image", "flux", "sd1-2", "sdxl-kolors", "sd3", "open-small", "comfyui"}


def shipped_baseline(items: list[Item], stores: dict[str, Store], detector_dir: Path | None = None) -> dict:
    """The shipped detector as it is, on the cached ``s512-jpeg95`` views: its head on the cached CLS tokens
    of its feature blocks (the benchmark's bf16 features), at its own stored threshold.

    Per photo source and per generator family: the share called generated. Sources and families it
    trained on are marked ``seen``: those its training manifest names (``make_default_detector.py``
    writes one with this benchmark's family and source names), else those of the detector shipped
    until the field benchmark (camera, ImageNet, native.csv's families, comfyui).
    """
    from safetensors.torch import load_file

    from mpft.detectors import DEFAULT_DETECTOR_DIR

    folder = Path(detector_dir or DEFAULT_DETECTOR_DIR)
    cfg = json.loads((folder / "config.json").read_text())
    w = load_file(folder / "model.safetensors")  # a linear head on block features: all the probe needs
    blocks = tuple(cfg["tune"]["feature_blocks"])
    m = Method("shipped", "probe", "cls" if blocks else "emb", blocks=blocks)
    feats = probe_features(stores["s512"], m)
    logits = (feats @ w["head.weight"].T + w["head.bias"]).squeeze(-1).numpy()
    s = sigmoid(combine(logits, np.asarray(stores["s512"].arrays["distinct"]), S512_VIEWS, "grid2+whole"))
    t = float(cfg["threshold"])
    seen_real, seen_gen = _seen(cfg.get("training", {}))
    out: dict = {"threshold": t, "photos": {}, "generated": {}}
    y = np.array([it.label for it in items])
    for kind, label, seen in (("photos", 0, seen_real), ("generated", 1, seen_gen)):
        for fam in sorted({it.family for it in items if it.label == label}):
            idx = np.array([i for i, it in enumerate(items) if it.label == label and it.family == fam])
            out[kind][fam] = {**_rates(s[idx], t), "seen": fam in seen}
    unseen_r = np.array([i for i, it in enumerate(items) if y[i] == 0 and it.family not in seen_real])
    unseen_g = np.array([i for i, it in enumerate(items) if y[i] == 1 and it.family not in seen_gen])
    out["auc_unseen"] = auc_ci(np.r_[np.zeros(len(unseen_r)), np.ones(len(unseen_g))],
                               np.r_[s[unseen_r], s[unseen_g]], n_boot=300)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "field_folds")
    ap.add_argument("--cache", type=Path, default=REPO / "runs" / "field", help="feature cache (GBs, not committed)")
    ap.add_argument("--quick", action="store_true", help="random:tiny backbone, a few images per group (CI)")
    ap.add_argument("--methods", nargs="*", default=None)
    ap.add_argument("--folds", nargs="*", type=int, default=None)
    ap.add_argument("--seeds", nargs="*", type=int, default=[0, 1, 2])
    ap.add_argument("--imagenet", type=int, default=120)
    ap.add_argument("--cap", type=int, default=80, help="at most this many images per family / photo source")
    ap.add_argument("--train-views", type=int, default=2)
    ap.add_argument("--layers", type=int, default=4, help="K: blocks a fine-tuned method trains")
    ap.add_argument("--finetune-epochs", type=int, default=1)
    ap.add_argument("--masks", nargs="*", default=None, help="masked prefixes to cache (default: what methods need)")
    ap.add_argument("--precision", choices=("fp32", "bf16"), default="bf16",
                    help="frozen feature extraction (bf16: a bf16 copy of the encoder); tuning runs in autocast")
    ap.add_argument("--extract-only", action="store_true")
    ap.add_argument("--shipped", action="store_true", help="score the shipped detector as it is (shipped.json)")
    ap.add_argument("--report", action="store_true")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    if args.quick:
        if args.out == ap.get_default("out"):
            args.out = REPO / "runs" / "field-quick"
        args.cache = args.out / "cache"
        args.imagenet, args.train_views, args.seeds = 4, 2, args.seeds[:1]
    results = args.out / "results.jsonl"
    if args.report:
        from field_report import report

        print(report(results))
        return 0
    spec = "random:tiny" if args.quick else "clip-vit-b16"
    enc = load_backbone(spec).eval()
    items = load_items(args.imagenet, args.quick, 0 if args.quick else args.cap)
    all_methods = methods_for(enc.num_layers)
    names = args.methods or list(all_methods)
    unknown = [n for n in names if n not in all_methods]
    if unknown:
        ap.error(f"unknown methods {unknown}; known: {list(all_methods)}")
    import dataclasses

    all_methods = {k: dataclasses.replace(m, epochs=args.finetune_epochs) if m.kind == "finetune" else m
                   for k, m in all_methods.items()}
    masks = tuple(args.masks if args.masks is not None else
                  sorted({all_methods[n].mask for n in names if all_methods[n].mask != "none"}))
    prefix_at = enc.num_layers - (min(args.layers, 1) if args.quick else args.layers)
    ident = hashlib.sha256(json.dumps([spec, [i.path for i in items], args.train_views, prefix_at,
                                       args.precision + "-weights",
                                       TRAIN_AUGMENT.to_dict()]).encode()).hexdigest()[:12]
    root = args.cache / f"features-{ident}"
    log.info("%d images (%d generated); features in %s", len(items), sum(i.label for i in items), root)
    enc_x = copy.deepcopy(enc).to(torch.bfloat16) if args.precision == "bf16" else enc
    stores = extract(items, enc_x, root, args.train_views, prefix_at, masks)
    del enc_x
    if args.extract_only:
        return 0
    if args.shipped:
        base = shipped_baseline(items, stores)
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "shipped.json").write_text(json.dumps(base, indent=1))
        log.info("shipped detector: %s", json.dumps(base)[:400])
        return 0
    done = set()
    if results.is_file():
        for line in results.read_text().splitlines():
            if line.strip():
                r = json.loads(line)
                done.add((r["method"], r["fold"], r["seed"], r.get("features")))
    for name in names:
        m = all_methods[name]
        feats_cache: dict = {}
        for seed in args.seeds:
            for k in args.folds if args.folds is not None else range(len(REAL_ORDER)):
                if (name, k, seed, ident) in done:
                    continue
                if m.kind == "probe" and not feats_cache:
                    feats_cache = {key: probe_features(stores[key], m) for key in ("train", "s512", "stored", "jpeg95")}
                rec = run_one(items, stores, enc, m, k, seed, prefix_at, args.precision, feats_cache)
                rec["features"] = ident
                r = rec["views"]["grid2+whole"]
                at = r["at"].get("loso", r["at"]["in-source"])
                log.info("%s fold %d (%s / %s) seed %d: AUC %.3f FPR %.1f%% recall %.1f%% (%.0fs)", name, k,
                         rec["real_group"], rec["gen_group"], seed, r["auc"], 100 * at["fpr"]["rate"],
                         100 * at["recall"]["rate"], rec["train_seconds"])
                results.parent.mkdir(parents=True, exist_ok=True)
                with open(results, "a") as f:
                    f.write(json.dumps(rec) + "\n")
    from field_report import report

    print(report(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
