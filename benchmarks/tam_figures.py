"""Figures and descriptive statistics of Texture-Aware Masking (TAM) for docs/tam.md.

Pure texture math: no model, no forward pass. Images are decoded and cut as mpft does at
evaluation (``decode_image`` + ``mpft.pipeline.view_pixels`` with the centre view and
``PreprocessPolicy(size, resize=True)``: shorter side resized to 224, centre crop), then scored
with ``mpft.tam``.

Writes three PNGs into --out (default docs/img):

- ``tam_masks.png``: real and generated images with the rho=0.5 TAM mask greyed out;
- ``tam_measures.png``: the four texture measures on one image, as per-image rank heat maps;
- ``tam_strategies.png``: the same image masked at rho 0.25/0.5/0.75 by tam, random, inverse.

and prints, for --n-real real and all generated images: the mean Jaccard overlap of the
rho=0.5 TAM masks of each pair of texture measures, and the mean texture score of real vs
generated images per measure, under the resize policy above and under mpft's default
(``resize=False``: centre crop at native resolution). The last line of stdout is a JSON
summary. Reruns with the same arguments write the same figures and numbers.

    python benchmarks/tam_figures.py                       # docs/img/tam_*.png + statistics
    python benchmarks/tam_figures.py --out /tmp/tam --n-real 50
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from mpft import tam  # noqa: E402
from mpft.data.images import decode_image  # noqa: E402
from mpft.data.transforms import PreprocessPolicy  # noqa: E402
from mpft.pipeline import view_pixels  # noqa: E402
from mpft.views import ViewConfig  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("MPFT_DATA", REPO.parent / "shared" / "data"))
DEFAULT_REAL = DATA / "imagenet_samples" / "nature"
DEFAULT_GEN = DATA / "comfyui_t2i" / "ai"
DEFAULT_EXAMPLE = "n01531178_goldfinch.JPEG"
IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"}
MAX_PNG_BYTES = 380_000  # docs budget: each figure < 400 KB
GREY = 0.85  # masked patches are washed out towards light grey: visible on dark and grey content alike
RATIOS = (0.25, 0.5, 0.75)
STRATEGIES = ("tam", "random", "inverse")


# ---- data -------------------------------------------------------------------------------------


def list_images(folder: Path) -> list[Path]:
    """Image files directly in ``folder``, sorted by name."""
    if not folder.is_dir():
        raise SystemExit(f"error: image folder not found: {folder} (set MPFT_DATA or pass --real/--gen)")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTS and p.is_file())
    if not files:
        raise SystemExit(f"error: no images in {folder}")
    return files


def evenly_spaced(items: Sequence, k: int) -> list:
    """k items spread over the sorted list (deterministic, covers its whole range)."""
    if k >= len(items):
        return list(items)
    return [items[int(i)] for i in np.linspace(0, len(items) - 1, k).round().astype(int)]


def load_pixels(paths: Sequence[Path], policy: PreprocessPolicy) -> torch.Tensor:
    """Decode and cut the centre view of ``paths`` -> (B, 3, S, S) float in [0, 1].

    Full-size decoding, not a ``Preprocessor``'s reduced-scale one: the published statistics were
    measured on full-size decodes.
    """
    views = [view_pixels(decode_image(p).image, policy, ViewConfig())[0] for p in paths]
    return torch.stack(views).float().div_(255.0)


# ---- statistics -------------------------------------------------------------------------------


def tam_mask(pixels01: torch.Tensor, patch: int, method: str, ratio: float) -> torch.Tensor:
    """(B, 3, S, S) in [0, 1] -> (B, N) bool, True on the patches TAM hides (temperature 0)."""
    scores = tam.texture_scores(pixels01, patch, method)
    masked, _ = tam.select_masked(scores, ratio, "tam")
    return tam.mask_to_grid(masked, scores.shape[1])


def jaccard(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(B, N) bool masks -> (B,) |a & b| / |a | b| (1 where both are empty)."""
    inter = (a & b).sum(1).float()
    union = (a | b).sum(1).float()
    return torch.where(union > 0, inter / union.clamp_min(1), torch.ones_like(inter))


def random_jaccard(num_patches: int, ratio: float) -> float:
    """Expected Jaccard of two independent uniform masks of M = round(ratio*N) patches (hypergeometric)."""
    n, m = num_patches, tam.num_masked(num_patches, ratio)
    if m == 0:
        return 1.0
    total = math.comb(n, m)
    return sum(
        math.comb(m, k) * math.comb(n - m, m - k) / total * k / (2 * m - k) for k in range(max(0, 2 * m - n), m + 1)
    )


