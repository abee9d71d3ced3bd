"""Why did the detector say that? Texture map, TAM mask and occlusion evidence for one image.

Evidence is measured by *occlusion through token dropping*: the patch grid is split into
g x g groups, and for each group the detector runs again on every patch token except that
group's (the same exact masked forward TAM uses in training). A group's evidence is
``logit(full) - logit(without the group)``: positive when the group pushed the score towards
"generated", negative when it pushed towards "real". See docs/explain.md for the method and
its limits.

Pure functions compute (``occlusion_evidence``, ``texture_map``, ``group_index``); I/O stays at
the edges (``explain_image`` decodes through the Detector, ``render`` writes a PNG).
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch

from mpft import tam
from mpft.detector import Detector, ImageInput
from mpft.errors import ConfigError
from mpft.model import DetectorModel
from mpft.views import combine_logits

log = logging.getLogger(__name__)

__all__ = [
    "EXPLAIN_METHODS",
    "FIGSIZE",
    "Explanation",
    "default_group",
    "explain_image",
    "group_index",
    "occlusion_evidence",
    "render",
    "texture_map",
]

EXPLAIN_METHODS = ("occlusion",)
#: Figure size in inches; the PNG is ``FIGSIZE * dpi`` pixels (no tight bbox, so sizes are predictable).
FIGSIZE = (15.0, 5.6)
DEFAULT_DPI = 100
# about 7x7 groups whatever the grid: 49 forwards for B/16 (14x14, g=2), 64 for L/14 (16x16, g=2)
_TARGET_GROUPS_PER_SIDE = 7


@dataclass(frozen=True)
class Explanation:
    """One image's explanation. Grids are row-major on the backbone's G x G patch grid.

    Attributes:
        source: file path or ``<bytes N>`` / ``<image N>``.
        probability: P(generated), exactly what ``Detector.predict`` returns for this image.
        logit: the fp32 logit the evidence is relative to.
        verdict, threshold: the detector's decision for ``probability``.
        image: (S, S, 3) uint8, the model input after eval preprocessing.
        texture: (G, G) float TAM texture scores (``texture_method``).
        tam_masked: (G, G) bool, the patches TAM would hide at ``mask_ratio``.
        evidence: (G, G) float, each patch carries its group's logit drop when the group is removed.
        group: side g of the occlusion groups, in patches.
        patch_size: pixels per patch side.
        texture_method, mask_ratio: TAM settings used for ``texture`` and ``tam_masked``.
        model_id: the detector's identity.
        notes: decoding remarks and any fallback taken (e.g. a checkpoint trained without TAM).
        view_logits: the logit of every view the detector scored (``Detector.views``), in view order;
            ``probability`` combines them with the detector's rule.
        view_index: the view shown and explained: the one with the highest logit, i.e. the view that
            pushed the score most towards "generated".
        views: the detector's views spec (e.g. ``grid:2``).
    """

    source: str
    probability: float
    logit: float
    verdict: str
    threshold: float
    image: np.ndarray
    texture: np.ndarray
    tam_masked: np.ndarray
    evidence: np.ndarray
    group: int
    patch_size: int
    texture_method: str
    mask_ratio: float
    model_id: str
    method: str = "occlusion"
    notes: tuple[str, ...] = field(default_factory=tuple)
    view_logits: tuple[float, ...] = ()
    view_index: int = 0
    views: str = "center"

    @property
    def grid(self) -> int:
        return int(self.texture.shape[0])

    @property
    def masked_indices(self) -> list[int]:
        """Row-major indices of the patches TAM would hide."""
        return [int(i) for i in np.flatnonzero(self.tam_masked.reshape(-1))]

    def to_dict(self) -> dict:
        """JSON-friendly numbers (no pixels): what ``mpft explain --json`` prints."""
        return {
            "source": self.source,
            "model_id": self.model_id,
            "probability": self.probability,
            "logit": self.logit,
            "verdict": self.verdict,
            "threshold": self.threshold,
            "image_size": int(self.image.shape[0]),
            "patch_size": self.patch_size,
            "grid": self.grid,
            "method": self.method,
            "group": self.group,
            "texture_method": self.texture_method,
            "mask_ratio": self.mask_ratio,
            "texture": np.round(self.texture.astype(np.float64), 6).tolist(),
            "evidence": np.round(self.evidence.astype(np.float64), 6).tolist(),
            "masked_indices": self.masked_indices,
            "notes": list(self.notes),
            "views": self.views,
            "view_logits": [round(float(v), 6) for v in self.view_logits],
            "view_index": self.view_index,
        }


# ---- pure computations -------------------------------------------------------------------------
def default_group(patch_grid: int) -> int:
    """Group side giving about 7x7 groups: 2 for a 14x14 grid (49 groups), 1 for the tiny 4x4 grid."""
    return max(1, round(patch_grid / _TARGET_GROUPS_PER_SIDE))


def group_index(patch_grid: int, group: int) -> np.ndarray:
    """(G, G) int: which occlusion group each patch belongs to.

    Groups are g x g blocks numbered row-major; when g does not divide G the last row and
    column of groups are smaller (ceil(G/g)^2 groups in all).
    """
    if patch_grid < 1:
        raise ConfigError(f"patch grid must be >= 1, got {patch_grid}")
    if not 1 <= group <= patch_grid:
        raise ConfigError(f"--group must be between 1 and the patch grid side {patch_grid}, got {group}")
    per_side = math.ceil(patch_grid / group)
    rows = np.arange(patch_grid) // group
    return rows[:, None] * per_side + rows[None, :]


def occlusion_evidence(
    model: DetectorModel,
    pixels: torch.Tensor,
    patch_grid: int,
    group: int,
    chunk: int = 16,
) -> np.ndarray:
    """Logit drop when each g x g group of patch tokens is removed.

    pixels: (1, 3, S, S) uint8 (or [0, 1] float) model input; ``model`` should be in eval mode.
    Returns (G, G) float64: every patch carries its group's ``logit(full) - logit(without group)``.

    Each removal is the exact masked forward (``model(pixels, keep=...)``): the tokens are
    absent from attention, not replaced by a fill value. Removals are batched ``chunk`` at a
    time; groups of different sizes (g not dividing G) go in separate batches because ``keep``
    must be rectangular. Runs in fp32 on the model's device (no autocast: the differences can
    be small and bf16 would swamp them). Cost: 1 + ceil(G/g)^2 image forwards.
    """
    return _occlusion(model, pixels, patch_grid, group, chunk)[1]


@torch.inference_mode()
def _occlusion(
    model: DetectorModel, pixels: torch.Tensor, patch_grid: int, group: int, chunk: int
) -> tuple[float, np.ndarray]:
    """(full logit, (G, G) evidence); see :func:`occlusion_evidence`."""
    if pixels.dim() != 4 or pixels.shape[0] != 1 or pixels.shape[1] != 3:
        raise ConfigError(f"pixels must have shape (1, 3, S, S), got {tuple(pixels.shape)}")
    if chunk < 1:
        raise ConfigError(f"chunk must be >= 1, got {chunk}")
    gidx = group_index(patch_grid, group)
    flat = torch.from_numpy(gidx.reshape(-1))
    n = flat.numel()
    n_groups = int(flat.max()) + 1
    if n_groups == 1:
        # removing every patch token would leave only the prefix tokens (CLS, registers; none for SigLIP):
        # not an occlusion of part of the image
        raise ConfigError(
            f"--group {group} covers the whole {patch_grid}x{patch_grid} grid; use a smaller group"
        )
    device = next(model.parameters()).device
    x = pixels.to(device)
    full = float(model(x).float()[0])

    drops = np.zeros(n_groups, dtype=np.float64)
    all_idx = torch.arange(n)
    by_size: dict[int, list[int]] = {}
    for k in range(n_groups):
        by_size.setdefault(int((flat == k).sum()), []).append(k)
    for ks in by_size.values():
        for start in range(0, len(ks), chunk):
            part = ks[start : start + chunk]
            keep = torch.stack([all_idx[flat != k] for k in part]).to(device)  # (B, N - group size)
            logits = model(x.expand(len(part), -1, -1, -1), keep=keep).float().cpu().numpy()
            drops[part] = full - logits.astype(np.float64)
    return full, drops[gidx]


def texture_map(pixels: torch.Tensor, patch_size: int, mask: tam.MaskConfig) -> tuple[np.ndarray, np.ndarray]:
    """TAM's view of an image. pixels: (1, 3, S, S) uint8 or [0, 1] float.

    Returns ``(texture, masked)``: (G, G) float scores with ``mask.texture`` and (G, G) bool, the
    ``round(mask.ratio * N)`` most textured patches (temperature 0: the deterministic choice).
    """
    x = pixels.float().div(255.0) if pixels.dtype == torch.uint8 else pixels.float()
    scores = tam.texture_scores(x.cpu(), patch_size, mask.texture)  # (1, N)
    masked, _ = tam.select_masked(scores, mask.ratio, "tam")
    n = scores.shape[1]
    g = math.isqrt(n)
    grid = tam.mask_to_grid(masked, n)
    return scores[0].view(g, g).numpy().astype(np.float64), grid[0].view(g, g).numpy()


def _display_mask(config_mask: dict) -> tuple[tam.MaskConfig, list[str]]:
    """The mask settings to show: the checkpoint's, unless it did not train with TAM."""
    notes: list[str] = []
    mask = tam.MaskConfig.from_dict(config_mask)
    if mask.strategy != "tam" or mask.ratio <= 0:
        default = tam.MaskConfig()
        notes.append(
            f"checkpoint trained with mask strategy {mask.strategy!r} at ratio {mask.ratio}; the TAM panel "
            f"shows the default TAM ({default.texture}, ratio {default.ratio}) instead"
        )
        mask = tam.MaskConfig(texture=mask.texture, ratio=default.ratio)
    elif mask.temperature > 0:
        notes.append(
            f"checkpoint samples TAM masks (temperature {mask.temperature}); shown is the deterministic top-k"
        )
    return mask, notes


