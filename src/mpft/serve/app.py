"""The HTTP service: a thin, hardened layer over :class:`mpft.detector.Detector`.

Routes: ``GET /`` (drop-an-image page), ``POST /api/v1/predict``, ``POST /api/v1/explain``,
``GET /healthz``, ``GET /readyz``, OpenAPI at ``/docs``. Scoring, verdicts and explanations come
from the detector and :mod:`mpft.explain`; this module only moves bytes and enforces limits.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import anyio
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from PIL import Image
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from mpft import __version__
from mpft.detector import Detector
from mpft.errors import ImageDecodeError
from mpft.serve.middleware import AccessLogMiddleware
from mpft.serve.settings import ServeSettings
from mpft.serve.upload import UploadedFile, UploadRejected, check_image, parse_files, read_body_capped

__all__ = ["STATIC_DIR", "ModelState", "create_app"]

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).resolve().parent / "static"

# The page loads only its own script, style and the heatmap blob; /docs keeps FastAPI's CDN assets.
_PAGE_CSP = (
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
    413: {"description": "Body over --max-upload-mb, or too many files", **_ERROR},
    415: {"description": "Not multipart, or a file whose content is not a supported image", **_ERROR},
    422: {"description": "No file, an empty file, or more pixels than --max-pixels", **_ERROR},
    503: {"description": "Model still loading, or all model slots busy: retry after Retry-After s", **_ERROR},
}


class ModelState:
    """The detector, loaded once in a background thread so that ``/readyz`` means something."""

    def __init__(self, loader: Callable[[], Detector], settings: ServeSettings):
        self._loader = loader
        self._settings = settings
        self._lock = threading.Lock()
        self.detector: Detector | None = None
        self.error: str | None = None
        self.load_seconds: float | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._load, name="mpft-model-loader", daemon=True)
                self._thread.start()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until loading finished (either way); True when a detector is ready."""
        if self._thread is not None:
            self._thread.join(timeout)
        return self.detector is not None

    def _load(self) -> None:
        t0 = time.perf_counter()
        try:
            det = self._loader()
            # The header check and the decoder must agree on the pixel limit.
            det.max_pixels = self._settings.max_pixels
            if self._settings.warmup:
                # The first forward pass pays one-off costs (seconds on CPU); pay them before
                # /readyz says 200, not while a user's request holds a model slot.
                det.predict([_warmup_image()], batch_size=1)
        except Exception as exc:  # noqa: BLE001 - reported through /readyz and the log, not raised
            self.error = f"{type(exc).__name__}: {exc}"
            log.error("model failed to load: %s", self.error)
            return
        self.load_seconds = time.perf_counter() - t0
        self.detector = det
        log.info("model %s ready in %.1f s", getattr(det, "model_id", "?"), self.load_seconds)


def _warmup_image() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (64, 48), (128, 96, 64)).save(buf, format="PNG")
    return buf.getvalue()


class _Slots:
    """A counting semaphore acquired without blocking the event loop; saturation means 503."""

    def __init__(self, n: int):
        self._sem = threading.BoundedSemaphore(n)

    async def acquire(self, timeout_s: float) -> bool:
        if self._sem.acquire(blocking=False):
            return True
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            await anyio.sleep(0.005)
            if self._sem.acquire(blocking=False):
                return True
        return False

    def release(self) -> None:
        self._sem.release()


def _error(status: int, detail: Any, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status, headers=headers)


def _import_explain():
    """``mpft.explain`` or None when that module is not part of this installation."""
    try:
        return importlib.import_module("mpft.explain")
    except ModuleNotFoundError as exc:
        if exc.name == "mpft.explain":
            return None
        raise


