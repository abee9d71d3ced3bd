"""``mpft predict``: score images with a trained detector, streaming one row per image."""

from __future__ import annotations

import logging
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import typer

from mpft.cli import _app as app
from mpft.engines import DEFAULT_ENGINE

log = logging.getLogger(__name__)

#: A progress bar is only worth drawing for more images than this.
PROGRESS_MIN_IMAGES = 8

_FORMAT_HELP = (
    "table (aligned text), jsonl (one JSON object per line, streamed: the choice for long runs), "
    "csv (streamed, with header), json (one array, written when the run ends) or parquet (a folder of "
    "part files, --output DIR; needs the ray extra or pyarrow)."
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
    resume: bool = typer.Option(
        False, "--resume", help="Append to --output and skip the inputs it already has a row for (jsonl, csv, "
        "parquet): a run killed at 60% scores the other 40% only. Use the same PATHs as the first run.",
    ),
    engine: str = typer.Option(
        DEFAULT_ENGINE, "--engine", help="local (this process; --workers decode in parallel) or ray (a Ray Data "
        "pipeline: decoding tasks, --actors scoring actors; pip install 'mpft[ray]'). Same rows either way.",
    ),
    address: str | None = typer.Option(
        None, "--address", help="--engine ray: the Ray cluster to join (e.g. ray://head:10001 or auto). "
        "Default: start Ray on this machine. Inputs must be readable at the same path on every node.",
        show_default=False,
    ),
    actors: int = typer.Option(1, "--actors", help="--engine ray: scoring actors (each loads the detector once)."),
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

    Large runs: mpft predict archive/ --format parquet -o scores.parquet --resume --engine ray --actors 2
    """
    from mpft.engines import DetectorSpec, check_engine
    from mpft.errors import ConfigError
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
    if actors < 1:
        raise ConfigError(f"--actors must be >= 1, got {actors}")
    engine = check_engine(engine)
    if engine != "ray" and (address is not None or actors != 1):
        raise ConfigError("--address and --actors need --engine ray")
    if engine == "ray" and workers:
        raise ConfigError("--workers is for --engine local; with --engine ray, Ray tasks decode (scale with --actors)")
    if views is not None:
        from mpft.views import parse_views

        parse_views(views)  # fail before the model loads
    if max_pixels is not None and max_pixels < 1:
        raise ConfigError(f"--max-pixels must be >= 1, got {max_pixels}")
    _check_output(output, fmt, resume)  # before the model loads and the inputs are scanned, not after
    if "-" in paths and sys.stdin.isatty():
        log.info("reading image paths from stdin, one per line (end with Ctrl-D)")
    inputs = expand_inputs(paths, recursive=recursive, stdin=sys.stdin if "-" in paths else None)
    if not inputs:
        raise ConfigError(
            f"no input images found in {' '.join(paths)}; give image files, folders holding images, "
            "glob patterns or - with paths on stdin"
        )

    spec = DetectorSpec(None if model is None else str(model), device, precision, views, threshold, band,
                        max_pixels)
    det = spec.load()
    todo, append = inputs, False
    if resume:
        from mpft.predict_resume import read_resume, remaining

        state = read_resume(output, fmt)
        state.check_model(det.model_id, output)
        todo, append = remaining(inputs, state), output.exists() and output.stat().st_size > 0
        if not state.empty:
            log.info("resuming: %d of %d inputs already have a row in %s; scoring the other %d",
                     len(inputs) - len(todo), len(inputs), output, len(todo))

    predictions = _engine_iter(engine, spec, det, todo, batch_size=batch_size, workers=workers, actors=actors,
                               address=address)
    stream = _open_output(output, fmt, append)
    counts: Counter[str] = Counter()
    try:
        counts = _run(det, predictions, len(todo), fmt, stream, widest=max(len(str(p)) for p in inputs),
                      output=output, append=append)
    finally:
        if stream is not None and output:
            stream.close()
    summary = ", ".join(f"{counts[v]} {v}" for v in ("generated", "real", "uncertain", "error") if counts[v])
    skipped = f" ({len(inputs) - len(todo)} already in {output})" if len(todo) < len(inputs) else ""
    typer.echo(f"{sum(counts.values())} inputs ({det.model_id}): {summary or 'nothing to score'}{skipped}", err=True)
    if counts["error"]:
        raise typer.Exit(code=1)


def _check_output(output: Path | None, fmt: str, resume: bool) -> None:
    """--output, --format and --resume agree, and the output can be written (nothing created yet)."""
    from mpft.errors import ConfigError
    from mpft.fsutil import require_writable_dir, require_writable_file
    from mpft.predict_io import FOLDER_FORMATS, require_pyarrow
    from mpft.predict_resume import RESUMABLE_FORMATS

    if resume and output is None:
        raise ConfigError("--resume appends to a file: give it with --output FILE")
    if resume and fmt not in RESUMABLE_FORMATS:
        raise ConfigError(f"--resume needs --format {', '.join(RESUMABLE_FORMATS)} (got {fmt}): "
                          "those write each row as it is scored")
    if fmt in FOLDER_FORMATS:
        if output is None:
            raise ConfigError(f"--format {fmt} writes a folder of part files: give it with --output DIR")
        require_pyarrow()
        require_writable_dir(output, "--output")
        if not resume and output.is_dir() and any(output.glob("part-*.parquet")):
            raise ConfigError(f"--output {output} already holds parquet parts: add --resume to continue that run, "
                              "or choose another folder")
    elif output:
        require_writable_file(output, "--output")


def _open_output(output: Path | None, fmt: str, append: bool):
    """The text stream rows go to (None for a folder format, which writes its own files)."""
    from mpft.errors import ConfigError
    from mpft.predict_io import FOLDER_FORMATS

    if fmt in FOLDER_FORMATS:
        return None
    if not output:
        return sys.stdout
    try:
        # backslashreplace: a file name that is not valid UTF-8 must not abort the run mid-way
        return open(output, "a" if append else "w", newline="", encoding="utf-8",  # noqa: SIM115
                    errors="backslashreplace")
    except OSError as exc:
        raise ConfigError(f"cannot write --output {output}: {exc.strerror or exc}") from None


def _engine_iter(engine: str, spec, det, inputs: list[Path], *, batch_size: int, workers: int, actors: int,
                 address: str | None) -> Iterator:
    """Predictions for ``inputs`` in order, from the chosen engine."""
    if not inputs:
        return iter(())
    if engine == "ray":
        from mpft.engines.ray_data import predict_iter

        return predict_iter(spec, det.preprocessor, inputs, batch_size=batch_size, actors=actors, address=address)
    return det.predict_iter(inputs, batch_size=batch_size, workers=workers)


def _run(det, predictions: Iterator, total: int, fmt: str, stream, *, widest: int, output: Path | None,
         append: bool) -> Counter[str]:
    """Write each prediction as soon as it arrives; returns counts per verdict."""
    from tqdm import tqdm

    from mpft.predict_io import make_writer

    writer = make_writer(fmt, stream, path_width=widest, model_width=len(det.model_id), append=append,
                         folder=output)
    show = total > PROGRESS_MIN_IMAGES and sys.stderr.isatty()
    bar = tqdm(total=total, file=sys.stderr, unit="img", disable=not show, leave=False)
    # rows going to the same terminal as the bar must clear it first, or they garble each other
    shares_terminal = show and stream is sys.stdout and sys.stdout.isatty()
    counts: Counter[str] = Counter()
    try:
        for pred in predictions:
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
        log.warning("interrupted after %d of %d images; their rows%s", done, total, where)
        raise
    finally:
        bar.close()
        # json writes its array here, so an interrupted json run still leaves the finished rows
        writer.close()
    return counts
