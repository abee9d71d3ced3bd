"""``mpft explain``: one picture (and/or JSON) showing what TAM hides and what drove the score."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from mpft.cli import _app as app
from mpft.config import kwarg_default
from mpft.data.limits import DEFAULT_MAX_PIXELS
from mpft.detector import Detector
from mpft.explain import DEFAULT_DPI, EXPLAIN_METHODS, FIGSIZE, explain_image


@app.command("explain")
def explain_cmd(
    image: Path = typer.Argument(..., help="Image file to explain."),
    out: Path = typer.Option(None, "--out", "-o", help="PNG to write (panels: input, TAM map, evidence)."),
    model: Path = typer.Option(
        kwarg_default(Detector.load, "path"), "--model", "-m", help="Checkpoint dir (default: shipped one)."
    ),
    method: str = typer.Option(
        EXPLAIN_METHODS[0], help=f"Evidence method ({', '.join(EXPLAIN_METHODS)}: drop token groups)."
    ),
    group: int = typer.Option(
        kwarg_default(explain_image, "group"), help="Occlusion group side in patches (default ~7x7 groups)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the numbers as JSON on stdout."),
    dpi: int = typer.Option(
        DEFAULT_DPI, help=f"PNG resolution (the figure is {FIGSIZE[0]:g} x {FIGSIZE[1]:g} inches)."
    ),
    # "auto": a command-line user with a GPU gets it; Detector.load stays on the CPU unless asked
    device: str = typer.Option("auto", help="auto, cpu or cuda."),
    views: str = typer.Option(
        kwarg_default(Detector.load, "views"),
        "--views",
        help="Which crops are scored and how they combine: center, grid:N (N x N native-resolution crops over "
        "the image), whole (resized whole image), grid:N+whole; @mean (default) or @max. Default: the model's own.",
    ),
    max_pixels: int | None = typer.Option(
        None, "--max-pixels",
        help=f"Largest image (width x height) decoded. Default {DEFAULT_MAX_PIXELS} ({DEFAULT_MAX_PIXELS / 1e6:g} MP).",
        show_default=False,
    ),
) -> None:
    """Explain one prediction: model input, TAM texture map with masked patches, occlusion evidence.

    Example: mpft explain photo.jpg --model runs/x/best --out photo_explained.png
    """
    from mpft.errors import ConfigError
    from mpft.explain import render
    from mpft.fsutil import require_writable_file

    if method not in EXPLAIN_METHODS:
        raise ConfigError(f"--method {method!r} is not one of {EXPLAIN_METHODS}")
    if out is None and not as_json:
        raise ConfigError("nothing to do: give --out FILE.png, --json, or both")
    if dpi < 10:
        raise ConfigError(f"--dpi must be >= 10, got {dpi}")
    if views is not None:
        from mpft.views import parse_views

        parse_views(views)  # fail before the model loads
    if max_pixels is not None and max_pixels < 1:
        raise ConfigError(f"--max-pixels must be >= 1, got {max_pixels}")
    if out is not None:
        require_writable_file(out, "--out")  # before the model loads and the image is scored
    det = Detector.load(model, device=device, views=views)
    if max_pixels is not None:
        det.max_pixels = max_pixels
    expl = explain_image(det, image, group=group)
    if out is not None:
        render(expl, out, dpi=dpi)
    if as_json:
        typer.echo(json.dumps(expl.to_dict()))
    if out is not None:
        # stdout stays pure JSON when --json is given
        summary = f"P(generated) = {expl.probability:.4f}: {expl.verdict} (threshold {expl.threshold:.2f})"
        typer.echo(f"{summary}; wrote {out}", err=as_json)
    for note in expl.notes:
        typer.echo(f"note: {note}", err=True)
