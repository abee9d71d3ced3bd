"""The endpoints: health, readiness, predict and explain. They move bytes and map outcomes to statuses;
scores come from the detector (through the batching queue) and pictures from :mod:`mpft.explain`."""

from __future__ import annotations

import dataclasses
import importlib
import io
from pathlib import PurePosixPath, PureWindowsPath
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, Response

from mpft.detector import Detector
from mpft.errors import ImageDecodeError
from mpft.serve.batching import BatchQueue, QueueFull
from mpft.serve.settings import ServeSettings
from mpft.serve.state import ModelState
from mpft.serve.upload import UploadedFile, UploadRejected, check_image, parse_files, read_body_capped

__all__ = ["PAGE_CSP", "error_response", "register_routes"]

# The page loads only its own script, style and the heatmap blob; /docs keeps FastAPI's CDN assets.
PAGE_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


def _multipart_body(field: str, many: bool, description: str) -> dict:
    item = {"type": "string", "format": "binary"}
    schema = {"type": "array", "items": item} if many else item
    return {
        "requestBody": {
            "required": True,
            "description": description,
            "content": {
                "multipart/form-data": {
                    "schema": {"type": "object", "properties": {field: schema}, "required": [field]}
                }
            },
        }
    }


_ERROR = {"content": {"application/json": {"example": {"detail": "reason"}}}}
_PREDICT_EXAMPLE = {
    "model_id": "mpft-default-lora-0123456789ab",
    "results": [
        {"filename": "cat.jpg", "probability": 0.93, "verdict": "generated", "threshold": 0.5,
         "model_id": "mpft-default-lora-0123456789ab", "error": None, "notes": []},
        {"filename": "cut.png", "probability": None, "verdict": "error", "threshold": 0.5,
         "model_id": "mpft-default-lora-0123456789ab",
         "error": "cannot decode pixel data (truncated or corrupt): image file is truncated", "notes": []},
    ],
}
_COMMON_ERRORS = {
    400: {"description": "Malformed multipart body", **_ERROR},
    408: {"description": "The body did not arrive within the body timeout", **_ERROR},
    413: {"description": "Body over --max-upload-mb, or too many files", **_ERROR},
    415: {"description": "Not multipart, or a file whose content is not a supported image", **_ERROR},
    422: {"description": "No file, an empty file, or more pixels than --max-pixels", **_ERROR},
    503: {"description": "Model still loading, or the queue's expected wait is over --queue-timeout: "
                         "retry after Retry-After s", **_ERROR},
}


def error_response(status: int, detail: Any, headers: dict[str, str] | None = None) -> JSONResponse:
    """Every error the service sends: JSON ``{"detail": ...}``."""
    return JSONResponse({"detail": detail}, status_code=status, headers=headers)


def _rejected(exc: UploadRejected) -> JSONResponse:
    return error_response(exc.status_code, exc.detail, {"Connection": "close"} if exc.close else None)


def _busy(exc: QueueFull) -> JSONResponse:
    return error_response(503, str(exc), {"Retry-After": str(exc.retry_after_s)})


def _import_explain():
    """``mpft.explain`` or None when that module is not part of this installation."""
    try:
        return importlib.import_module("mpft.explain")
    except ModuleNotFoundError as exc:
        if exc.name == "mpft.explain":
            return None
        raise


def display_name(filename: str) -> str:
    """The client's file name without any directories it sent (Windows or POSIX), for titles."""
    return PureWindowsPath(PurePosixPath(filename).name).name


