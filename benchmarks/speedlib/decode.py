"""Decode + preprocess cost per image, with and without PIL's JPEG draft mode."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np


def decode_times(paths: list[Path], size: int, *, draft: bool) -> dict:
    """ms per image of decode + resize-policy preprocessing, as ``mpft predict`` runs it.

    ``draft``: reduced-scale JPEG decoding (``decode_image(draft_min_side=draft_side(policy))``,
    what a resizing detector uses); the model inputs are compared with full-size decoding's.
    """
    from mpft.data.images import decode_image
    from mpft.data.transforms import PreprocessPolicy, draft_side
    from mpft.pipeline import view_pixels
    from mpft.views import ViewConfig

    policy, center = PreprocessPolicy(size=size, resize=True), ViewConfig()
    side = draft_side(policy) if draft else None

    def view(p: Path, draft_min_side: int | None) -> np.ndarray:
        return view_pixels(decode_image(p, draft_min_side=draft_min_side).image, policy, center).numpy()

    t0 = time.perf_counter()
    inputs = [view(p, side) for p in paths]
    out = {"ms_per_image": 1000 * (time.perf_counter() - t0) / len(paths), "images": len(paths),
           "draft_min_side": side}
    if draft:
        diffs = [np.abs(x.astype(np.int16) - view(p, None).astype(np.int16))
                 for p, x in zip(paths, inputs, strict=True)]
        out["input_mean_abs_diff"] = float(np.mean([d.mean() for d in diffs]))
        out["input_max_abs_diff"] = int(max(d.max() for d in diffs))
    return out
