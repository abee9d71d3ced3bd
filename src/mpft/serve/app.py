"""The HTTP service: a thin, hardened layer over :class:`mpft.detector.Detector`.

Routes (in :mod:`mpft.serve.routes`): ``GET /`` (drop-an-image page), ``POST /api/v1/predict``,
``POST /api/v1/explain``, ``GET /healthz``, ``GET /readyz``, OpenAPI at ``/docs``. This module
builds the app: model state, the batching queue, error handlers, middleware, static files.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from mpft import __version__
from mpft.detector import Detector
from mpft.serve.batching import BatchQueue
from mpft.serve.middleware import AccessLogMiddleware
from mpft.serve.routes import error_response, register_routes
from mpft.serve.settings import ServeSettings
from mpft.serve.state import ModelState
from mpft.serve.upload import UploadAborted

__all__ = ["CLIENT_CLOSED", "STATIC_DIR", "ModelState", "create_app"]

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).resolve().parent / "static"

# nginx's "client closed request": what the access log records for a client that went away
# mid-request. Nothing reaches the client; the status exists for the log only.
CLIENT_CLOSED = 499


def create_app(detector_loader: Callable[[], Detector], settings: ServeSettings | None = None) -> FastAPI:
    """Build the service; ``detector_loader`` runs once, in a background thread, at startup.

    Args:
        detector_loader: returns the detector to serve (e.g. ``lambda: Detector.load(path)``);
            tests pass a tiny or fake one. It needs ``predict(list[bytes], batch_size=)``,
            ``model_id``, ``threshold`` and a settable ``max_pixels``.
        settings: limits (see :class:`ServeSettings`); defaults when None.

    Returns:
        The FastAPI app; ``app.state.model`` is its :class:`ModelState`, ``app.state.queue``
        its :class:`~mpft.serve.batching.BatchQueue`.
    """
    settings = settings or ServeSettings()
    queue = BatchQueue(workers=settings.max_concurrency, batch_size=settings.batch_size,
                       batch_window_s=settings.batch_window_s, queue_timeout_s=settings.queue_timeout_s,
                       retry_after_s=settings.retry_after_s)
    state = ModelState(detector_loader, settings, on_measured=queue.observe_predict)

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        queue.start()
        state.start()
        try:
            yield
        finally:
            await queue.stop()

    app = FastAPI(
        title="mpft",
        version=__version__,
        description="Detect AI-generated images (CLIP fine-tuned with Texture-Aware Masking). "
        "Uploads are held in memory only and never logged.",
        lifespan=lifespan,
    )
    app.state.model = state
    app.state.queue = queue
    app.state.settings = settings
    app.add_middleware(AccessLogMiddleware)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return error_response(exc.status_code, exc.detail, getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(422, exc.errors())

    @app.exception_handler(UploadAborted)
    @app.exception_handler(ClientDisconnect)
    async def _client_gone(request: Request, exc: Exception) -> Response:
        # A client event, not a server fault: one line, no traceback, and no 500 in the access log.
        what = str(exc) if isinstance(exc, UploadAborted) else "client disconnected before the response"
        log.warning("%s %s: %s", request.method, request.url.path, what)
        return Response(status_code=CLIENT_CLOSED)

    @app.exception_handler(Exception)
    async def _unexpected(_request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error", exc_info=exc)
        return error_response(500, "internal server error (see the server log)")

    register_routes(app, state, queue, settings, STATIC_DIR)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app
