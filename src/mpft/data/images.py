"""Safe image decoding: any file in, an RGB ``PIL.Image`` (or a clear ``ImageDecodeError``) out.

Datasets scraped from the web hold zero-byte files, truncated downloads, HTML pages named
``.jpg``, CMYK JPEGs, 16-bit PNGs, animations and decompression bombs. Everything that reads
pixels in mpft goes through :func:`decode_image` so that each of these is handled once, the
same way, in training, evaluation and the server.

This module turns a source (path, bytes, PIL image) into loaded pixels: input checks, frame
choice, strict loading, EXIF orientation. It leans on :mod:`mpft.data.sniff` (regular files
only), :mod:`mpft.data.limits` (the size rule and reduced-scale JPEG decoding, ``probe_image``)
and :mod:`mpft.data.modes` (mode -> RGB); import their names from them (one path for each).
"""

from __future__ import annotations

import errno
import io
import os
import stat
import threading
import warnings
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageFile, ImageOps

from mpft.data.limits import (
    DEFAULT_MAX_PIXELS,
    apply_size_limit,
    check_max_pixels,
    open_header,
    over_pillow_limit,
    pillow_limit_lifted,
)
from mpft.data.modes import to_rgb
from mpft.data.sniff import (
    not_regular_reason,
    open_failures_as_decode_errors,
    open_regular,
)
from mpft.errors import ImageDecodeError
from mpft.fsutil import link_problem, special_file_kind

__all__ = [
    "DecodedImage",
    "decode_image",
]

_EXIF_ORIENTATION = 0x0112
# LOAD_TRUNCATED_IMAGES is a Pillow module global; the lock keeps our temporary override
# from racing with another thread doing the same.
_TRUNCATION_LOCK = threading.Lock()


@dataclass(frozen=True)
class DecodedImage:
    """Result of :func:`decode_image`.

    Attributes:
        image: RGB image, EXIF orientation applied, size (W, H) possibly swapped from the file's.
        source: file path, ``"<bytes>"`` or ``"<image>"``.
        format: Pillow format name (``"JPEG"``, ``"PNG"`` ...) or None when unknown.
        original_mode: Pillow mode of the file (``"CMYK"``, ``"I;16"``, ``"P"`` ...).
        original_size: (width, height) as stored in the file, before EXIF rotation.
        notes: human-readable remarks on every conversion that was applied.
    """

    image: Image.Image
    source: str
    format: str | None
    original_mode: str
    original_size: tuple[int, int]
    notes: tuple[str, ...]


def decode_image(
    src: str | os.PathLike | bytes | Image.Image,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    draft_min_side: int | None = None,
) -> DecodedImage:
    """Decode an image file, bytes or PIL image into a fully loaded RGB image.

    ``max_pixels`` is the one size limit: Pillow's process-wide ``Image.MAX_IMAGE_PIXELS``
    bomb guard is neither applied on top of it nor changed for other code.

    Args:
        src: a path, the encoded bytes, or an already opened PIL image (not closed here).
        max_pixels: reject images with more than this many pixels, checked from the header
            before any pixel data is decoded. A JPEG larger than this is still accepted when the
            caller allows reduced-scale decoding (``draft_min_side``) and the reduced size fits:
            libjpeg then never holds more than ``max_pixels`` pixels, so memory stays bounded.
        draft_min_side: JPEG only: let libjpeg decode at 1/2, 1/4 or 1/8 scale (PIL's draft
            mode, several times faster on large photos) as long as the shorter side stays at
            least this many pixels. For callers that downscale anyway (see
            :func:`mpft.data.transforms.draft_side`); ``None`` decodes at full size. A reduced
            decode adds a note; ``original_size`` stays the file's size.

    Returns:
        A :class:`DecodedImage` whose ``image`` has mode ``"RGB"``.

    Raises:
        ImageDecodeError: missing, empty, not an image, truncated, too large or zero-size; not
            a regular file (FIFO, socket, device) or a looping symbolic link; or an input of an
            unsupported type (not a path, bytes or PIL image).
        ConfigError: ``max_pixels`` is not a positive integer.
    """
    max_pixels = check_max_pixels(max_pixels)
    if isinstance(src, Image.Image):
        source = str(getattr(src, "filename", "") or "<image>")
        return _decode_opened(src, source, max_pixels, draft_min_side)
    if isinstance(src, bytes | bytearray | memoryview):
        source = "<bytes>"
        if len(src) == 0:
            raise ImageDecodeError(source, "empty data (0 bytes)")
        fh: io.IOBase = io.BytesIO(bytes(src))
        return _decode_stream(fh, source, max_pixels, draft_min_side)
    if not isinstance(src, str | os.PathLike):
        # pathlib would raise a bare TypeError here, which callers scoring many inputs cannot
        # turn into one error row
        raise _unsupported_input(src)
    try:
        path = Path(src)
    except TypeError:  # a PathLike whose __fspath__ returns neither str nor bytes
        raise _unsupported_input(src) from None
    source = str(path)
    try:
        st = path.stat()
    except FileNotFoundError:
        reason = "broken symbolic link (its target does not exist)" if path.is_symlink() else "file not found"
        raise ImageDecodeError(source, reason) from None
    except ValueError as exc:  # e.g. an embedded NUL byte
        raise ImageDecodeError(source, f"invalid path: {exc}") from None
    except OSError as exc:
        reason = link_problem(path) if exc.errno == errno.ELOOP else None
        raise ImageDecodeError(source, reason or f"cannot read file: {exc.strerror or exc}") from None
    if stat.S_ISDIR(st.st_mode):
        loop = link_problem(path)
        raise ImageDecodeError(source, f"{loop}, not an image file" if loop else "is a directory, not an image file")
    kind = special_file_kind(st.st_mode)
    if kind is not None:
        raise ImageDecodeError(source, not_regular_reason(kind))
    if st.st_size == 0:
        raise ImageDecodeError(source, "empty file (0 bytes)")
    # a FIFO or device swapped in since the stat above is still caught: open_regular checks again;
    # only opening can fail here with an OSError, decoding errors are converted inside
    with open_failures_as_decode_errors(source), open_regular(path) as fh:
        return _decode_stream(fh, source, max_pixels, draft_min_side)


