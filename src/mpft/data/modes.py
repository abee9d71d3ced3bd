"""Pillow image modes -> RGB: palettes, alpha, CMYK, 1-bit, 16-bit, 32-bit and float grayscale.

:func:`mpft.data.images.decode_image` hands every loaded image to :func:`to_rgb`; each
conversion it makes is recorded as a note, so callers can say what was done to a file.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

__all__ = ["to_rgb"]

_ALPHA_MODES = ("RGBA", "RGBa", "LA", "La", "PA")
_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")


def to_rgb(im: Image.Image, notes: list[str]) -> Image.Image:
    """Convert a loaded image of any mode to RGB, recording what was done in ``notes``.

    An RGB image without transparency is returned as it is (the same object, not a copy).
    """
    mode = im.mode
    if mode == "RGB" and "transparency" not in im.info:
        return im
    if mode == "P" or mode == "PA":
        notes.append("palette converted")
        has_alpha = mode == "PA" or "transparency" in im.info
        im = im.convert("RGBA" if has_alpha else "RGB")
        mode = im.mode
    elif "transparency" in im.info and mode in ("RGB", "L"):
        # A tRNS colour key in RGB/L PNGs is transparency without an alpha band.
        im = im.convert("RGBA" if mode == "RGB" else "LA")
        mode = im.mode
    if mode in _ALPHA_MODES:
        notes.append("alpha composited on white")
        rgba = im.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if mode == "CMYK":
        notes.append("CMYK converted to RGB")
        return im.convert("RGB")
    if mode in _SIXTEEN_BIT_MODES or mode in ("I", "F"):
        gray = _high_depth_to_l(im, notes)
        notes.append("grayscale")
        return gray.convert("RGB")
    if mode == "1":
        notes.append("1-bit converted")
        notes.append("grayscale")
        return im.convert("L").convert("RGB")
    if mode == "L":
        notes.append("grayscale")
        return im.convert("RGB")
    if mode != "RGB":
        notes.append(f"{mode} converted to RGB")
    return im.convert("RGB")


def _high_depth_to_l(im: Image.Image, notes: list[str]) -> Image.Image:
    """Map 16-bit / 32-bit integer / float grayscale onto 0..255 by scaling, not clipping."""
    arr = np.asarray(im)
    if im.mode in _SIXTEEN_BIT_MODES:
        notes.append("16-bit reduced to 8-bit")
        scaled = (arr.astype(np.float64) * (255.0 / 65535.0)).round()
    elif im.mode == "I":
        peak = int(arr.max()) if arr.size else 0
        if peak <= 255 and int(arr.min()) >= 0:
            scaled = arr.astype(np.float64)
        else:
            # Pillow opens some 16-bit files as 32-bit "I": assume 16-bit range unless exceeded.
            notes.append("16-bit reduced to 8-bit")
            top = 65535.0 if peak <= 65535 else float(peak)
            scaled = np.clip(arr, 0, None).astype(np.float64) * (255.0 / top)
            scaled = scaled.round()
    else:
        notes.append("float image scaled to 8-bit")
        lo, hi = float(np.nanmin(arr)), float(np.nanmax(arr))
        if lo >= 0.0 and hi <= 1.0:
            scaled = np.nan_to_num(arr) * 255.0
        elif hi > lo:
            scaled = (np.nan_to_num(arr, nan=lo) - lo) * (255.0 / (hi - lo))
        else:
            scaled = np.zeros_like(arr)
        scaled = np.round(scaled)
    return Image.fromarray(np.clip(scaled, 0, 255).astype(np.uint8), mode="L")
