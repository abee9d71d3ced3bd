"""Reading uploads safely: a capped body held in memory, multipart parsed in memory, content checks.

Nothing here writes to disk. Starlette's stock form parsing spools every file part over 1 MiB
to a temporary file; we read the raw body ourselves (stopping at the cap) and parse it with a
spool threshold above the cap, so a part can never roll over to disk.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import anyio
from starlette.datastructures import Headers, UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser, parse_options_header
from starlette.requests import ClientDisconnect, Request

from mpft.data.limits import probe_image
from mpft.data.sniff import sniff_image_type
from mpft.errors import ImageDecodeError

__all__ = [
    "UploadAborted",
    "UploadRejected",
    "UploadedFile",
    "check_image",
    "parse_files",
    "read_body_capped",
]


class UploadRejected(Exception):
    """The request cannot be processed as a whole; carries the HTTP status and a user-facing reason.

    ``close``: the connection must be closed after the answer (the client stopped sending its
    body, so the connection cannot carry another request).
    """

    def __init__(self, status_code: int, detail: str, *, close: bool = False):
        self.status_code = status_code
        self.detail = detail
        self.close = close
        super().__init__(f"{status_code}: {detail}")


class UploadAborted(Exception):
    """The client disconnected before its body was complete: a client event, nobody to answer."""

    def __init__(self, received: int, declared: int | None):
        self.received = received
        self.declared = declared
        of = f" of {declared}" if declared is not None else ""
        super().__init__(f"client disconnected during the upload after {received}{of} bytes")


@dataclass(frozen=True)
class UploadedFile:
    """One uploaded file, in memory. ``filename`` is the client's name, used only in the response."""

    filename: str
    data: bytes


async def read_body_capped(request: Request, max_bytes: int, timeout_s: float | None = None) -> bytes:
    """Read the whole request body into memory, refusing (413) as soon as it exceeds ``max_bytes``.

    A declared ``Content-Length`` over the cap is refused before any byte is read; a chunked
    or lying client is stopped once the running total passes the cap. A body that has not
    arrived within ``timeout_s`` is refused with 408 (a slow or stalled client would otherwise
    hold its connection and its partial body in memory indefinitely).

    Raises:
        UploadRejected: 400, 408 or 413.
        UploadAborted: the client disconnected mid-body.
    """
    declared = request.headers.get("content-length")
    size: int | None = None
    if declared is not None:
        try:
            size = int(declared)
        except ValueError:
            raise UploadRejected(400, "invalid Content-Length header") from None
        if size > max_bytes:
            raise UploadRejected(413, _too_large(size, max_bytes))
    buf = bytearray()
    try:
        with anyio.fail_after(timeout_s):
            async for chunk in request.stream():
                buf += chunk
                if len(buf) > max_bytes:
                    raise UploadRejected(413, _too_large(None, max_bytes))
    except TimeoutError:
        raise UploadRejected(
            408, f"request body not received within {timeout_s:g} s ({len(buf)} bytes arrived); "
            "the connection is closed", close=True,
        ) from None
    except ClientDisconnect:
        raise UploadAborted(len(buf), size) from None
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
            malformed multipart data (including a body cut short before its closing boundary).
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
    # The parser silently drops a part that never ended, so a truncated body would look like
    # "no file" (422); a multipart body is complete only with its close delimiter.
    _, params = parse_options_header(ctype)
    boundary = params.get(b"boundary", b"")
    if not body.startswith(b"--" + boundary + b"--") and b"\r\n--" + boundary + b"--" not in body:
        await form.close()
        raise UploadRejected(400, "bad multipart upload: the body ends before its closing boundary "
                                  "(truncated or malformed)")
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
    # the detector's own size rule (mpft.data.images.decode_image): one limit, max_pixels, and not
    # Pillow's global bomb guard, so a 108 MP phone photo passes when max_pixels allows it
    try:
        probe_image(data, max_pixels=max_pixels)
    except ImageDecodeError as exc:
        if "too large" in exc.reason:
            return 422, exc.reason.removeprefix("<bytes>: ")
        return None  # any other header failure is reported per file by the detector
    return None
