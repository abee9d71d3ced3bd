"""The SigLIP 2 NaFlex family (model type ``siglip2``), run on a fixed square grid.

NaFlex towers take pre-cut patches (a Linear patch embedding) and resize their position
embeddings to each image's patch grid. mpft feeds them a square of ``G x G`` patches, G the side
of the position-embedding grid (16 for the 256-patch checkpoints: 256 px at patch 16), so the
positions are the pretrained ones. Otherwise as SigLIP: no CLS, attention-pooling head.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from transformers import Siglip2VisionModel

from mpft.backbones.siglip import SiglipEncoder


class Siglip2Encoder(SiglipEncoder):
    """A SigLIP 2 NaFlex image tower on a fixed square patch grid."""

    family = "siglip2"
    default_interpolation = "bilinear"
    # its embeddings resize positions to any grid; mpft keeps the native one (see image_size)
    interpolates_positions = True

    @property
    def image_size(self) -> int:
        # the config has no image size: the native grid of the position embeddings sets it
        native = self.patch_size * math.isqrt(int(self.config.num_patches))
        return self._image_size if self._image_size is not None else native

    def embed_all(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) normalised -> (B, N, D): cut into patches as the NaFlex processor does
        (row-major, each patch flattened channels-last), embedded, positions resized to the grid."""
        b, c, s, _ = pixels.shape
        p, g = self.patch_size, s // self.patch_size
        patches = pixels.reshape(b, c, g, p, g, p).permute(0, 2, 4, 3, 5, 1).reshape(b, g * g, p * p * c)
        shapes = torch.tensor([[g, g]], dtype=torch.long, device=pixels.device).expand(b, -1)
        return self._embeddings(patches, shapes)

    @classmethod
    def load_pretrained(cls, name_or_dir: str) -> nn.Module:
        return Siglip2VisionModel.from_pretrained(name_or_dir, attn_implementation="sdpa")
