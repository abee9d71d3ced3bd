"""The MetaCLIP 2 family: CLIP's layout under other transformers class names."""

from __future__ import annotations

from mpft.backbones.encoder import ClipEncoder


class MetaClip2Encoder(ClipEncoder):
    """A MetaCLIP 2 image tower: the CLIP adapter with MetaCLIP 2's tower classes."""

    family = "metaclip2"
    @classmethod
    def towers(cls) -> tuple[type, type]:
        from transformers import MetaClip2VisionModel, MetaClip2VisionModelWithProjection

        return MetaClip2VisionModelWithProjection, MetaClip2VisionModel
