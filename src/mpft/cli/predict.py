"""``mpft predict``: score images with a trained detector, streaming one row per image."""

from __future__ import annotations

import logging
import sys
from collections import Counter
from pathlib import Path

import typer

from mpft.cli import app

log = logging.getLogger(__name__)

#: A progress bar is only worth drawing for more images than this.
PROGRESS_MIN_IMAGES = 8

_FORMAT_HELP = (
    "table (aligned text), jsonl (one JSON object per line, streamed: the choice for long runs), "
    "csv (streamed, with header) or json (one array, written when the run ends)."
)


@app.command("predict")
def predict_cmd(
    # Optional and checked here: typer's own usage errors bypass main()'s exit-code mapping.
    paths: list[str] | None = typer.Argument(
        None, help="Image files, folders (images found by content), glob patterns (quote them), or - to read "
        "paths from stdin, one per line.", show_default=False, metavar="PATH",
    ),
    model: Path | None = typer.Option(
        None, "--model", "-m", show_default=False,
        help="Checkpoint directory (e.g. RUN_DIR/best). Default: the detector shipped with mpft.",
    ),
    fmt: str = typer.Option("table", "--format", "-f", help=_FORMAT_HELP),
    band: float | None = typer.Option(
        None, "--band", help="Verdict is 'uncertain' when |probability - threshold| < BAND. Default: the "
        "checkpoint's.", show_default=False,
    ),
    threshold: float | None = typer.Option(
        None, "--threshold", "-t", help="Probability at or above which an image is 'generated'. Default: the "
        "checkpoint's (calibrated) threshold.", show_default=False,
    ),
    batch_size: int = typer.Option(16, "--batch-size", "-b", help="Images scored per forward pass."),
    workers: int = typer.Option(0, "--workers", "-w", help="Decoding processes (0: decode inline)."),
    recursive: bool = typer.Option(True, "--recursive/--no-recursive", help="Descend into sub-folders."),
    output: Path | None = typer.Option(
        None, "--output", "-o", help="Write results to FILE instead of stdout.", show_default=False,
    ),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda[:N]."),
    max_pixels: int | None = typer.Option(
        None, "--max-pixels", help="Largest image (width x height) decoded; larger ones get an error row. Default "
        "64000000 (64 MP, ~256 MB of pixels per decoding image). A 108 MP phone photo needs 108000000.",
        show_default=False,
    ),
    views: str = typer.Option(
        None,
        "--views",
        help="Which crops are scored and how they combine: center, grid:N (N x N native-resolution crops over "
        "the image), whole (resized whole image), grid:N+whole; @mean (default) or @max. Default: the model's own.",
    ),
    precision: str = typer.Option(
        "fp32", "--precision",
        help="fp32 (as trained); bf16 (bf16 autocast: on CPUs with native bf16, AVX512-BF16 or AMX, ~1.8x faster "
        "with scores within ~0.005 of fp32; elsewhere emulated, slower than fp32); auto (bf16 where the CPU has "
        "native bf16, else fp32); int8 (CPU only, ~2x faster, approximate: scores move by up to ~0.07). "
        "See docs/performance.md.",
    ),
) -> None:
    """Say whether images are AI-generated: path, P(generated), verdict, model id, error, notes.

    Exit codes: 0 all images scored; 1 some inputs could not be read (each has an error row);
    2 bad usage or no inputs found; 5 the checkpoint cannot be loaded.

    Example: mpft predict photos/ 'downloads/*.jpg' --model runs/x/best --format jsonl -o results.jsonl
    """
    from mpft.errors import ConfigError
    from mpft.fsutil import require_writable_file
    from mpft.precision import precision_device
    from mpft.predict_io import check_decision, check_format, expand_inputs

    if not paths:
        raise ConfigError("no PATH given; name image files, folders, globs, or - to read paths from stdin")
    fmt = check_format(fmt)
    check_decision(threshold, band)
    device = precision_device(precision, device)
    if batch_size < 1:
        raise ConfigError(f"--batch-size must be >= 1, got {batch_size}")
    if workers < 0:
        raise ConfigError(f"--workers must be >= 0, got {workers}")
    if views is not None:
        from mpft.views import parse_views

        parse_views(views)  # fail before the model loads
    if max_pixels is not None and max_pixels < 1:
        raise ConfigError(f"--max-pixels must be >= 1, got {max_pixels}")
    if output:
        # before the model loads and the inputs are scanned, not after
        require_writable_file(output, "--output")
    if "-" in paths and sys.stdin.isatty():
        log.info("reading image paths from stdin, one per line (end with Ctrl-D)")
    inputs = expand_inputs(paths, recursive=recursive, stdin=sys.stdin if "-" in paths else None)
    if not inputs:
        raise ConfigError(
            f"no input images found in {' '.join(paths)}; give image files, folders holding images, "
            "glob patterns or - with paths on stdin"
        )

    from mpft.detector import Detector

    det = Detector.load(model, device=device, precision=precision, views=views)
    if threshold is not None:
        det.threshold = threshold
    if band is not None:
        det.set_band(band)
    if max_pixels is not None:
        det.max_pixels = max_pixels

    try:
        # backslashreplace: a file name that is not valid UTF-8 must not abort the run mid-way
        stream = (open(output, "w", newline="", encoding="utf-8", errors="backslashreplace")  # noqa: SIM115
                  if output else sys.stdout)
    except OSError as exc:
        raise ConfigError(f"cannot write --output {output}: {exc.strerror or exc}") from None
    counts: Counter[str] = Counter()
    try:
        counts = _run(det, inputs, fmt, stream, batch_size=batch_size, workers=workers, output=output)
    finally:
        if output:
            stream.close()
    summary = ", ".join(f"{counts[v]} {v}" for v in ("generated", "real", "uncertain", "error") if counts[v])
    typer.echo(f"{sum(counts.values())} inputs ({det.model_id}): {summary}", err=True)
    if counts["error"]:
        raise typer.Exit(code=1)


def _run(det, inputs: list[Path], fmt: str, stream, *, batch_size: int, workers: int,
         output: Path | None) -> Counter[str]:
    """Score ``inputs`` and write each row as soon as its batch is done; returns counts per verdict."""
    from tqdm import tqdm

    from mpft.predict_io import make_writer

    widest = max(len(str(p)) for p in inputs)
    writer = make_writer(fmt, stream, path_width=widest, model_width=len(det.model_id))
    show = len(inputs) > PROGRESS_MIN_IMAGES and sys.stderr.isatty()
    bar = tqdm(total=len(inputs), file=sys.stderr, unit="img", disable=not show, leave=False)
    # rows going to the same terminal as the bar must clear it first, or they garble each other
    shares_terminal = show and stream is sys.stdout and sys.stdout.isatty()
    counts: Counter[str] = Counter()
    try:
        for pred in det.predict_iter(inputs, batch_size=batch_size, workers=workers):
            if shares_terminal:
                with tqdm.external_write_mode(file=sys.stdout):
                    writer.write(pred)
            else:
                writer.write(pred)
            counts[pred.verdict] += 1
            bar.update(1)
    except KeyboardInterrupt:
        done = sum(counts.values())
        where = f" are in {output}" if output else " were written"
        log.warning("interrupted after %d of %d images; their rows%s", done, len(inputs), where)
        raise
    finally:
        bar.close()
        # json writes its array here, so an interrupted json run still leaves the finished rows
        writer.close()
    return counts