# ---- I/O edges ---------------------------------------------------------------------------------
def explain_image(
    detector: Detector, image: ImageInput, *, group: int | None = None, chunk: int = 16
) -> Explanation:
    """Decode one image, score it and compute its texture map, TAM mask and occlusion evidence.

    Raises ImageDecodeError (a DataError) when the input is not a readable image, ConfigError on
    a bad ``group``. Cost: 1 + ceil(G/g)^2 image forwards (50 for B/16 with the default g=2).
    """
    enc = detector.model.encoder
    dec, views = detector.prepare(image)
    if views.shape[-1] != enc.image_size:
        raise ConfigError(
            f"the checkpoint's preprocessing gives {views.shape[-1]} px inputs but {enc.spec} expects "
            f"{enc.image_size} px"
        )
    scorer = detector.scorer(batch_size=chunk)
    # the same numbers predict gives: every view through the one scorer, combined by the detector's rule
    view_logits = scorer.logits(views)
    prob = float(torch.sigmoid(combine_logits(view_logits, [views.shape[0]], detector.views.combine))[0])
    k = int(view_logits.argmax())
    pixels = views[k]
    g = default_group(enc.grid) if group is None else group
    batch = pixels.unsqueeze(0)
    mask, notes = _display_mask(detector.config.mask)
    texture, masked = texture_map(batch, enc.patch_size, mask)
    logit, evidence = _occlusion(detector.model, batch, enc.grid, g, chunk)
    if views.shape[0] > 1:
        notes.append(f"view {k + 1} of {views.shape[0]} ({detector.views.spec}) drove the score; it is shown")
    return Explanation(
        source=dec.source,
        probability=prob,
        logit=logit,
        verdict=detector.verdict(prob),
        threshold=detector.threshold,
        image=pixels.permute(1, 2, 0).numpy().copy(),
        texture=texture,
        tam_masked=masked,
        evidence=evidence,
        group=g,
        patch_size=enc.patch_size,
        texture_method=mask.texture,
        mask_ratio=mask.ratio,
        model_id=detector.model_id,
        notes=tuple(dec.notes) + tuple(notes),
        view_logits=tuple(float(v) for v in view_logits),
        view_index=k,
        views=detector.views.spec,
    )


