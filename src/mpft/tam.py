"""Texture-Aware Masking (TAM): per-patch texture scores and the choice of patches to hide.

Pure tensor functions, no I/O. Patches are numbered row-major on the backbone's grid
(16x16 px for B/16, 14x14 for L/14), matching the order of the ViT's patch tokens.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from mpft.config import from_dict
from mpft.errors import ConfigError

TEXTURE_METHODS = ("gradient", "variance", "laplacian", "diff")
MASK_STRATEGIES = ("tam", "random", "inverse", "none")
MASK_APPLICATIONS = ("drop", "fill")

# ITU-R BT.601 luma weights
_LUMA = (0.299, 0.587, 0.114)


@dataclass
class MaskConfig:
    """How training images are masked. ``ratio`` is rho, the fraction of patches hidden."""

    strategy: str = "tam"
    ratio: float = 0.25  # measured best of 0.25/0.5/0.75 out of distribution (docs/benchmarks.md)
    texture: str = "gradient"
    temperature: float = 0.0
    apply: str = "drop"

    def __post_init__(self) -> None:
        if self.strategy not in MASK_STRATEGIES:
            raise ConfigError(f"mask strategy {self.strategy!r} is not one of {MASK_STRATEGIES}")
        if self.texture not in TEXTURE_METHODS:
            raise ConfigError(f"texture method {self.texture!r} is not one of {TEXTURE_METHODS}")
        if self.apply not in MASK_APPLICATIONS:
            raise ConfigError(f"mask application {self.apply!r} is not one of {MASK_APPLICATIONS}")
        if not 0.0 <= self.ratio < 1.0:
            raise ConfigError(f"mask ratio must be in [0, 1), got {self.ratio}")
        if self.temperature < 0:
            raise ConfigError(f"mask temperature must be >= 0, got {self.temperature}")

    @property
    def active(self) -> bool:
        return self.strategy != "none" and self.ratio > 0

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> MaskConfig:
        return from_dict(cls, d, "mask settings")


def unnormalize(pixels: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """(B, 3, H, W) normalised -> [0, 1] pixels."""
    m = torch.tensor(mean, dtype=pixels.dtype, device=pixels.device).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=pixels.dtype, device=pixels.device).view(1, 3, 1, 1)
    return pixels * s + m


def luminance(pixels01: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) in [0, 1] -> (B, 1, H, W) luma."""
    w = torch.tensor(_LUMA, dtype=pixels01.dtype, device=pixels01.device).view(1, 3, 1, 1)
    return (pixels01 * w).sum(dim=1, keepdim=True)


def _patchify(x: torch.Tensor, patch: int) -> torch.Tensor:
    """(B, 1, H, W) -> (B, N, patch, patch), N = (H/patch) * (W/patch), row-major."""
    b, _, h, w = x.shape
    if h % patch or w % patch:
        raise ConfigError(f"image size {h}x{w} is not a multiple of the patch size {patch}")
    x = x.view(b, h // patch, patch, w // patch, patch).permute(0, 1, 3, 2, 4)
    return x.reshape(b, -1, patch, patch)


def texture_scores(
    pixels: torch.Tensor,
    patch: int,
    method: str = "gradient",
    *,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> torch.Tensor:
    """Texture richness of each patch.

    pixels: (B, 3, H, W), in [0, 1], or normalised when ``mean``/``std`` are given (they are
    undone first, so scores do not depend on the normalisation constants).
    Returns (B, N) float scores, N = (H/patch)*(W/patch); higher = more textured.

    Methods (all on luma, computed inside each patch so neighbours do not leak in):
    ``gradient`` mean Sobel magnitude; ``variance`` pixel variance; ``laplacian`` mean squared
    4-neighbour Laplacian (high-pass energy); ``diff`` sum of absolute neighbour differences in
    the horizontal, vertical, diagonal and anti-diagonal directions (PatchCraft's texture richness).
    """
    if method not in TEXTURE_METHODS:
        raise ConfigError(f"texture method {method!r} is not one of {TEXTURE_METHODS}")
    if pixels.dim() != 4 or pixels.shape[1] != 3:
        raise ConfigError(f"pixels must have shape (B, 3, H, W), got {tuple(pixels.shape)}")
    x = pixels.float()
    if mean is not None or std is not None:
        if mean is None or std is None:
            raise ConfigError("give both mean and std to undo normalisation")
        x = unnormalize(x, mean, std)
    p = _patchify(luminance(x), patch)  # (B, N, P, P)
    b, n = p.shape[:2]
    if method == "variance":
        return p.reshape(b, n, -1).var(dim=-1, unbiased=False)
    if method == "diff":
        d = (
            (p[..., :, 1:] - p[..., :, :-1]).abs().sum((-1, -2))
            + (p[..., 1:, :] - p[..., :-1, :]).abs().sum((-1, -2))
            + (p[..., 1:, 1:] - p[..., :-1, :-1]).abs().sum((-1, -2))
            + (p[..., 1:, :-1] - p[..., :-1, 1:]).abs().sum((-1, -2))
        )
        return d
    flat = p.reshape(b * n, 1, patch, patch)
    padded = F.pad(flat, (1, 1, 1, 1), mode="replicate")
    if method == "gradient":
        kx = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]], device=x.device)
        k = torch.stack([kx, kx.t()]).unsqueeze(1)  # (2, 1, 3, 3)
        g = F.conv2d(padded, k)
        return g.pow(2).sum(1).sqrt().mean((-1, -2)).view(b, n)
    lap = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]], device=x.device).view(1, 1, 3, 3)
    return F.conv2d(padded, lap).pow(2).mean((-1, -2, -3)).view(b, n)