def register_routes(app: FastAPI, state: ModelState, queue: BatchQueue, settings: ServeSettings,
                    static_dir: Any) -> None:
    """Add the service's routes to ``app``."""
    retry = {"Retry-After": str(settings.retry_after_s)}

    def _detector_or_503() -> Detector | JSONResponse:
        if state.detector is not None:
            return state.detector
        if state.error is not None:
            return error_response(503, f"model failed to load: {state.error}")
        return error_response(503, "model is still loading; retry shortly", retry)

    async def _read_files(request: Request, fields: tuple[str, ...]) -> list[UploadedFile]:
        max_files = settings.max_files
        body = await read_body_capped(request, settings.max_upload_bytes, settings.body_timeout_s)
        files = await parse_files(request.headers, body, fields=fields, max_files=max_files)
        request.state.n_files = len(files)
        if not files:
            raise UploadRejected(422, f"no file: send the image(s) as multipart/form-data under the field "
                                      f"{fields[0]!r}")
        if len(files) > max_files:
            raise UploadRejected(413, f"too many files: {len(files)} > limit {max_files}")
        for i, f in enumerate(files):
            bad = check_image(f.data, max_pixels=settings.max_pixels)
            if bad is not None:
                status, reason = bad
                raise UploadRejected(status, f"file {i + 1} ({f.filename or 'unnamed'}): {reason}")
        return files

    @app.get("/", include_in_schema=False)
    async def index() -> Response:
        return FileResponse(static_dir / "index.html", media_type="text/html",
                            headers={"Content-Security-Policy": PAGE_CSP})

    @app.get("/healthz", summary="Liveness: the process answers")
    async def healthz() -> dict:
        return {"status": "ok"}

    @app.get("/readyz", summary="Readiness: 200 once the model is loaded, 503 before (or if loading failed)",
             responses={503: {"description": "Not ready", **_ERROR}})
    async def readyz() -> Response:
        det = _detector_or_503()
        if isinstance(det, JSONResponse):
            return det
        return JSONResponse({"status": "ready", "model_id": det.model_id, "load_seconds": state.load_seconds,
                             "queue": queue.stats()})

    @app.post(
        "/api/v1/predict",
        summary="Score one or several images",
        description="multipart/form-data with one or more files under the field `files`. A file that cannot "
        "be decoded gets `verdict: error` and an `error` text in its result; whole-request problems (size, "
        "type, pixel limit) fail the request. Concurrent requests are scored together in one batch.",
        openapi_extra=_multipart_body("files", True, "images (JPEG, PNG, GIF, WebP, BMP, TIFF)"),
        responses={200: {"description": "One result per file, in upload order",
                         "content": {"application/json": {"example": _PREDICT_EXAMPLE}}}, **_COMMON_ERRORS},
    )
    async def predict(request: Request) -> Response:
        request.state.n_files = 0
        det = _detector_or_503()
        if isinstance(det, JSONResponse):
            return det
        try:
            files = await _read_files(request, ("files",))
        except UploadRejected as exc:
            return _rejected(exc)
        try:
            out = await queue.predict(det, [f.data for f in files])
        except QueueFull as exc:
            return _busy(exc)
        results = []
        for f, p in zip(files, out, strict=True):
            d = p.to_dict()
            d.pop("source", None)
            results.append({"filename": f.filename, **d})
        return JSONResponse({"model_id": det.model_id, "results": results})

    @app.post(
        "/api/v1/explain",
        summary="Heatmap of the regions that drove the score (PNG)",
        description="multipart/form-data with exactly one image under the field `file` (or `files`).",
        openapi_extra=_multipart_body("file", False, "one image"),
        responses={200: {"description": "PNG heatmap", "content": {"image/png": {}}},
                   501: {"description": "mpft.explain is not installed", **_ERROR}, **_COMMON_ERRORS},
        response_class=Response,
    )
    async def explain(request: Request) -> Response:
        request.state.n_files = 0
        explain_mod = _import_explain()
        if explain_mod is None:
            return error_response(501, "explanations are not available here (mpft.explain is not installed)")
        det = _detector_or_503()
        if isinstance(det, JSONResponse):
            return det
        try:
            files = await _read_files(request, ("file", "files"))
        except UploadRejected as exc:
            return _rejected(exc)
        if len(files) != 1:
            return error_response(422, f"explain takes exactly one image, got {len(files)}")
        upload = files[0]

        def work() -> bytes:
            expl = explain_mod.explain_image(det, upload.data)
            if upload.filename:
                # explain_image sees bytes, so its source is "<bytes 0>"; the title should name the file
                expl = dataclasses.replace(expl, source=display_name(upload.filename))
            buf = io.BytesIO()
            explain_mod.render(expl, buf)
            return buf.getvalue()

        try:
            out = await queue.call(work)
        except QueueFull as exc:
            return _busy(exc)
        except ImageDecodeError as exc:
            return error_response(422, f"file 1 ({upload.filename or 'unnamed'}): {exc.reason}")
        return Response(out, media_type="image/png")