def measure_agreement(pixels01: torch.Tensor, patch: int, ratio: float) -> dict[str, dict[str, float]]:
    """Mean Jaccard of the TAM masks of every pair of texture measures: {a: {b: J}}."""
    masks = {m: tam_mask(pixels01, patch, m, ratio) for m in tam.TEXTURE_METHODS}
    return {a: {b: float(jaccard(masks[a], masks[b]).mean()) for b in tam.TEXTURE_METHODS} for a in tam.TEXTURE_METHODS}


def mean_scores(pixels01: torch.Tensor, patch: int) -> dict[str, dict[str, float]]:
    """Per measure: mean, sd and median over images of each image's mean patch score."""
    out = {}
    for m in tam.TEXTURE_METHODS:
        per_image = tam.texture_scores(pixels01, patch, m).mean(1).double()
        out[m] = {
            "mean": float(per_image.mean()),
            "sd": float(per_image.std()) if per_image.numel() > 1 else 0.0,
            "median": float(per_image.median()),
        }
    return out


def compute_stats(real: list[Path], gen: list[Path], size: int, patch: int, ratio: float) -> dict:
    """Agreement (resize policy) and mean texture scores (resize and native-crop policies)."""
    n = (size // patch) ** 2
    stats: dict = {
        "n_real": len(real),
        "n_generated": len(gen),
        "size": size,
        "patch": patch,
        "ratio": ratio,
        "masked_per_image": tam.num_masked(n, ratio),
        "num_patches": n,
        "random_jaccard": random_jaccard(n, ratio),
        "policies": {},
    }
    for name, resize in (("resize", True), ("crop", False)):
        policy = PreprocessPolicy(size=size, resize=resize)
        r, g = load_pixels(real, policy), load_pixels(gen, policy)
        stats["policies"][name] = {
            "agreement": {
                "real": measure_agreement(r, patch, ratio),
                "generated": measure_agreement(g, patch, ratio),
            },
            "scores": {"real": mean_scores(r, patch), "generated": mean_scores(g, patch)},
        }
    return stats


def format_stats(stats: dict) -> str:
    """Markdown tables of :func:`compute_stats` (what docs/tam.md quotes)."""
    methods = tam.TEXTURE_METHODS
    lines = [
        f"{stats['n_real']} real, {stats['n_generated']} generated; {stats['size']} px input, "
        f"{stats['patch']} px patches ({stats['num_patches']}), rho={stats['ratio']} "
        f"({stats['masked_per_image']} masked); two uniform random masks: J = {stats['random_jaccard']:.3f}",
    ]
    for policy, block in stats["policies"].items():
        lines += ["", f"### policy: {policy}", "", "Jaccard of rho masks, real / generated", ""]
        lines += ["| | " + " | ".join(methods) + " |", "|---" * (len(methods) + 1) + "|"]
        agr = block["agreement"]
        for a in methods:
            cells = [f"{agr['real'][a][b]:.2f} / {agr['generated'][a][b]:.2f}" for b in methods]
            lines.append(f"| {a} | " + " | ".join(cells) + " |")
        lines += ["", "mean patch score per image: mean (sd), median", ""]
        lines += ["| measure | real | generated | generated / real (means) |", "|---|---|---|---|"]
        sc = block["scores"]
        for m in methods:
            r, g = sc["real"][m], sc["generated"][m]
            ratio = g["mean"] / r["mean"] if r["mean"] else float("nan")
            lines.append(
                f"| {m} | {r['mean']:.4g} ({r['sd']:.2g}), {r['median']:.4g} | "
                f"{g['mean']:.4g} ({g['sd']:.2g}), {g['median']:.4g} | {ratio:.2f} |"
            )
    return "\n".join(lines)


# ---- figures ----------------------------------------------------------------------------------


def grey_out(img01: np.ndarray, mask_grid: np.ndarray, patch: int, keep: float = 0.3) -> np.ndarray:
    """(S, S, 3) in [0, 1], (G, G) bool -> copy with masked patches faded to grey (``keep`` of the image left)."""
    up = np.kron(mask_grid.astype(np.float32), np.ones((patch, patch), np.float32))[..., None]
    return img01 * (1 - up * (1 - keep)) + GREY * up * (1 - keep)


def outline(ax, mask_grid: np.ndarray, patch: int, color: str = "#00e5ff") -> None:
    """Draw the boundary of the masked region (patch edges) on an image axis."""
    g = mask_grid.shape[0]
    segs = []
    for r in range(g):
        for c in range(g):
            if not mask_grid[r, c]:
                continue
            x0, y0 = c * patch - 0.5, r * patch - 0.5
            if r == 0 or not mask_grid[r - 1, c]:
                segs.append([(x0, y0), (x0 + patch, y0)])
            if r == g - 1 or not mask_grid[r + 1, c]:
                segs.append([(x0, y0 + patch), (x0 + patch, y0 + patch)])
            if c == 0 or not mask_grid[r, c - 1]:
                segs.append([(x0, y0), (x0, y0 + patch)])
            if c == g - 1 or not mask_grid[r, c + 1]:
                segs.append([(x0 + patch, y0), (x0 + patch, y0 + patch)])
    from matplotlib.collections import LineCollection

    ax.add_collection(LineCollection(segs, colors=color, linewidths=1.0))


def show_masked(ax, img01: np.ndarray, mask_grid: np.ndarray, patch: int, title: str) -> None:
    ax.imshow(grey_out(img01, mask_grid, patch), interpolation="nearest")
    outline(ax, mask_grid, patch)
    ax.set_title(title, fontsize=8)
    ax.set_xticks([])
    ax.set_yticks([])


def short_name(path: Path, limit: int = 28) -> str:
    stem = path.stem
    return stem if len(stem) <= limit else stem[: limit - 1] + "…"


def save_png(fig, path: Path, dpi: int) -> int:
    """Save ``fig`` as PNG without run-dependent metadata; quantise to 256 colours if over budget."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, metadata={"Software": None})
    plt.close(fig)
    data = buf.getvalue()
    if len(data) > MAX_PNG_BYTES:
        # photos compress poorly as 24-bit PNG; an adaptive palette keeps them readable at ~1/3 the size
        with Image.open(io.BytesIO(data)) as im:
            q = im.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
            out = io.BytesIO()
            q.save(out, format="PNG", optimize=True)
            data = out.getvalue()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return len(data)


def fig_masks(real: list[Path], gen: list[Path], policy: PreprocessPolicy, patch: int, ratio: float, texture: str):
    """Figure 1: rows real / generated, each image with its TAM mask greyed out and outlined."""
    cols = max(len(real), len(gen))
    fig, axes = plt.subplots(2, cols, figsize=(2.3 * cols, 5.2), squeeze=False)
    for row, (label, paths) in enumerate((("real", real), ("generated", gen))):
        pix = load_pixels(paths, policy) if paths else torch.zeros(0, 3, policy.size, policy.size)
        g = policy.size // patch
        masks = tam_mask(pix, patch, texture, ratio).view(-1, g, g).numpy() if len(paths) else []
        for col in range(cols):
            ax = axes[row, col]
            if col >= len(paths):
                ax.axis("off")
                continue
            img = pix[col].permute(1, 2, 0).numpy()
            show_masked(ax, img, masks[col], patch, f"{label}: {short_name(paths[col], 24)}")
    n = (policy.size // patch) ** 2
    fig.suptitle(
        f"TAM masks, {texture}, rho={ratio}: the {tam.num_masked(n, ratio)} most textured of {n} "
        f"{patch} px patches greyed out (outlined)",
        fontsize=9,
    )
    fig.tight_layout()
    return fig


def rank01(scores: np.ndarray) -> np.ndarray:
    """Per-image percentile rank in [0, 1] (ties broken by index, as select_masked does)."""
    order = np.argsort(-scores, kind="stable")
    ranks = np.empty(len(scores))
    ranks[order] = np.arange(len(scores))[::-1]
    return ranks / max(len(scores) - 1, 1)


def fig_measures(path: Path, policy: PreprocessPolicy, patch: int, ratio: float):
    """Figure 2: the image, then each texture measure as a rank heat map with its rho mask outlined."""
    pix = load_pixels([path], policy)
    g = policy.size // patch
    fig, axes = plt.subplots(1, 5, figsize=(13, 3.3), layout="constrained")
    axes[0].imshow(pix[0].permute(1, 2, 0).numpy())
    axes[0].set_title(f"input: {short_name(path)}", fontsize=8)
    im = None
    for ax, m in zip(axes[1:], tam.TEXTURE_METHODS, strict=True):
        s = tam.texture_scores(pix, patch, m)[0].numpy()
        mask = tam_mask(pix, patch, m, ratio)[0].view(g, g).numpy()
        # imshow of the G x G grid scaled to pixel coordinates so the outline lines up
        im = ax.imshow(
            rank01(s).reshape(g, g),
            cmap="magma",
            vmin=0,
            vmax=1,
            extent=(-0.5, policy.size - 0.5, policy.size - 0.5, -0.5),
            interpolation="nearest",
        )
        outline(ax, mask, patch, color="#00ff66")
        ax.set_title(f"{m}\nraw {s.min():.3g} .. {np.median(s):.3g} .. {s.max():.3g}", fontsize=8)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.colorbar(im, ax=axes[1:].tolist(), fraction=0.015, pad=0.01).set_label(
        "rank in image (1 = most textured)", fontsize=8
    )
    fig.suptitle(
        f"Texture measures per {patch} px patch (luma, inside each patch); outlined: masked at rho={ratio}; "
        "raw = min .. median .. max",
        fontsize=9,
    )
    return fig


def fig_strategies(path: Path, policy: PreprocessPolicy, patch: int, texture: str, seed: int):
    """Figure 3: rows tam / random / inverse, columns rho 0.25 / 0.5 / 0.75."""
    pix = load_pixels([path], policy)
    g = policy.size // patch
    img = pix[0].permute(1, 2, 0).numpy()
    scores = tam.texture_scores(pix, patch, texture)
    fig, axes = plt.subplots(3, 3, figsize=(7.2, 7.8))
    for r, strategy in enumerate(STRATEGIES):
        for c, ratio in enumerate(RATIOS):
            gen = torch.Generator().manual_seed(seed)
            masked, _ = tam.select_masked(scores, ratio, strategy, generator=gen)
            mask = tam.mask_to_grid(masked, g * g)[0].view(g, g).numpy()
            show_masked(axes[r, c], img, mask, patch, f"{strategy}, rho={ratio} ({masked.shape[1]} masked)")
    fig.suptitle(f"{short_name(path, 40)}: strategies x ratios ({texture})", fontsize=9)
    fig.tight_layout()
    return fig


# ---- entry point ------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--real", type=Path, default=DEFAULT_REAL, help="folder of real images")
    p.add_argument("--gen", type=Path, default=DEFAULT_GEN, help="folder of generated images")
    p.add_argument("--out", type=Path, default=REPO / "docs" / "img", help="where the PNGs go")
    p.add_argument("--n-real", type=int, default=200, help="real images in the statistics (seeded sample)")
    p.add_argument("--n-gen", type=int, default=0, help="generated images in the statistics (0 = all)")
    p.add_argument("--n-show", type=int, default=4, help="images per row in tam_masks.png")
    p.add_argument("--example", type=Path, default=None, help=f"image of figures 2-3 (default {DEFAULT_EXAMPLE})")
    p.add_argument("--size", type=int, default=224, help="input side in pixels")
    p.add_argument("--patch", type=int, default=16, help="patch size: 16 for B/16, 14 for L/14")
    p.add_argument("--ratio", type=float, default=0.5, help="rho of figure 1 and the statistics")
    p.add_argument("--texture", default="gradient", choices=tam.TEXTURE_METHODS, help="measure of figures 1, 3")
    p.add_argument("--seed", type=int, default=0, help="seed of the real sample and of the random masks")
    p.add_argument("--dpi", type=int, default=100)
    p.add_argument("--no-stats", action="store_true", help="figures only")
    args = p.parse_args(argv)
    if args.size % args.patch:
        p.error(f"--size {args.size} is not a multiple of --patch {args.patch}")
    return args


def main(argv: Sequence[str] | None = None) -> dict:
    """Write the figures, print the statistics; returns the JSON summary as a dict."""
    args = parse_args(argv)
    real_all, gen_all = list_images(args.real), list_images(args.gen)
    policy = PreprocessPolicy(size=args.size, resize=True)
    example = args.example or (args.real / DEFAULT_EXAMPLE)
    if not example.is_file():
        example = evenly_spaced(real_all, args.n_show)[0]

    written = {}
    figs = {
        "tam_masks.png": lambda: fig_masks(
            evenly_spaced(real_all, args.n_show),
            evenly_spaced(gen_all, args.n_show),
            policy,
            args.patch,
            args.ratio,
            args.texture,
        ),
        "tam_measures.png": lambda: fig_measures(example, policy, args.patch, args.ratio),
        "tam_strategies.png": lambda: fig_strategies(example, policy, args.patch, args.texture, args.seed),
    }
    for name, make in figs.items():
        path = args.out / name
        written[name] = save_png(make(), path, args.dpi)
        print(f"wrote {path} ({written[name] / 1000:.0f} KB)", file=sys.stderr)

    summary: dict = {"figures": written, "example": example.name}
    if not args.no_stats:
        rng = np.random.default_rng(args.seed)
        n_real = min(args.n_real, len(real_all))
        real = [real_all[i] for i in sorted(rng.choice(len(real_all), n_real, replace=False))]
        gen = gen_all if args.n_gen <= 0 else gen_all[: args.n_gen]
        stats = compute_stats(real, gen, args.size, args.patch, args.ratio)
        print(format_stats(stats))
        summary["stats"] = stats
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
