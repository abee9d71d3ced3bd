"""CLIP ViT image encoders from several sources, behind one wrapper (:class:`ClipEncoder`)."""

from mpft.backbones.encoder import CLIP_MEAN, CLIP_STD, ClipEncoder, EncoderOutput, InputContract, gather_tokens
from mpft.backbones.registry import (
    DEFAULT_BACKBONE,
    fetch_backbone,
    known_backbones,
    load_backbone,
    split_spec,
)

__all__ = [
    "CLIP_MEAN",
    "CLIP_STD",
    "ClipEncoder",
    "InputContract",
    "EncoderOutput",
    "gather_tokens",
    "DEFAULT_BACKBONE",
    "fetch_backbone",
    "known_backbones",
    "load_backbone",
    "split_spec",
]
