"""Unseen-generator benchmark: leave whole generator families out of training, test on them.

Data (``../shared/data``, see its README): ``native.csv`` (generated images of 17 families and
camera photos, lossless native-resolution crops), a subset of ``imagenet_samples`` photos, and the
``comfyui_t2i`` thumbnails of ~40 mostly commercial systems (a test-only extra fold).

Protocol
- Folds hold out whole families (``FOLDS``): train on every other family plus the training real
  photos, test on the held-out family against held-back real photos. The ``comfyui`` fold trains on
  all native families and tests on the comfyui thumbnails.
- Real photos (camera + ImageNet) are split per seed into train 60% / calibration 20% / test 20%,
  stratified by source. The threshold is set at 5% false positives on the calibration photos; we
  report AUC (bootstrap interval) and recall at that threshold (Wilson interval) on the test pair.
- Both classes go through the same processing before scoring: condition ``jpeg95`` re-encodes
  every image as JPEG q95 at its stored size; ``half-jpeg95`` first halves it (bicubic), then JPEG q95.
  ``native`` (lossless as stored) exists only for the format audit.
- Training views are augmented identically for both classes (random downscale, mild blur, JPEG
  re-encode, random native-resolution crop, flip): ``TRAIN_AUGMENT``.
- Format audit: the same test images scored as stored (PNG for generated) and as JPEG q95, and at
  two sizes (stored vs halved, both JPEG q95): mean and max |score shift|.

Cost control: the frozen CLIP runs once per view (``extract``) and everything a method needs is
cached on disk: the CLS token of every block and the final embedding (probes), the hidden states
entering block ``L-K`` and per-patch texture scores (last-K / TAM / LoRA, which then train only
the last K blocks). Masking those methods at block L-K instead of at the input is an
approximation of MPFT's input masking, stated in docs/benchmarks.md.
This cache is a private path to scores on purpose: each of 8 methods x 9 folds x seeds would
otherwise run the frozen backbone over every view again. Unmasked, it computes what the library
does: a probe on cached CLS tokens scores as ``DetectorModel(linear, feature_blocks)`` through
``mpft.pipeline.Scorer``, a suffix on cached prefix states as the matching last-K model, and the
stored views combine as ``mpft.views`` views do (tests/test_benchmark_scripts.py checks all three
in fp32; the cache itself stores CLS tokens and prefix states in float16).

Results: one JSON line per (method, fold, seed) in ``benchmarks/results/unseen_generators/results.jsonl``
(``--out``), appended as each finishes; a rerun skips finished ones (resumable); the feature cache is in
``runs/unseen`` (``--cache``). ``--report`` prints the tables in Markdown.

    python benchmarks/unseen_generators.py                      # the grid (hours on 2 CPU cores)
    python benchmarks/unseen_generators.py --methods linear rine # some methods
    python benchmarks/unseen_generators.py --quick              # random:tiny backbone, ~1 min (CI)
    python benchmarks/unseen_generators.py --report             # tables from results.jsonl
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import logging
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from mpft.backbones import gather_tokens, load_backbone
from mpft.data.dataset import balance_weights
from mpft.data.images import decode_image
from mpft.data.scan import list_images
from mpft.data.transforms import Augment, PreprocessPolicy, prepare, reencode, resize_shorter
from mpft.evaluation.metrics import threshold_at_fpr, wilson_interval
from mpft.fsutil import atomic_file
from mpft.model import block_features
from mpft.tam import texture_scores
from mpft.views import ViewConfig, combine_logits

log = logging.getLogger("unseen_generators")
REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("MPFT_DATA", REPO.parent / "shared" / "data"))

FOLDS: dict[str, tuple[str, ...]] = {
    "gpt-image": ("gpt-image",),
    "flux": ("flux",),
    "sd3": ("sd3",),
    "sdxl+kolors": ("sdxl", "kolors"),
    "sd1+sd2": ("sd1", "sd2"),
    "cascade+small": ("cascade", "hidream", "auraflow", "qwen", "hunyuan", "lumina", "omnigen", "zimage", "cosmos"),
    "comfyui": ("comfyui",),
    # unseen generators AND an unseen real source: the closest we have to images from elsewhere
    "comfyui/real=camera": ("comfyui",),
    "comfyui/real=imagenet": ("comfyui",),
}
TRAIN_AUGMENT = Augment(
    flip=True,
    downscale_prob=0.5,
    downscale_range=(0.25, 1.0),
    blur_prob=0.1,
    blur_sigma=(0.0, 1.0),
    jpeg_prob=0.8,
    jpeg_quality=(65, 100),
)
# the stored test views of each condition: grid:3 corners (= grid:2) and centre, then the whole view
VIEW_NAMES = ("tl", "tr", "bl", "br", "center", "whole")
CONDITIONS = {"jpeg95": VIEW_NAMES, "half-jpeg95": ("center", "whole"), "native": ("center",)}
VIEW_SETS = {  # name -> (stored view names, combination rule)
    "center": (("center",), "mean"),
    "whole": (("whole",), "mean"),
    "grid2": (("tl", "tr", "bl", "br"), "mean"),
    "grid2-max": (("tl", "tr", "bl", "br"), "max"),
    "grid3c": (("tl", "tr", "bl", "br", "center"), "mean"),
    "grid3c-max": (("tl", "tr", "bl", "br", "center"), "max"),
    "center+whole": (("center", "whole"), "mean"),
    "grid2+whole": (("tl", "tr", "bl", "br", "whole"), "mean"),
    "grid3c+whole": (("tl", "tr", "bl", "br", "center", "whole"), "mean"),
}


@dataclass(frozen=True)
class Item:
    path: str
    label: int
    family: str
    source: str  # camera / imagenet / native / comfyui


def load_items(n_imagenet: int, quick: bool) -> list[Item]:
    items: list[Item] = []
    with open(DATA / "native.csv", newline="") as f:
        for row in csv.DictReader(f):
            label = 1 if row["label"] == "ai" else 0
            items.append(Item(str(DATA / row["path"]), label, row["generator"], "native" if label else "camera"))
    photos = sorted(list_images(DATA / "imagenet_samples" / "nature"))
    pick = np.random.default_rng(1234).permutation(len(photos))[:n_imagenet]
    items += [Item(str(photos[i]), 0, "imagenet", "imagenet") for i in sorted(pick)]
    items += [Item(str(p), 1, "comfyui", "comfyui") for p in sorted(list_images(DATA / "comfyui_t2i" / "ai"))]
    if quick:  # a few of each family and source, enough for every fold to have both classes
        seen: dict[str, int] = {}
        keep = []
        for it in items:
            k = it.family
            if seen.get(k, 0) < (6 if it.label == 0 else 2):
                keep.append(it)
                seen[k] = seen.get(k, 0) + 1
        items = keep
    return items


# ---- views ---------------------------------------------------------------------------------------
def condition_image(img: Image.Image, condition: str) -> Image.Image:
    """The same processing for both classes: stored pixels, JPEG q95, or halved then JPEG q95."""
    if condition == "native":
        return img
    if condition == "half-jpeg95":
        w, h = img.size
        img = img.resize((max(1, w // 2), max(1, h // 2)), Image.Resampling.BICUBIC)
    return reencode(img, "jpeg:95")


def test_views(img: Image.Image, size: int, names: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Stored test views (V, S, S, 3) and which are distinct (a small image repeats crops).

    The corners are grid:2's crops (and grid:3's corners), ``center`` is grid:1's crop, ``whole``
    is the resized whole image: :mod:`mpft.views` makes the same boxes.
    """
    from mpft.views import make_views

    base = img if min(img.size) >= size else resize_shorter(img, size)
    w, h = base.size
    xs, ys = (0, w - size), (0, h - size)
    boxes = {"tl": (xs[0], ys[0]), "tr": (xs[1], ys[0]), "bl": (xs[0], ys[1]), "br": (xs[1], ys[1]),
             "center": ((w - size) // 2, (h - size) // 2)}
    out, distinct, seen = [], [], set()
    for n in names:
        if n == "whole":
            out.append(make_views(img, size, ViewConfig(grid=0, whole=True))[0])
            distinct.append(True)
            continue
        x, y = boxes[n]
        out.append(np.asarray(base.crop((x, y, x + size, y + size)), dtype=np.uint8))
        distinct.append((x, y) not in seen)
        seen.add((x, y))
    return np.stack(out), np.array(distinct)


def train_views(img: Image.Image, size: int, n: int, key: int) -> np.ndarray:
    rng = np.random.default_rng([7, key])
    return np.stack([prepare(img, PreprocessPolicy(size=size), train=True, rng=rng, augment=TRAIN_AUGMENT)
                     for _ in range(n)])


# ---- feature extraction (resumable) --------------------------------------------------------------
class Store:
    """Disk arrays of one kind of view (memmaps) with a done-marker per image."""

    def __init__(self, root: Path, name: str, n_items: int, n_views: int, enc, prefix_at: int | None):
        self.root, self.name = root, name
        L, D = enc.num_layers, enc.width
        T = enc.num_prefix_tokens + enc.num_patches
        shapes = {
            "cls": ((n_items, n_views, L, D), np.float16),
            "emb": ((n_items, n_views, enc.embed_dim), np.float32),
            "distinct": ((n_items, n_views), np.bool_),
            "texture": ((n_items, n_views, enc.num_patches), np.float32),
        }
        if prefix_at is not None:
            shapes["prefix"] = ((n_items, n_views, T, D), np.float16)
        root.mkdir(parents=True, exist_ok=True)
        self.arrays = {}
        for k, (shape, dt) in shapes.items():
            p = root / f"{name}-{k}.npy"
            mode = "r+" if p.is_file() else "w+"
            self.arrays[k] = np.lib.format.open_memmap(p, mode=mode, dtype=dt, shape=shape)
        self.done_path = root / f"{name}-done.npy"
        self.done = np.load(self.done_path) if self.done_path.is_file() else np.zeros(n_items, bool)

    def flush(self) -> None:
        for a in self.arrays.values():
            a.flush()
        with atomic_file(self.done_path) as tmp, open(tmp, "wb") as f:
            np.save(f, self.done)


@torch.inference_mode()
def encode(enc, views: np.ndarray, prefix_at: int | None, precision: str) -> dict[str, np.ndarray]:
    """(V, S, S, 3) uint8 -> per-block summary token (CLS; V, L, D), embedding, texture (V, N), prefix states."""
    x01 = torch.from_numpy(views).permute(0, 3, 1, 2).float() / 255
    tex = texture_scores(x01, enc.patch_size, "gradient")
    ctx = torch.autocast("cpu", dtype=torch.bfloat16) if precision == "bf16" else torch.autocast("cpu", enabled=False)
    with ctx:
        hidden = enc.pre_norm(enc.embed(enc.normalize(x01)))
        cls, prefix = [], None
        for i in range(enc.num_layers):
            if prefix_at is not None and i == prefix_at:
                prefix = hidden.float()
            hidden = enc.run_blocks(hidden, i, i + 1)
            cls.append(enc.summary_token(hidden).float())
        emb = enc.pool(hidden).float()
    out = {"cls": torch.stack(cls, 1).numpy(), "emb": emb.numpy(), "texture": tex.numpy()}
    if prefix is not None:
        out["prefix"] = prefix.numpy()
    return out


def extract(items: list[Item], enc, root: Path, n_train_views: int, prefix_at: int | None, precision: str,
            conditions: dict[str, tuple[str, ...]] = CONDITIONS) -> dict:
    size = enc.image_size
    stores = {"train": Store(root, "train", len(items), n_train_views, enc, prefix_at)}
    for cond, names in conditions.items():
        stores[cond] = Store(root, cond, len(items), len(names), enc, prefix_at if cond == "jpeg95" else None)
    todo = [i for i in range(len(items)) if not all(s.done[i] for s in stores.values())]
    t0 = time.perf_counter()
    for n, i in enumerate(todo):
        img = decode_image(items[i].path).image
        key = int(hashlib.sha256(items[i].path.encode()).hexdigest()[:8], 16)
        jobs = {"train": (train_views(img, size, n_train_views, key), np.ones(n_train_views, bool))}
        for cond, names in conditions.items():
            jobs[cond] = test_views(condition_image(img, cond), size, names)
        for name, (views, distinct) in jobs.items():
            st = stores[name]
            feats = encode(enc, views, prefix_at if "prefix" in st.arrays else None, precision)
            for k, v in feats.items():
                st.arrays[k][i] = v
            st.arrays["distinct"][i] = distinct
            st.done[i] = True
        if (n + 1) % 20 == 0 or n + 1 == len(todo):
            for st in stores.values():
                st.flush()
            rate = (n + 1) / (time.perf_counter() - t0)
            log.info("extracted %d/%d images (%.2f img/s)", n + 1, len(todo), rate)
    return stores


# ---- methods -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Method:
    name: str
    kind: str  # probe | finetune
    blocks: tuple[int, ...] = ()  # probe: () = final embedding (UnivFD)
    mask: str = "none"
    ratio: float = 0.0
    lora: bool = False
    epochs: int = 3


def methods_for(num_layers: int) -> dict[str, Method]:
    L = num_layers
    half = tuple(range(L // 2, L + 1))
    return {
        "linear": Method("linear", "probe"),
        "rine": Method("rine", "probe", blocks=tuple(range(1, L + 1))),
        "rine-upper": Method("rine-upper", "probe", blocks=half),
        "rine-lower": Method("rine-lower", "probe", blocks=tuple(range(1, L // 2 + 1))),
        "last-k": Method("last-k", "finetune", epochs=2),
        "last-k-tam0.25": Method("last-k-tam0.25", "finetune", mask="tam", ratio=0.25, epochs=2),
        "last-k-tam0.5": Method("last-k-tam0.5", "finetune", mask="tam", ratio=0.5, epochs=2),
        "lora-tam0.25": Method("lora-tam0.25", "finetune", mask="tam", ratio=0.25, lora=True, epochs=2),
    }


def split_reals(items: list[Item], seed: int, held_source: str | None = None) -> dict[str, np.ndarray]:
    """Indices of real photos for train / calib / test, 60/20/20 per source.

    With ``held_source`` every photo of that source is a test photo and the others split 75/25 into
    train / calib: the threshold then comes from the training sources, as it would in deployment.
    """
    parts: dict[str, list[int]] = {"train": [], "calib": [], "test": []}
    for source in ("camera", "imagenet"):
        idx = np.array([i for i, it in enumerate(items) if it.label == 0 and it.source == source])
        if not len(idx):
            continue
        if source == held_source:
            parts["test"] += idx.tolist()
            continue
        idx = idx[np.random.default_rng([seed, len(source)]).permutation(len(idx))]
        a, b = (int(0.75 * len(idx)), len(idx)) if held_source else (int(0.6 * len(idx)), int(0.8 * len(idx)))
        parts["train"] += idx[:a].tolist()
        parts["calib"] += idx[a:b].tolist()
        parts["test"] += idx[b:].tolist()
    return {k: np.array(sorted(v)) for k, v in parts.items()}


def sample_weights(items: list[Item], idx: np.ndarray) -> np.ndarray:
    """``mpft train --balance generator``'s weights: generated images grouped by family, reals by source."""
    return balance_weights([items[i].family if items[i].label else items[i].source for i in idx],
                           [items[i].label for i in idx])


def _probe_features(store: Store, idx: np.ndarray, blocks: tuple[int, ...]) -> torch.Tensor:
    if not blocks:
        return torch.from_numpy(np.asarray(store.arrays["emb"][idx], dtype=np.float32))
    cls = torch.from_numpy(np.asarray(store.arrays["cls"][idx][:, :, [b - 1 for b in blocks]], dtype=np.float32))
    n, v = cls.shape[:2]
    return block_features(cls.flatten(0, 1)).view(n, v, -1)


def train_probe(feats: torch.Tensor, labels: np.ndarray, weights: np.ndarray, m: Method, seed: int):
    """feats (N, V, F) -> Linear head trained like ``mpft train --tune linear`` (AdamW, cosine)."""
    g = torch.Generator().manual_seed(seed)
    n, v, f = feats.shape
    head = torch.nn.Linear(f, 1)
    torch.nn.init.normal_(head.weight, std=0.01, generator=g)
    torch.nn.init.zeros_(head.bias)
    opt = torch.optim.AdamW(head.parameters(), lr=1e-3, weight_decay=0.01)
    steps_per_epoch = max(1, n * v // 32)
    total = steps_per_epoch * m.epochs * 4
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, total)
    y = torch.from_numpy(labels.astype(np.float32))
    w = torch.from_numpy(weights)
    for _ in range(total):
        i = torch.multinomial(w, 32, replacement=True, generator=g)
        j = torch.randint(0, v, (32,), generator=g)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(head(feats[i, j]).squeeze(-1), y[i])
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    return head


class Suffix(torch.nn.Module):
    """Blocks ``start``.. of a copy of the encoder, its head side (final norm, pooling, projection) and
    a linear head: what last-K / LoRA train, on cached hidden states of block ``start``."""

    def __init__(self, enc, start: int, lora: bool, seed: int):
        super().__init__()
        import copy

        torch.manual_seed(seed)
        self.enc, self.start = copy.deepcopy(enc), start
        self.head = torch.nn.Linear(enc.embed_dim, 1)
        torch.nn.init.normal_(self.head.weight, std=0.01)
        torch.nn.init.zeros_(self.head.bias)
        for p in self.enc.parameters():
            p.requires_grad_(False)
        if lora:
            from peft import LoraConfig, inject_adapter_in_model

            inject_adapter_in_model(
                LoraConfig(r=8, lora_alpha=16, target_modules=enc.lora_target_modules()),
                torch.nn.ModuleList(list(self.enc.blocks[start:])),
            )
            for n_, p in self.enc.named_parameters():
                p.requires_grad_("lora_" in n_)
        else:
            tuned = [p for i in range(start, enc.num_layers) for p in self.enc.block_parameters(i)]
            for p in tuned + self.enc.head_side_parameters():
                p.requires_grad_(True)

    def forward(self, hidden: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        """hidden: (B, P+K, D) states entering block ``start``; keep: (B, K) patches present (None: all)."""
        hidden = self.enc.run_blocks(hidden, self.start, self.enc.num_layers, keep)
        return self.head(self.enc.pool(hidden)).squeeze(-1)


def train_suffix(enc, store: Store, idx, labels, weights, m: Method, seed: int, prefix_at: int, batch: int = 16):
    model = Suffix(enc, prefix_at, m.lora, seed)
    lr_back = 5e-4 if m.lora else 2e-5
    head_params = list(model.head.parameters())
    back = [p for n_, p in model.named_parameters() if p.requires_grad and not n_.startswith("head.")]
    opt = torch.optim.AdamW([{"params": head_params, "lr": 1e-3}, {"params": back, "lr": lr_back}], weight_decay=0.01)
    v = store.arrays["prefix"].shape[1]
    steps = max(1, len(idx) * v * m.epochs // batch)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    g = torch.Generator().manual_seed(seed)
    w = torch.from_numpy(weights)
    y = torch.from_numpy(labels.astype(np.float32))
    model.train()
    t0 = time.perf_counter()
    for step in range(steps):
        if step in (1, steps // 4, steps // 2, 3 * steps // 4):
            log.info("  %s: step %d/%d (%.1f s/step)", m.name, step, steps, (time.perf_counter() - t0) / max(step, 1))
        i = torch.multinomial(w, batch, replacement=True, generator=g).numpy()
        j = torch.randint(0, v, (batch,), generator=g).numpy()
        rows, cols = idx[i], j
        pairs = list(zip(rows, cols, strict=True))
        hidden = torch.from_numpy(np.stack([store.arrays["prefix"][r, c] for r, c in pairs]).astype(np.float32))
        if m.mask == "tam" and m.ratio > 0:
            tex = torch.from_numpy(np.stack([store.arrays["texture"][r, c] for r, c in pairs]))
            n_keep = tex.shape[1] - int(round(m.ratio * tex.shape[1]))
            keep = tex.argsort(dim=1)[:, :n_keep].sort(dim=1).values  # hide the most textured patches
            hidden = gather_tokens(hidden, keep, enc.num_prefix_tokens)
        else:
            keep = None
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(hidden, keep), y[i])
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)
        opt.step()
        sched.step()
    model.eval()
    return model


@torch.inference_mode()
def view_logits(m: Method, fitted, store: Store, idx: np.ndarray) -> np.ndarray:
    """(len(idx), V) per-view logits for stored test views."""
    if m.kind == "probe":
        return fitted(_probe_features(store, idx, m.blocks)).squeeze(-1).numpy()
    out = []
    v = store.arrays["prefix"].shape[1]
    for k in range(0, len(idx), 4):
        h = torch.from_numpy(np.asarray(store.arrays["prefix"][idx[k:k + 4]], dtype=np.float32))
        out.append(fitted(h.flatten(0, 1)).view(-1, v).numpy())
    return np.concatenate(out)


def combine(logits: np.ndarray, distinct: np.ndarray, names: tuple[str, ...], view_set: str,
            view_sets: dict[str, tuple[tuple[str, ...], str]] | None = None) -> np.ndarray:
    """(N, V) stored-view logits -> (N,) combined logits of ``view_set`` (repeated crops counted once)."""
    wanted, rule = (view_sets or VIEW_SETS)[view_set]
    cols = [names.index(n) for n in wanted]
    sel = logits[:, cols]
    keep = distinct[:, cols]
    keep[:, 0] = True
    flat = torch.from_numpy(sel[keep])
    counts = keep.sum(1).tolist()
    return combine_logits(flat, counts, rule).numpy()


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def auc_ci(y: np.ndarray, s: np.ndarray, n_boot: int = 500, seed: int = 0) -> tuple[float, list[float]]:
    from sklearn.metrics import roc_auc_score

    auc = float(roc_auc_score(y, s))
    rng = np.random.default_rng(seed)
    pos, neg = np.where(y == 1)[0], np.where(y == 0)[0]
    boots = []
    for _ in range(n_boot):
        b = np.concatenate([rng.choice(pos, len(pos)), rng.choice(neg, len(neg))])
        boots.append(roc_auc_score(y[b], s[b]))
    return auc, [float(np.percentile(boots, 2.5)), float(np.percentile(boots, 97.5))]


def run_one(items, stores, enc, m: Method, fold: str, seed: int, prefix_at: int) -> dict:
    held = set(FOLDS[fold])
    reals = split_reals(items, seed, fold.partition("/real=")[2] or None)
    gen_train = np.array([i for i, it in enumerate(items)
                          if it.label == 1 and it.source == "native" and it.family not in held])
    gen_test = np.array([i for i, it in enumerate(items) if it.label == 1 and it.family in held])
    train_idx = np.concatenate([reals["train"], gen_train])
    labels = np.array([items[i].label for i in train_idx])
    weights = sample_weights(items, train_idx)
    t0 = time.perf_counter()
    if m.kind == "probe":
        fitted = train_probe(_probe_features(stores["train"], train_idx, m.blocks), labels, weights, m, seed)
    else:
        fitted = train_suffix(enc, stores["train"], train_idx, labels, weights, m, seed, prefix_at)
    train_s = time.perf_counter() - t0
    rec = {"method": m.name, "fold": fold, "seed": seed, "epochs": m.epochs, "n_train_real": len(reals["train"]),
           "n_train_gen": len(gen_train), "n_test_gen": len(gen_test), "n_test_real": len(reals["test"]),
           "n_calib": len(reals["calib"]), "train_seconds": round(train_s, 1), "conditions": {}}
    test_idx = np.concatenate([reals["test"], gen_test])
    y = np.array([items[i].label for i in test_idx])
    conds = CONDITIONS if m.kind == "probe" else {"jpeg95": CONDITIONS["jpeg95"]}
    per_view_scores = {}
    for cond, names in conds.items():
        st = stores[cond]
        lg_test = view_logits(m, fitted, st, test_idx)
        lg_cal = view_logits(m, fitted, st, reals["calib"])
        dist_test = np.asarray(st.arrays["distinct"][test_idx])
        dist_cal = np.asarray(st.arrays["distinct"][reals["calib"]])
        res = {}
        for vs, (wanted, _) in VIEW_SETS.items():
            if not set(wanted) <= set(names):
                continue
            s_test = sigmoid(combine(lg_test, dist_test, names, vs))
            s_cal = sigmoid(combine(lg_cal, dist_cal, names, vs))
            t = threshold_at_fpr(s_cal, 0.05)
            fake, real = s_test[y == 1], s_test[y == 0]
            k, kf = int((fake >= t).sum()), int((real >= t).sum())
            auc, ci = auc_ci(y, s_test)
            res[vs] = {"auc": auc, "auc_ci": ci, "threshold": float(t), "recall": k / len(fake),
                       "recall_ci": list(wilson_interval(k, len(fake))), "fpr": kf / len(real),
                       "fpr_ci": list(wilson_interval(kf, len(real)))}
            per_view_scores[(cond, vs)] = s_test
        rec["conditions"][cond] = res
    if m.kind == "probe":  # format / size audit on the same test images, centre view
        a, b, c = (per_view_scores[(k, "center")] for k in ("native", "jpeg95", "half-jpeg95"))
        rec["audit"] = {"png_vs_jpeg95": {"mean": float(np.abs(a - b).mean()), "max": float(np.abs(a - b).max())},
                        "size_full_vs_half": {"mean": float(np.abs(b - c).mean()), "max": float(np.abs(b - c).max())},
                        "gen_only_png_vs_jpeg95_mean": float(np.abs(a - b)[y == 1].mean())}
    return rec


def _cell(rs: list[dict], cond: str, vs: str, key: str) -> tuple[float, float, float]:
    """Mean over seeds of a metric and of its interval bounds."""
    vals = [r["conditions"][cond][vs] for r in rs]
    ci = "auc_ci" if key == "auc" else f"{key}_ci"
    return (float(np.mean([v[key] for v in vals])), float(np.mean([v[ci][0] for v in vals])),
            float(np.mean([v[ci][1] for v in vals])))


def report(path: Path, detail: str = "rine-upper", detail_views: str = "grid2+whole") -> str:
    """Markdown tables: AUC / recall per method and fold, then one method's folds with intervals and FPR."""
    recs = [json.loads(x) for x in path.read_text().splitlines() if x.strip()] if path.is_file() else []
    if not recs:
        return "no results yet"
    methods = list(dict.fromkeys(r["method"] for r in recs))
    folds = [f for f in FOLDS if any(r["fold"] == f for r in recs)]
    lines: list[str] = []

    def pick(m: str, f: str, cond: str, vs: str) -> list[dict]:
        return [r for r in recs if r["method"] == m and r["fold"] == f and vs in r["conditions"].get(cond, {})]

    for cond, vs in (("jpeg95", "grid2+whole"), ("jpeg95", "center+whole"), ("jpeg95", "center"),
                     ("half-jpeg95", "center+whole"), ("half-jpeg95", "center")):
        lines += [f"\n#### {cond}, views {vs}: AUC / recall at 5% FPR (mean over seeds; n seeds)\n",
                  "| method | " + " | ".join(folds) + " | mean, held-out native families |",
                  "|---|" + "---|" * (len(folds) + 1)]
        for m in methods:
            cells, aucs, rcs = [], [], []
            for f in folds:
                rs = pick(m, f, cond, vs)
                if not rs:
                    cells.append("-")
                    continue
                a, rc = _cell(rs, cond, vs, "auc")[0], _cell(rs, cond, vs, "recall")[0]
                if not f.startswith("comfyui"):
                    aucs.append(a)
                    rcs.append(rc)
                cells.append(f"{a:.3f} / {100 * rc:.0f}% ({len(rs)})")
            mean = f"{np.mean(aucs):.3f} / {100 * np.mean(rcs):.1f}%" if len(aucs) == 6 else "-"
            lines.append(f"| {m} | " + " | ".join(cells) + f" | {mean} |")
    if any(r["method"] == detail for r in recs):
        lines += [f"\n#### {detail} per fold (jpeg95, views {detail_views}; 95% intervals, mean of per-seed bounds)\n",
                  "| fold | test generated / real | AUC | recall at 5% FPR | FPR on test photos |",
                  "|---|---|---|---|---|"]
        for f in folds:
            rs = pick(detail, f, "jpeg95", detail_views)
            if not rs:
                continue
            a, r_, fp = (_cell(rs, "jpeg95", detail_views, k) for k in ("auc", "recall", "fpr"))
            lines.append(f"| {f} | {rs[0]['n_test_gen']} / {rs[0]['n_test_real']} | "
                         f"{a[0]:.3f} [{a[1]:.2f}, {a[2]:.2f}] | "
                         f"{100 * r_[0]:.1f}% [{100 * r_[1]:.0f}, {100 * r_[2]:.0f}] | "
                         f"{100 * fp[0]:.1f}% [{100 * fp[1]:.0f}, {100 * fp[2]:.0f}] |")
    audits = [r for r in recs if "audit" in r]
    if audits:
        lines += ["\n#### Format / size audit (same test images, centre view; all folds and seeds)\n",
                  "| method | PNG vs JPEG q95: mean / max abs shift | stored vs halved size: mean / max |",
                  "|---|---|---|"]
        for m in methods:
            a = [r["audit"] for r in audits if r["method"] == m]
            if a:
                lines.append(f"| {m} | {np.mean([x['png_vs_jpeg95']['mean'] for x in a]):.3f} / "
                             f"{np.max([x['png_vs_jpeg95']['max'] for x in a]):.3f} | "
                             f"{np.mean([x['size_full_vs_half']['mean'] for x in a]):.3f} / "
                             f"{np.max([x['size_full_vs_half']['max'] for x in a]):.3f} |")
    views_rows = [r for r in recs if r["method"] == detail and not r["fold"].startswith("comfyui")]
    if views_rows:
        lines += [f"\n#### Views and combination rule ({detail}, jpeg95, mean over held-out native folds and seeds)\n",
                  "| views | AUC | recall at 5% FPR |", "|---|---|---|"]
        for vs in VIEW_SETS:
            lines.append(f"| {vs} | {np.mean([r['conditions']['jpeg95'][vs]['auc'] for r in views_rows]):.3f} | "
                         f"{100 * np.mean([r['conditions']['jpeg95'][vs]['recall'] for r in views_rows]):.1f}% |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "unseen_generators",
                    help="where results.jsonl lives (committed: --report regenerates the tables from it)")
    ap.add_argument("--cache", type=Path, default=REPO / "runs" / "unseen", help="feature cache (GBs, not committed)")
    ap.add_argument("--quick", action="store_true", help="random:tiny backbone, a few images per family (CI)")
    ap.add_argument("--methods", nargs="*", default=None)
    ap.add_argument("--folds", nargs="*", default=None)
    ap.add_argument("--seeds", nargs="*", type=int, default=[0, 1, 2])
    ap.add_argument("--imagenet", type=int, default=200, help="ImageNet photos added to the real side")
    ap.add_argument("--train-views", type=int, default=4)
    ap.add_argument("--layers", type=int, default=4, help="K: blocks a fine-tuned method trains")
    ap.add_argument("--finetune-epochs", type=int, default=None, help="passes over the training views (default 2)")
    ap.add_argument("--precision", choices=("fp32", "bf16"), default="bf16", help="frozen feature extraction")
    ap.add_argument("--extract-only", action="store_true")
    ap.add_argument("--report", action="store_true")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    if args.quick:
        default_out = REPO / "benchmarks" / "results" / "unseen_generators"
        args.out = args.out if args.out != default_out else REPO / "runs" / "unseen-quick"
        args.cache = args.out / "cache"
        args.imagenet, args.train_views, args.seeds = 6, 2, args.seeds[:1]
    results = args.out / "results.jsonl"
    if args.report:
        print(report(results))
        return 0
    spec = "random:tiny" if args.quick else "clip-vit-b16"
    enc = load_backbone(spec).eval()
    items = load_items(args.imagenet, args.quick)
    prefix_at = enc.num_layers - (min(args.layers, 2) if args.quick else args.layers)
    ident = hashlib.sha256(json.dumps([spec, [i.path for i in items], args.train_views, prefix_at,
                                       args.precision, TRAIN_AUGMENT.to_dict()]).encode()).hexdigest()[:12]
    root = args.cache / f"features-{ident}"
    log.info("%d images (%d generated); features in %s", len(items), sum(i.label for i in items), root)
    stores = extract(items, enc, root, args.train_views, prefix_at, args.precision)
    if args.extract_only:
        return 0
    all_methods = methods_for(enc.num_layers)
    if args.finetune_epochs:
        import dataclasses

        all_methods = {k: dataclasses.replace(m, epochs=args.finetune_epochs) if m.kind == "finetune" else m
                       for k, m in all_methods.items()}
    names = args.methods or list(all_methods)
    done = set()
    if results.is_file():
        for line in results.read_text().splitlines():
            if line.strip():
                r = json.loads(line)
                done.add((r["method"], r["fold"], r["seed"], r.get("features")))
    for seed in args.seeds:
        for name in names:
            for fold in args.folds or list(FOLDS):
                if (name, fold, seed, ident) in done:
                    continue
                rec = run_one(items, stores, enc, all_methods[name], fold, seed, prefix_at)
                rec["features"] = ident
                main_res = rec["conditions"]["jpeg95"]["center"]
                log.info("%s %s seed %d: AUC %.3f recall %.1f%% (%.0fs)", name, fold, seed, main_res["auc"],
                         100 * main_res["recall"], rec["train_seconds"])
                results.parent.mkdir(parents=True, exist_ok=True)
                with open(results, "a") as f:
                    f.write(json.dumps(rec) + "\n")
    print(report(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
