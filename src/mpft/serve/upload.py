"""Reading uploads safely: a capped body held in memory, multipart parsed in memory, content checks.

Nothing here writes to disk. Starlette's stock form parsing spools every file part over 1 MiB
to a temporary file; we read the raw body ourselves (stopping at the cap) and parse it with a
spool threshold above the cap, so a part can never roll over to disk.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import AsyncIterator
from dataclasses import dataclass

from PIL import Image
from starlette.datastructures import Headers, UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import Request

from mpft.data.images import sniff_image_type

__all__ = [
    "UploadRejected",
    "UploadedFile",
    "check_image",
    "parse_files",
    "read_body_capped",
]


class UploadRejected(Exception):
    """The request cannot be processed as a whole; carries the HTTP status and a user-facing reason."""

    def __init__(self, status_code: int, detail: str):
        self.status_code = status_code
        self.detail = detail
        super().__init__(f"{status_code}: {detail}")


@dataclass(frozen=True)
class UploadedFile:
    """One uploaded file, in memory. ``filename`` is the client's name, used only in the response."""

    filename: str
    data: bytes


async def read_body_capped(request: Request, max_bytes: int) -> bytes:
    """Read the whole request body into memory, refusing (413) as soon as it exceeds ``max_bytes``.

    A declared ``Content-Length`` over the cap is refused before any byte is read; a chunked
    or lying client is stopped once the running total passes the cap.
    """
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            if int(declared) > max_bytes:
                raise UploadRejected(413, _too_large(int(declared), max_bytes))
        except ValueError:
            raise UploadRejected(400, "invalid Content-Length header") from None
    buf = bytearray()
    async for chunk in request.stream():
        buf += chunk
        if len(buf) > max_bytes:
            raise UploadRejected(413, _too_large(None, max_bytes))
    return bytes(buf)


def _too_large(size: int | None, cap: int) -> str:
    got = f"{size} bytes" if size is not None else "more"
    return (f"upload too large: {got} > limit {cap} bytes ({cap / 1024 / 1024:g} MiB); "
            "send smaller or fewer images")


class _InMemoryMultiPartParser(MultiPartParser):
    """Starlette's parser with the spool threshold raised above the body cap: parts stay in RAM."""

    def __init__(self, headers: Headers, stream: AsyncIterator[bytes], *, max_files: int, body_size: int):
        # max_part_size only bounds non-file fields; file parts are bounded by the body cap.
        super().__init__(headers, stream, max_files=max_files, max_fields=16, max_part_size=64 * 1024)
        self.spool_max_size = body_size + 1


async def _once(body: bytes) -> AsyncIterator[bytes]:
    yield body


async def parse_files(
    headers: Headers, body: bytes, *, fields: tuple[str, ...], max_files: int
) -> list[UploadedFile]:
    """Parse a multipart/form-data body held in memory; return the file parts under ``fields``.

    Raises:
        UploadRejected: 415 when the body is not multipart, 413 for too many files, 400 for
            malformed multipart data.
    """
    ctype = headers.get("content-type", "")
    if not ctype.lower().startswith("multipart/form-data"):
        raise UploadRejected(
            415, f"expected a multipart/form-data body with images under the field {fields[0]!r}, "
            f"got Content-Type {ctype or 'none'!r}"
        )
    parser = _InMemoryMultiPartParser(headers, _once(body), max_files=max_files, body_size=len(body))
    try:
        form = await parser.parse()
    except MultiPartException as exc:
        status = 413 if "Too many files" in exc.message else 400
        raise UploadRejected(status, f"bad multipart upload: {exc.message}") from None
    try:
        out: list[UploadedFile] = []
        for name in fields:
            for item in form.getlist(name):
                if isinstance(item, UploadFile):
                    if getattr(item.file, "_rolled", False):  # defensive: must never happen (see module doc)
                        raise RuntimeError("an upload was spooled to disk")
                    out.append(UploadedFile(filename=item.filename or "", data=await item.read()))
        return out
    finally:
        await form.close()


def check_image(data: bytes, *, max_pixels: int) -> tuple[int, str] | None:
    """Whole-request checks of one upload, by content only; None when it may go to the detector.

    Returns ``(status, reason)``: 422 for an empty file, 415 when the magic bytes are not a
    supported image type (whatever the name or declared type says), 422 when the header
    declares more than ``max_pixels`` pixels. A file whose header cannot be parsed passes:
    the detector reports it as a per-file error.
    """
    if not data:
        return 422, "empty file (0 bytes)"
    kind = sniff_image_type(data[:16])
    if kind is None:
        return 415, "not a supported image (content is not JPEG, PNG, GIF, WebP, BMP or TIFF)"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            # Image.open reads only the header: this is cheap even for a huge declared size.
            with Image.open(io.BytesIO(data)) as im:
                width, height = im.size
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        return 422, f"image too large (decompression bomb guard): {exc}"
    except Exception:  # noqa: BLE001 - any header failure is reported per file by the detector
        return None
    if width * height > max_pixels:
        return 422, (
            f"image too large: {width}x{height} = {width * height} pixels > limit {max_pixels} "
            "(possible decompression bomb)"
        )
    return None
