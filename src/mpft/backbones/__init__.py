"""Vision encoders from several families and sources, behind one interface (:class:`VisionBackbone`)."""

from mpft.backbones.base import EncoderOutput, InputContract, VisionBackbone, gather_tokens
from mpft.backbones.encoder import CLIP_MEAN, CLIP_STD, ClipEncoder
from mpft.backbones.families import FAMILIES, Family
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
    "VisionBackbone",
    "InputContract",
    "EncoderOutput",
    "gather_tokens",
    "FAMILIES",
    "Family",
    "DEFAULT_BACKBONE",
    "fetch_backbone",
    "known_backbones",
    "load_backbone",
    "split_spec",
]