def _unsupported_input(src: object) -> ImageDecodeError:
    name = type(src).__name__
    return ImageDecodeError(f"<{name}>", f"unsupported input type {name}; pass a path, bytes or a PIL image")


def _decode_stream(fh, source: str, max_pixels: int, draft_min_side: int | None = None) -> DecodedImage:
    im = open_header(fh, source)
    try:
        return _decode_opened(im, source, max_pixels, draft_min_side, owned=True)
    except BaseException:
        im.close()
        raise


def _decode_opened(
    im: Image.Image, source: str, max_pixels: int, draft_min_side: int | None = None, *, owned: bool = False
) -> DecodedImage:
    """Size check, load and RGB conversion. ``owned``: ``im`` was opened here from a stream the
    caller closes, so a loaded RGB image can be handed out as it is, without a copy."""
    width, height = im.size
    original_mode = im.mode
    fmt = im.format
    notes: list[str] = []
    apply_size_limit(im, source, max_pixels, draft_min_side, notes)
    try:
        with ExitStack() as stack:
            stack.enter_context(warnings.catch_warnings())
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            if over_pillow_limit(im.size[0] * im.size[1]):
                # frame and tile loaders (GIF, TIFF) repeat Pillow's check while loading
                stack.enter_context(pillow_limit_lifted())
            # counting frames parses every frame header (after the size check: it can be slow)
            n_frames = int(getattr(im, "n_frames", 1) or 1)
            if n_frames > 1:
                notes.insert(0, f"animated: first of {n_frames} frames used")
                im.seek(0)
            _load_strict(im)
            oriented = im
            if im.getexif().get(_EXIF_ORIENTATION, 1) not in (None, 1):
                # Before mode conversion: convert() drops the EXIF that exif_transpose reads.
                oriented = ImageOps.exif_transpose(im)
                notes.append("EXIF orientation applied")
            rgb = to_rgb(oriented, notes)
    except Image.DecompressionBombError as exc:
        # a frame or tile larger than the image's declared size (a crafted file)
        raise ImageDecodeError(source, f"image too large (decompression bomb guard): {exc}") from None
    except ImageDecodeError:
        raise
    except (OSError, SyntaxError, ValueError, EOFError, IndexError) as exc:
        raise ImageDecodeError(source, f"cannot decode pixel data (truncated or corrupt): {exc}") from None
    if rgb is im and not owned:
        # Never hand out the caller's image object. An image opened here is not copied: a copy
        # doubles the peak memory (4 bytes per pixel: 432 MB more for a 108 MP photo); once
        # loaded it no longer reads the stream, which the caller closes.
        rgb = rgb.copy()
    return DecodedImage(
        image=rgb,
        source=source,
        format=fmt,
        original_mode=original_mode,
        original_size=(width, height),
        notes=tuple(notes),
    )


def _load_strict(im: Image.Image) -> None:
    """Load all pixel data, failing on truncation instead of padding with grey."""
    if not ImageFile.LOAD_TRUNCATED_IMAGES:
        im.load()
        return
    with _TRUNCATION_LOCK:
        previous = ImageFile.LOAD_TRUNCATED_IMAGES
        ImageFile.LOAD_TRUNCATED_IMAGES = False
        try:
            im.load()
        finally:
            ImageFile.LOAD_TRUNCATED_IMAGES = previous
