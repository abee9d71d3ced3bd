"""mpft: detect AI-generated images with MPFT (masked fine-tuning of CLIP) and Texture-Aware Masking.

Public API (everything else is internal and may change):

- :class:`Detector`: load a trained detector and score images.
- :func:`load_backbone`: build a CLIP ViT image encoder from a spec string.
- :func:`train`: fine-tune a detector.
- :func:`evaluate`: per-generator metrics of a detector on labelled folders.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["Detector", "load_backbone", "train", "evaluate", "__version__"]


def __getattr__(name: str):
    # Lazy imports keep `import mpft` and `mpft --help` fast (torch/transformers load on first use).
    if name == "Detector":
        from mpft.detector import Detector

        return Detector
    if name == "load_backbone":
        from mpft.backbones import load_backbone

        return load_backbone
    if name == "train":
        from mpft.training import train

        return train
    if name == "evaluate":
        from mpft.evaluation import evaluate

        return evaluate
    raise AttributeError(f"module 'mpft' has no attribute {name!r}")
