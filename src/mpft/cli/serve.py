"""``mpft serve``: the web page and JSON API, run with uvicorn."""

from __future__ import annotations

import logging
import socket
import sys
from pathlib import Path

import typer

from mpft.cli import _app as app
from mpft.config import kwarg_default
from mpft.data.limits import DEFAULT_MAX_PIXELS
from mpft.detector import Detector
from mpft.serve.settings import MIB, ServeSettings

# every server default is ServeSettings' (the CLI's units: MiB, ms)
_S = ServeSettings()

_LOOPBACK = ("127.0.0.1", "localhost", "::1")


def _bind(host: str, port: int) -> socket.socket:
    """Bind the listening socket here so a taken port is a clear ServeError, not a uvicorn exit."""
    from mpft.errors import ServeError

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ServeError(f"cannot resolve --host {host!r}: {exc}") from None
    family, _, _, _, addr = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(addr)
    except OSError as exc:
        sock.close()
        raise ServeError(
            f"cannot listen on {host}:{port}: {exc.strerror or exc}; "
            "choose another --port or stop the other server"
        ) from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def _access_log_to_stderr() -> None:
    # One bare JSON object per line, not wrapped by the CLI's rich handler.
    from mpft.serve.middleware import ACCESS_LOGGER

    logger = logging.getLogger(ACCESS_LOGGER)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.handlers[:] = [handler]
    logger.setLevel(logging.INFO)
    logger.propagate = False


@app.command("serve")
def serve_cmd(
    model: Path = typer.Option(
        kwarg_default(Detector.load, "path"), "--model", "-m", help="Checkpoint dir (default: the shipped detector)."
    ),
    host: str = typer.Option("127.0.0.1", help="Interface to listen on (0.0.0.0 exposes it to the network)."),
    port: int = typer.Option(8000, help="TCP port."),
    max_upload_mb: float = typer.Option(
        _S.max_upload_bytes / MIB, help="Largest request body in MiB (all files); 413 above."
    ),
    max_pixels: int = typer.Option(
        None, help=f"Largest width*height decoded (default {DEFAULT_MAX_PIXELS / 1e6:g} MP); 422 above."
    ),
    max_files: int = typer.Option(_S.max_files, help="Most images in one /api/v1/predict request."),
    max_concurrency: int = typer.Option(_S.max_concurrency, help="Model calls (batches) running at once."),
    queue_timeout: float = typer.Option(
        _S.queue_timeout_s, help="Longest expected wait in the model queue a request is admitted with, s; 503 above."),
    batch_size: int = typer.Option(
        _S.batch_size, help="Most images per forward pass; concurrent requests share one."
    ),
    batch_window_ms: float = typer.Option(
        _S.batch_window_s * 1000.0, help="How long an idle model waits for a batch to fill, ms."
    ),
    header_timeout: float = typer.Option(
        _S.header_timeout_s, help="Seconds a connection has to send a request's headers."
    ),
    body_timeout: float = typer.Option(_S.body_timeout_s, help="Seconds a request has to send its body; 408 after."),
    idle_timeout: float = typer.Option(_S.idle_timeout_s, help="Seconds an idle keep-alive connection stays open."),
    max_connections: int = typer.Option(_S.max_connections, help="Open connections at once; one more gets 503."),
    workers_threads: int = typer.Option(
        None, "--workers-threads", help="Torch CPU threads for inference (default: torch's choice)."
    ),
    device: str = typer.Option(kwarg_default(Detector.load, "device"), help="auto, cpu or cuda."),
    views: str = typer.Option(
        kwarg_default(Detector.load, "views"),
        "--views",
        help="Which crops are scored and how they combine: center, grid:N (N x N native-resolution crops over "
        "the image), whole (resized whole image), grid:N+whole; @mean (default) or @max. Default: the model's own.",
    ),
    precision: str = typer.Option(kwarg_default(Detector.load, "precision"),
                                  help="fp32; bf16 (autocast: ~1.8x faster on CPUs with native bf16, "
                                  "AVX512-BF16 or AMX; slower than fp32 elsewhere); auto (bf16 on those CPUs, else "
                                  "fp32); int8 (CPU only, approximate). See docs/performance.md."),
) -> None:
    """Serve the detector: a drop-an-image web page at / and a JSON API (docs at /docs).

    Example: mpft serve --model runs/x/best --port 8000, then open http://127.0.0.1:8000/
    """
    import uvicorn

    from mpft.checkpoint import read_config
    from mpft.detectors import DEFAULT_DETECTOR_DIR
    from mpft.errors import CheckpointError, ConfigError
    from mpft.serve import create_app
    from mpft.serve.server import uvicorn_config

    if port < 0 or port > 65535:
        raise ConfigError(f"--port must be in 0..65535, got {port}")
    from mpft.precision import precision_device

    device = precision_device(precision, device)  # a bad --precision fails now, not in the loader thread
    if views is not None:
        from mpft.views import parse_views

        parse_views(views)  # likewise a bad --views
    settings = ServeSettings.from_mb(
        max_upload_mb,
        max_pixels=max_pixels if max_pixels is not None else DEFAULT_MAX_PIXELS,
        max_files=max_files,
        max_concurrency=max_concurrency,
        queue_timeout_s=queue_timeout,
        batch_size=batch_size,
        batch_window_s=batch_window_ms / 1000.0,
        header_timeout_s=header_timeout,
        body_timeout_s=body_timeout,
        idle_timeout_s=idle_timeout,
        max_connections=max_connections,
    )
    # Fail fast on a wrong path; the slow part (building the backbone) happens after startup.
    if model is None and not (DEFAULT_DETECTOR_DIR / "config.json").is_file():
        raise CheckpointError(
            f"no default detector is installed at {DEFAULT_DETECTOR_DIR}; pass --model RUN_DIR/best"
        )
    read_config(model if model is not None else DEFAULT_DETECTOR_DIR)
    if workers_threads is not None:
        if workers_threads < 1:
            raise ConfigError(f"--workers-threads must be >= 1, got {workers_threads}")
        import torch

        torch.set_num_threads(workers_threads)

    log = logging.getLogger("mpft.serve")
    if host not in _LOOPBACK:
        log.warning("listening on %s: the service is reachable from other machines", host)
    sock = _bind(host, port)
    _access_log_to_stderr()
    application = create_app(lambda: Detector.load(model, device=device, precision=precision, views=views), settings)
    shown = f"[{host}]" if ":" in host else host
    typer.echo(f"mpft serve: http://{shown}:{sock.getsockname()[1]}/ (model loads in the background; "
               "GET /readyz says when it is ready)", err=True)
    config = uvicorn_config(application, settings, timeout_graceful_shutdown=5)
    uvicorn.Server(config).run(sockets=[sock])
