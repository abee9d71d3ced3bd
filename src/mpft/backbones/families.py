"""Backbone families: which adapter serves which transformers ``model_type``, and known presets.

Adding a family is one adapter module (a :class:`~mpft.backbones.base.VisionBackbone` subclass with
``load_pretrained``) and one entry in :data:`FAMILIES` (docs/architecture.md walks through it).
``hf:NAME_OR_DIR`` reads the checkpoint's ``config.json``, finds its family here by
``model_type``, and builds the adapter with the contract its image processor states.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from mpft.errors import BackboneError


@dataclass(frozen=True)
class Family:
    """A registered family.

    name: short name (``mpft backbone list``); adapter: ``"module:Class"`` of the adapter,
    imported on first use (each family pulls its own transformers classes); model_types: the
    ``model_type`` values of its transformers configs (full model and vision tower); presets: hub
    ids known to load (``hf:<preset>``).
    """

    name: str
    description: str
    adapter: str
    model_types: tuple[str, ...]
    presets: tuple[str, ...] = ()

    def adapter_class(self) -> type:
        module, _, cls = self.adapter.partition(":")
        return getattr(importlib.import_module(module), cls)


FAMILIES: tuple[Family, ...] = (
    Family(
        "clip",
        "OpenAI CLIP ViT image towers (CLS, projection)",
        "mpft.backbones.encoder:ClipEncoder",
        ("clip", "clip_vision_model"),
        ("openai/clip-vit-base-patch16", "openai/clip-vit-large-patch14", "openai/clip-vit-large-patch14-336"),
    ),
    Family(
        "metaclip2",
        "MetaCLIP 2 image towers (CLIP layout)",
        "mpft.backbones.metaclip2:MetaClip2Encoder",
        ("metaclip_2", "metaclip_2_vision_model"),
        ("facebook/metaclip-2-worldwide-huge-quickgelu",),
    ),
    Family(
        "siglip",
        "SigLIP and fixed-resolution SigLIP 2 (no CLS; attention-pooling head)",
        "mpft.backbones.siglip:SiglipEncoder",
        ("siglip", "siglip_vision_model"),
        ("google/siglip2-base-patch16-224", "google/siglip2-so400m-patch14-384", "google/siglip-base-patch16-224"),
    ),
    Family(
        "siglip2",
        "SigLIP 2 NaFlex (no CLS; run on its native square patch grid)",
        "mpft.backbones.siglip2:Siglip2Encoder",
        ("siglip2", "siglip2_vision_model"),
        ("google/siglip2-base-patch16-naflex", "google/siglip2-so400m-patch16-naflex"),
    ),
    Family(
        "dinov2",
        "DINOv2, with or without registers (CLS + registers; interpolated positions)",
        "mpft.backbones.dinov2:Dinov2Encoder",
        ("dinov2", "dinov2_with_registers"),
        ("facebook/dinov2-base", "facebook/dinov2-large", "facebook/dinov2-with-registers-base"),
    ),
    Family(
        "dinov3",
        "DINOv3 ViT (CLS + registers; rotary positions)",
        "mpft.backbones.dinov3:Dinov3Encoder",
        ("dinov3_vit",),
        ("facebook/dinov3-vitb16-pretrain-lvd1689m", "facebook/dinov3-vitl16-pretrain-lvd1689m"),
    ),
)


def family_for(model_type: str, source: str) -> Family:
    """The family serving ``model_type``; BackboneError naming the supported types otherwise."""
    for fam in FAMILIES:
        if model_type in fam.model_types:
            return fam
    known = sorted(t for fam in FAMILIES for t in fam.model_types)
    raise BackboneError(
        f"{source} is a transformers {model_type!r} model, which mpft has no adapter for; supported model types: "
        f"{', '.join(known)}. Adding one is an adapter module and one entry in mpft.backbones.families.FAMILIES "
        "(docs/architecture.md, 'Adding a backbone family')."
    )


def family_named(name: str) -> Family:
    for fam in FAMILIES:
        if fam.name == name:
            return fam
    raise BackboneError(f"unknown backbone family {name!r}; known: {[f.name for f in FAMILIES]}")
