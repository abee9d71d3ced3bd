"""Safe image decoding: any file in, an RGB ``PIL.Image`` (or a clear ``ImageDecodeError``) out.

Datasets scraped from the web hold zero-byte files, truncated downloads, HTML pages named
``.jpg``, CMYK JPEGs, 16-bit PNGs, animations and decompression bombs. Everything that reads
pixels in mpft goes through :func:`decode_image` so that each of these is handled once, the
same way, in training, evaluation and the server.
"""

from __future__ import annotations

import errno
import io
import logging
import math
import operator
import os
import stat
import threading
import warnings
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from mpft.errors import ConfigError, ImageDecodeError
from mpft.fsutil import link_problem, special_file_kind

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "DecodedImage",
    "decode_image",
    "is_image_file",
    "probe_image",
    "sniff_image_type",
]

log = logging.getLogger(__name__)

#: Largest image (width * height) decoded by default; 64 MP is ~256 MB of RGB pixels (Pillow
#: stores RGB in 4 bytes per pixel).
DEFAULT_MAX_PIXELS = 64_000_000

_EXIF_ORIENTATION = 0x0112
_ALPHA_MODES = ("RGBA", "RGBa", "LA", "La", "PA")
_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")
# LOAD_TRUNCATED_IMAGES is a Pillow module global; the lock keeps our temporary override
# from racing with another thread doing the same.
_TRUNCATION_LOCK = threading.Lock()
# Image.MAX_IMAGE_PIXELS is another Pillow global; see _pillow_limit_lifted.
_PILLOW_LIMIT_LOCK = threading.Lock()


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


def sniff_image_type(head: bytes) -> str | None:
    """Return the image type from magic bytes, or None.

    Args:
        head: the first bytes of a file (16 are enough; fewer may give None).

    Returns:
        One of ``"jpeg"``, ``"png"``, ``"gif"``, ``"webp"``, ``"bmp"``, ``"tiff"`` or None.
    """
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "gif"
    if len(head) >= 12 and head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return "webp"
    # "BM" alone matches plain text; the four reserved header bytes are zero in real BMPs.
    if len(head) >= 10 and head.startswith(b"BM") and head[6:10] == b"\x00\x00\x00\x00":
        return "bmp"
    if head.startswith((b"II*\x00", b"MM\x00*")):
        return "tiff"
    return None


def is_image_file(path: str | os.PathLike) -> bool:
    """True when the file's content starts like a supported image, whatever its extension.

    Unreadable or missing files give False, never an exception, and so do FIFOs, sockets and
    devices: they are never read (a FIFO would block until a writer came).
    """
    try:
        with _open_regular(path) as fh:
            head = fh.read(16)
    except (OSError, ValueError):
        return False
    return sniff_image_type(head) is not None


class _NotRegularFileError(OSError):
    """Raised by :func:`_open_regular` for a FIFO, socket or device; ``kind`` names it."""

    def __init__(self, kind: str):
        super().__init__(kind)
        self.kind = kind


def _open_regular(path: str | os.PathLike) -> io.BufferedReader:
    """Open a regular file for reading; raise :class:`_NotRegularFileError` for anything else.

    O_NONBLOCK makes opening a FIFO return at once instead of waiting for a writer; fstat on the
    open descriptor then decides, so a file swapped for a FIFO after a stat cannot slip through.
    """
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise _NotRegularFileError(special_file_kind(mode) or "directory")
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


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
    max_pixels = _check_max_pixels(max_pixels)
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
        raise ImageDecodeError(
            f"<{type(src).__name__}>",
            f"unsupported input type {type(src).__name__}; pass a path, bytes or a PIL image",
        )
    try:
        path = Path(src)
    except TypeError:  # a PathLike whose __fspath__ returns neither str nor bytes
        raise ImageDecodeError(
            f"<{type(src).__name__}>", f"unsupported input type {type(src).__name__}; "
            "pass a path, bytes or a PIL image") from None
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
        raise ImageDecodeError(source, f"{kind}, not a regular file; only regular files are read")
    if st.st_size == 0:
        raise ImageDecodeError(source, "empty file (0 bytes)")
    try:
        with _open_regular(path) as fh:
            return _decode_stream(fh, source, max_pixels, draft_min_side)
    except _NotRegularFileError as exc:  # replaced by a FIFO or device since the stat above
        raise ImageDecodeError(source, f"{exc.kind}, not a regular file; only regular files are read") from None
    except OSError as exc:
        # Only opening can get here; decoding errors are converted inside.
        raise ImageDecodeError(source, f"cannot read file: {exc.strerror or exc}") from None