def num_masked(num_patches: int, ratio: float) -> int:
    """round(ratio * N), but always keeping at least one patch."""
    return min(int(round(ratio * num_patches)), num_patches - 1)


def select_masked(
    scores: torch.Tensor,
    ratio: float,
    strategy: str = "tam",
    *,
    temperature: float = 0.0,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Choose which patches to hide.

    scores: (B, N) texture scores. Returns ``(masked, keep)``: (B, M) and (B, N-M) long
    indices, each sorted ascending, M = round(ratio * N) (0 for ``none``).

    ``tam``: the M most textured (with ``temperature`` T > 0: M drawn without replacement with
    probabilities softmax(score / T), via the Gumbel-top-k trick, so masks vary between epochs);
    ``inverse``: the M smoothest; ``random``: uniform.
    """
    if strategy not in MASK_STRATEGIES:
        raise ConfigError(f"mask strategy {strategy!r} is not one of {MASK_STRATEGIES}")
    b, n = scores.shape
    m = 0 if strategy == "none" else num_masked(n, ratio)
    if strategy == "random":
        key = torch.rand(b, n, generator=generator, device="cpu").to(scores.device)
    elif strategy in ("tam", "inverse"):
        key = scores.float() if strategy == "tam" else -scores.float()
        if temperature > 0:
            # scale by the per-image spread so T is unit-free across texture methods
            spread = key.std(dim=1, keepdim=True).clamp_min(1e-12)
            u = torch.rand(b, n, generator=generator, device="cpu").to(scores.device).clamp(1e-9, 1 - 1e-9)
            key = key / (spread * temperature) - torch.log(-torch.log(u))
    else:
        key = torch.zeros(b, n, device=scores.device)
    order = torch.argsort(key, dim=1, descending=True, stable=True)
    masked = order[:, :m].sort(dim=1).values
    keep = order[:, m:].sort(dim=1).values
    return masked, keep


def mask_to_grid(masked: torch.Tensor, num_patches: int) -> torch.Tensor:
    """(B, M) indices -> (B, N) bool, True where a patch is masked."""
    grid = torch.zeros(masked.shape[0], num_patches, dtype=torch.bool, device=masked.device)
    return grid.scatter_(1, masked, True)


def fill_patches(
    pixels: torch.Tensor, masked: torch.Tensor, patch: int, value: float | Sequence[float] = 0.0
) -> torch.Tensor:
    """Set the masked patches of (B, C, H, W) ``pixels`` to ``value``: one number, or one per channel.

    0 is the mean of normalised pixels; on [0, 1] pixels pass the backbone's mean per channel, which
    normalises to exactly 0.
    """
    b, c, h, w = pixels.shape
    g = mask_to_grid(masked, (h // patch) * (w // patch)).view(b, 1, h // patch, w // patch)
    up = g.repeat_interleave(patch, dim=2).repeat_interleave(patch, dim=3)
    if isinstance(value, (int, float)):
        return pixels.masked_fill(up, value)
    fill = torch.tensor(tuple(value), dtype=pixels.dtype, device=pixels.device).view(1, c, 1, 1)
    return torch.where(up, fill, pixels)


def apply_mask(
    pixels: torch.Tensor,
    mask: MaskConfig | None,
    patch: int,
    *,
    fill: Sequence[float],
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Mask a training batch the way ``mask`` says, before it reaches the model.

    pixels: (B, 3, S, S) uint8 or float in [0, 1]; patch: the backbone's patch size; fill: the
    backbone's per-channel mean (what ``apply="fill"`` paints, so filled patches normalise to 0).
    Returns ``(pixels01, keep)``: (B, 3, S, S) float pixels (patches filled for ``fill``) and
    (B, K) indices of the patch tokens the encoder keeps (``drop``), or None when nothing is dropped.
    The model's forward takes both: ``model(pixels01, keep=keep)``.
    """
    if pixels.dtype == torch.uint8:
        pixels = pixels.float().div_(255.0)
    if mask is None or not mask.active:
        return pixels, None
    scores = texture_scores(pixels, patch, mask.texture)
    masked, keep = select_masked(scores, mask.ratio, mask.strategy, temperature=mask.temperature, generator=generator)
    if mask.apply == "fill":
        return fill_patches(pixels, masked, patch, fill), None
    return pixels, keep
