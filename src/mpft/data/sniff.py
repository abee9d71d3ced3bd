"""Recognising image files by content, and opening only regular files (never a FIFO or device).

Folder scans (:mod:`mpft.data.scan`) and the decoder (:mod:`mpft.data.images`) both read files
whose names say nothing reliable: an image is known by its magic bytes, whatever its extension,
and a FIFO named ``x.jpg`` must never be opened for reading, since that blocks until a writer
comes. No Pillow here: a scan reads 16 bytes per file.
"""

from __future__ import annotations

import io
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager

from mpft.errors import ImageDecodeError
from mpft.fsutil import special_file_kind

__all__ = [
    "NotRegularFileError",
    "is_image_file",
    "not_regular_reason",
    "open_failures_as_decode_errors",
    "open_regular",
    "sniff_image_type",
]


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
        with open_regular(path) as fh:
            head = fh.read(16)
    except (OSError, ValueError):
        return False
    return sniff_image_type(head) is not None


class NotRegularFileError(OSError):
    """Raised by :func:`open_regular` for a FIFO, socket, device or folder; ``kind`` names it."""

    def __init__(self, kind: str):
        super().__init__(kind)
        self.kind = kind


def not_regular_reason(kind: str) -> str:
    """The error reason for an entry of ``kind`` (``"named pipe (FIFO)"`` ...) that is not read."""
    return f"{kind}, not a regular file; only regular files are read"


def open_regular(path: str | os.PathLike) -> io.BufferedReader:
    """Open a regular file for reading; raise :class:`NotRegularFileError` for anything else.

    O_NONBLOCK makes opening a FIFO return at once instead of waiting for a writer; fstat on the
    open descriptor then decides, so a file swapped for a FIFO after a stat cannot slip through.
    """
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise NotRegularFileError(special_file_kind(mode) or "directory")
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


@contextmanager
def open_failures_as_decode_errors(source: str) -> Iterator[None]:
    """Turn an :class:`OSError` from opening or reading ``source`` into an ``ImageDecodeError``.

    Wraps :func:`open_regular` and what reads the file, so that a caller scoring many files
    gets one error row (not a FIFO, permission denied ...) instead of an exception.
    """
    try:
        yield
    except NotRegularFileError as exc:  # e.g. replaced by a FIFO or device since a stat
        raise ImageDecodeError(source, not_regular_reason(exc.kind)) from None
    except OSError as exc:
        raise ImageDecodeError(source, f"cannot read file: {exc.strerror or exc}") from None