def _check_max_pixels(value: object) -> int:
    try:
        n = operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        n = 0
    if isinstance(value, bool) or n < 1:
        raise ConfigError(f"max_pixels must be a positive integer (width * height), got {value!r}")
    return n


@contextmanager
def _pillow_limit_lifted() -> Iterator[None]:
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


def _over_pillow_limit(pixels: int) -> bool:
    limit = Image.MAX_IMAGE_PIXELS
    return limit is not None and pixels > 2 * limit


def _open(fh, source: str) -> Image.Image:
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
            with _pillow_limit_lifted():
                return Image.open(fh)
    except UnidentifiedImageError:
        raise ImageDecodeError(source, "not an image (content is not a format Pillow can read)") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageDecodeError(source, f"corrupt image header: {exc}") from None


def _decode_stream(fh, source: str, max_pixels: int, draft_min_side: int | None = None) -> DecodedImage:
    im = _open(fh, source)
    try:
        return _decode_opened(im, source, max_pixels, draft_min_side, owned=True)
    except BaseException:
        im.close()
        raise


def probe_image(
    src: str | os.PathLike | bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS, draft_min_side: int | None = None
) -> tuple[int, int]:
    """Read only the header and apply :func:`decode_image`'s size rule; nothing is decoded.

    For callers that refuse large uploads before queueing them (the server): the answer is the
    one ``decode_image`` would give for the same ``max_pixels`` and ``draft_min_side``, with
    Pillow's global guard left out in the same way.

    Returns:
        (width, height) the image would be decoded at (reduced for a drafted JPEG).

    Raises:
        ImageDecodeError: not an image, a bad header, zero-size, or too large.
        ConfigError: ``max_pixels`` is not a positive integer.
    """
    max_pixels = _check_max_pixels(max_pixels)
    if isinstance(src, bytes | bytearray | memoryview):
        with _open(io.BytesIO(bytes(src)), "<bytes>") as im:
            _apply_size_limit(im, "<bytes>", max_pixels, draft_min_side, [])
            return im.size
    source = str(src)
    try:
        with _open_regular(src) as fh, _open(fh, source) as im:
            _apply_size_limit(im, source, max_pixels, draft_min_side, [])
            return im.size
    except _NotRegularFileError as exc:
        raise ImageDecodeError(source, f"{exc.kind}, not a regular file; only regular files are read") from None
    except OSError as exc:
        raise ImageDecodeError(source, f"cannot read file: {exc.strerror or exc}") from None


def _too_large(
    source: str, width: int, height: int, max_pixels: int, drafted: tuple[int, int] | None
) -> ImageDecodeError:
    at = "" if drafted is None else f" (still {drafted[0]}x{drafted[1]} at the smallest allowed JPEG scale)"
    return ImageDecodeError(
        source,
        f"image too large: {width}x{height} = {width * height} pixels > max_pixels={max_pixels}{at}; "
        "raise the limit (--max-pixels, Detector.max_pixels, the server's max_pixels) to score it",
    )


def _apply_size_limit(
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


def _decode_opened(
    im: Image.Image, source: str, max_pixels: int, draft_min_side: int | None = None, *, owned: bool = False
) -> DecodedImage:
    """Size check, load and RGB conversion. ``owned``: ``im`` was opened here from a stream the
    caller closes, so a loaded RGB image can be handed out as it is, without a copy."""
    width, height = im.size
    original_mode = im.mode
    fmt = im.format
    notes: list[str] = []
    _apply_size_limit(im, source, max_pixels, draft_min_side, notes)
    try:
        with ExitStack() as stack:
            stack.enter_context(warnings.catch_warnings())
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            if _over_pillow_limit(im.size[0] * im.size[1]):
                # frame and tile loaders (GIF, TIFF) repeat Pillow's check while loading
                stack.enter_context(_pillow_limit_lifted())
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
            rgb = _to_rgb(oriented, notes)
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


def _draft(im: Image.Image, min_side: int, notes: list[str]) -> None:
    """Ask libjpeg for the smallest 1/2^k scale whose shorter side is still >= ``min_side``."""
    width, height = im.size
    short = min(width, height)
    # PIL picks the largest reduction whose result still covers the requested size
    im.draft(im.mode, (math.ceil(width * min_side / short), math.ceil(height * min_side / short)))
    if im.size != (width, height):
        notes.append(f"JPEG decoded at reduced scale {width}x{height} -> {im.size[0]}x{im.size[1]} "
                     f"(draft mode, before downscaling to the model input)")


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


def _to_rgb(im: Image.Image, notes: list[str]) -> Image.Image:
    """Convert a loaded image of any mode to RGB, recording what was done in ``notes``."""
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