def create_app(detector_loader: Callable[[], Detector], settings: ServeSettings | None = None) -> FastAPI:
    """Build the service; ``detector_loader`` runs once, in a background thread, at startup.

    Args:
        detector_loader: returns the detector to serve (e.g. ``lambda: Detector.load(path)``);
            tests pass a tiny or fake one. It needs ``predict(list[bytes], batch_size=)``,
            ``model_id``, ``threshold`` and a settable ``max_pixels``.
        settings: limits (see :class:`ServeSettings`); defaults when None.

    Returns:
        The FastAPI app; ``app.state.model`` is its :class:`ModelState`.
    """
    settings = settings or ServeSettings()
    state = ModelState(detector_loader, settings)
    slots = _Slots(settings.max_concurrency)
    retry = {"Retry-After": str(settings.retry_after_s)}

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        state.start()
        yield

    app = FastAPI(
        title="mpft",
        version=__version__,
        description="Detect AI-generated images (CLIP fine-tuned with Texture-Aware Masking). "
        "Uploads are held in memory only and never logged.",
        lifespan=lifespan,
    )
    app.state.model = state
    app.state.settings = settings
    app.add_middleware(AccessLogMiddleware)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _error(exc.status_code, exc.detail, getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        return _error(422, exc.errors())

    @app.exception_handler(Exception)
    async def _unexpected(_request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error", exc_info=exc)
        return _error(500, "internal server error (see the server log)")

    def _detector_or_503() -> Detector | JSONResponse:
        if state.detector is not None:
            return state.detector
        if state.error is not None:
            return _error(503, f"model failed to load: {state.error}")
        return _error(503, "model is still loading; retry shortly", retry)

    async def _read_files(request: Request, fields: tuple[str, ...]) -> list[UploadedFile]:
        max_files = settings.max_files
        body = await read_body_capped(request, settings.max_upload_bytes)
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

    async def _run_model(fn: Callable[[], Any]) -> Any:
        if not await slots.acquire(settings.acquire_timeout_s):
            return _error(503, f"server busy: all {settings.max_concurrency} model slots are in use; "
                               f"retry after {settings.retry_after_s} s", retry)
        try:
            return await run_in_threadpool(fn)
        finally:
            slots.release()

    @app.get("/", include_in_schema=False)
    async def index() -> Response:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html",
                            headers={"Content-Security-Policy": _PAGE_CSP})

    @app.get("/healthz", summary="Liveness: the process answers")
    async def healthz() -> dict:
        return {"status": "ok"}

    @app.get("/readyz", summary="Readiness: 200 once the model is loaded, 503 before (or if loading failed)",
             responses={503: {"description": "Not ready", **_ERROR}})
    async def readyz() -> Response:
        det = _detector_or_503()
        if isinstance(det, JSONResponse):
            return det
        return JSONResponse({"status": "ready", "model_id": det.model_id, "load_seconds": state.load_seconds})

    @app.post(
        "/api/v1/predict",
        summary="Score one or several images",
        description="multipart/form-data with one or more files under the field `files`. A file that cannot "
        "be decoded gets `verdict: error` and an `error` text in its result; whole-request problems (size, "
        "type, pixel limit) fail the request.",
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
            return _error(exc.status_code, exc.detail)
        out = await _run_model(lambda: det.predict([f.data for f in files], batch_size=settings.batch_size))
        if isinstance(out, Response):
            return out
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
            return _error(501, "explanations are not available here (mpft.explain is not installed)")
        det = _detector_or_503()
        if isinstance(det, JSONResponse):
            return det
        try:
            files = await _read_files(request, ("file", "files"))
        except UploadRejected as exc:
            return _error(exc.status_code, exc.detail)
        if len(files) != 1:
            return _error(422, f"explain takes exactly one image, got {len(files)}")

        def work() -> bytes:
            expl = explain_mod.explain_image(det, files[0].data)
            buf = io.BytesIO()
            explain_mod.render(expl, buf)
            return buf.getvalue()

        try:
            out = await _run_model(work)
        except ImageDecodeError as exc:
            return _error(422, f"file 1 ({files[0].filename or 'unnamed'}): {exc.reason}")
        if isinstance(out, Response):
            return out
        return Response(out, media_type="image/png")

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app