def _outline_cells(ax, cells: np.ndarray, patch: int, color: str, lw: float) -> None:
    from matplotlib.patches import Rectangle

    for r, c in zip(*np.nonzero(cells), strict=True):
        corner = (c * patch - 0.5, r * patch - 0.5)
        ax.add_patch(Rectangle(corner, patch, patch, fill=False, edgecolor=color, linewidth=lw))


def render(expl: Explanation, path_or_file: str | os.PathLike | BinaryIO, *, dpi: int = DEFAULT_DPI) -> None:
    """Write the three-panel PNG (``FIGSIZE * dpi`` pixels) to a path or a binary file object.

    Panels: the model input; the TAM texture heatmap with the masked patches outlined; the
    occlusion evidence over the image (red = pushed towards generated, blue = towards real).
    Uses the object-oriented Agg API (no pyplot state), so it is safe in a server thread.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    s = expl.image.shape[0]
    p = expl.patch_size
    extent = (-0.5, s - 0.5, s - 0.5, -0.5)  # grids drawn in pixel coordinates over the image
    fig = Figure(figsize=FIGSIZE, dpi=dpi, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 3)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])

    ax = axes[0]
    ax.imshow(expl.image, interpolation="nearest")
    n_views = len(expl.view_logits)
    which = f"view {expl.view_index + 1}/{n_views} ({expl.views}) drove the score\n" if n_views > 1 else ""
    ax.set_title(f"model input: {which}{s}x{s}, {expl.grid}x{expl.grid} patches of {p} px")

    ax = axes[1]
    im = ax.imshow(expl.texture, cmap="magma", interpolation="nearest", extent=extent)
    _outline_cells(ax, expl.tam_masked, p, "cyan", 1.6)
    n_masked = int(expl.tam_masked.sum())
    ax.set_title(f"TAM texture map; outlined: {n_masked} masked (ratio {expl.mask_ratio:g})")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02, label=f"texture score ({expl.texture_method})")

    ax = axes[2]
    gray = expl.image.astype(np.float32).mean(axis=2)
    ax.imshow(gray, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
    lim = float(np.abs(expl.evidence).max()) or 1e-6
    im = ax.imshow(
        expl.evidence, cmap="RdBu_r", vmin=-lim, vmax=lim, alpha=0.6, interpolation="nearest", extent=extent
    )
    ax.set_xlim(extent[0], extent[1])
    ax.set_ylim(extent[2], extent[3])
    per_side = math.ceil(expl.grid / expl.group)
    ax.set_title(f"occlusion evidence ({per_side}x{per_side} groups of {expl.group}x{expl.group} patches)")
    cbar = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02, label="logit(full) - logit(group removed)")
    cbar.solids.set_alpha(1.0)  # the overlay is translucent; its scale should not be

    name = Path(expl.source).name if not expl.source.startswith("<") else expl.source
    fig.suptitle(
        f"P(generated) = {expl.probability:.3f}  ->  {expl.verdict.upper()}  (threshold {expl.threshold:.2f})"
        f"   |   {name}   |   {expl.model_id}",
        fontsize=13,
    )
    if isinstance(path_or_file, (str, os.PathLike)):
        Path(path_or_file).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path_or_file, format="png", dpi=dpi)
