"""The image size rule, applied from the header before any pixel is decoded.

One limit, ``max_pixels`` (width * height), decides whether an image is decoded; a JPEG over it
is still accepted when the caller lets libjpeg decode it at a reduced scale (draft mode) that
fits. Pillow's process-wide bomb guard (``Image.MAX_IMAGE_PIXELS``) is neither applied on top
of that limit nor changed for other code. :func:`probe_image` answers the rule for a file
without decoding it (the server refuses large uploads before queueing them);
:func:`mpft.data.images.decode_image` applies the same rule and then decodes.
"""

from __future__ import annotations

import io
import math
import operator
import os
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO

from PIL import Image, UnidentifiedImageError

from mpft.data.sniff import open_failures_as_decode_errors, open_regular
from mpft.errors import ConfigError, ImageDecodeError

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "apply_size_limit",
    "check_max_pixels",
    "open_header",
    "over_pillow_limit",
    "pillow_limit_lifted",
    "probe_image",
]

#: Largest image (width * height) decoded by default; 64 MP is ~256 MB of RGB pixels (Pillow
#: stores RGB in 4 bytes per pixel).
DEFAULT_MAX_PIXELS = 64_000_000

# Image.MAX_IMAGE_PIXELS is a Pillow module global; see pillow_limit_lifted.
_PILLOW_LIMIT_LOCK = threading.Lock()


def check_max_pixels(value: object) -> int:
    """``value`` as a positive int; ``ConfigError`` for anything else (bools included)."""
    try:
        n = operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        n = 0
    if isinstance(value, bool) or n < 1:
        raise ConfigError(f"max_pixels must be a positive integer (width * height), got {value!r}")
    return n


@contextmanager
def pillow_limit_lifted() -> Iterator[None]:
    """Switch off Pillow's global bomb guard while mpft's own ``max_pixels`` check stands in.

    ``Image.MAX_IMAGE_PIXELS`` is a module global read by ``Image.open`` and by some frame and
    tile loaders; its error fires at twice its value (179 MP by default) whatever mpft's limit
    says. It is changed only for images above it, under a lock, and restored after; another
    thread opening an image meanwhile loses only Pillow's guard, and mpft's decoders keep their
    own check, made before any pixel is allocated.
    """
    with _PILLOW_LIMIT_LOCK:
        previous = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None
        try:
            yield
        finally:
            Image.MAX_IMAGE_PIXELS = previous


def over_pillow_limit(pixels: int) -> bool:
    """True when Pillow's own guard would raise ``DecompressionBombError`` for ``pixels``."""
    limit = Image.MAX_IMAGE_PIXELS
    return limit is not None and pixels > 2 * limit


def open_header(fh: IO[bytes], source: str) -> Image.Image:
    """``Image.open`` (header only) with Pillow's bomb guard left to ``max_pixels``; typed errors."""
    try:
        try:
            with warnings.catch_warnings():
                # max_pixels is the limit; Pillow's warning (at 89.5 MP by default) is noise here
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                return Image.open(fh)
        except Image.DecompressionBombError:
            # Over Pillow's own error limit: read the header again without it; max_pixels is
            # checked from the header before any pixel data is decoded.
            fh.seek(0)
            with pillow_limit_lifted():
                return Image.open(fh)
    except UnidentifiedImageError:
        raise ImageDecodeError(source, "not an image (content is not a format Pillow can read)") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageDecodeError(source, f"corrupt image header: {exc}") from None


def probe_image(
    src: str | os.PathLike | bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS, draft_min_side: int | None = None
) -> tuple[int, int]:
    """Read only the header and apply :func:`~mpft.data.images.decode_image`'s size rule; nothing is decoded.

    For callers that refuse large uploads before queueing them (the server): the answer is the
    one ``decode_image`` would give for the same ``max_pixels`` and ``draft_min_side``, with
    Pillow's global guard left out in the same way.

    Returns:
        (width, height) the image would be decoded at (reduced for a drafted JPEG).

    Raises:
        ImageDecodeError: not an image, a bad header, zero-size, or too large.
        ConfigError: ``max_pixels`` is not a positive integer.
    """
    max_pixels = check_max_pixels(max_pixels)
    if isinstance(src, bytes | bytearray | memoryview):
        with open_header(io.BytesIO(bytes(src)), "<bytes>") as im:
            apply_size_limit(im, "<bytes>", max_pixels, draft_min_side, [])
            return im.size
    source = str(src)
    with open_failures_as_decode_errors(source), open_regular(src) as fh, open_header(fh, source) as im:
        apply_size_limit(im, source, max_pixels, draft_min_side, [])
        return im.size


def _too_large(
    source: str, width: int, height: int, max_pixels: int, drafted: tuple[int, int] | None
) -> ImageDecodeError:
    at = "" if drafted is None else f" (still {drafted[0]}x{drafted[1]} at the smallest allowed JPEG scale)"
    return ImageDecodeError(
        source,
        f"image too large: {width}x{height} = {width * height} pixels > max_pixels={max_pixels}{at}; "
        "raise the limit (--max-pixels, Detector.max_pixels, the server's max_pixels) to score it",
    )


def apply_size_limit(
    im: Image.Image, source: str, max_pixels: int, draft_min_side: int | None, notes: list[str]
) -> None:
    """Reject an image over ``max_pixels`` from its header, unless it is a JPEG that the caller
    lets libjpeg decode at a reduced scale (``draft_min_side``) and that scale fits: then set up
    that scale. Either way no pixel has been decoded yet."""
    width, height = im.size
    if width <= 0 or height <= 0:
        raise ImageDecodeError(source, f"zero-size image ({width}x{height})")
    # a JPEG file is one frame (Pillow names multi-frame ones "MPO")
    can_draft = bool(draft_min_side) and im.format == "JPEG"
    if width * height > max_pixels and not can_draft:
        raise _too_large(source, width, height, max_pixels, None)
    if can_draft and min(width, height) >= 2 * draft_min_side:
        _draft(im, draft_min_side, notes)
    if im.size[0] * im.size[1] > max_pixels:
        raise _too_large(source, width, height, max_pixels, im.size)


def _draft(im: Image.Image, min_side: int, notes: list[str]) -> None:
    """Ask libjpeg for the smallest 1/2^k scale whose shorter side is still >= ``min_side``."""
    width, height = im.size
    short = min(width, height)
    # PIL picks the largest reduction whose result still covers the requested size
    im.draft(im.mode, (math.ceil(width * min_side / short), math.ceil(height * min_side / short)))
    if im.size != (width, height):
        notes.append(f"JPEG decoded at reduced scale {width}x{height} -> {im.size[0]}x{im.size[1]} "
                     f"(draft mode, before downscaling to the model input)")
