"""``mpft eval``: per-generator metrics of a detector, robustness sweeps and report files.

A thin wrapper over :func:`mpft.evaluation.evaluate`; all logic lives there.
"""

from __future__ import annotations

import logging
from pathlib import Path

import typer

from mpft.cli import _app as app
from mpft.cli.runconfig import config_option
from mpft.config import field_default
from mpft.evaluation.settings import DEFAULT_SWEEP_N_BOOT, EvalSettings

log = logging.getLogger(__name__)


def _is_perturbation_spec(item: str) -> bool:
    """Whether ``item`` is a perturbation spec or preset in the grammar of ``parse_perturbations``."""
    from mpft.data.transforms import parse_perturbations
    from mpft.errors import ConfigError

    try:
        parse_perturbations([item])
    except ConfigError:
        return False
    return True


def split_perturb_args(data: list[str], perturb: list[str]) -> tuple[list[str], list[str]]:
    """Move perturbation specs that the shell left among DATA back to ``--perturb``.

    ``--perturb jpeg:95,75 blur:1,2`` is the documented form, but an option takes one value,
    so ``blur:1,2`` lands among the DATA arguments. When ``--perturb`` was given, a DATA item
    that is not an existing path and parses as a spec (``kind:values`` or a preset name, judged by
    :func:`mpft.data.transforms.parse_perturbations`) is a perturbation. Each ``--perturb`` value
    may also hold several specs separated by spaces.

    Returns:
        (data paths, perturbation specs).
    """
    specs = [tok for value in perturb for tok in value.split()]
    if not specs:
        return data, []
    paths = []
    for item in data:
        if not Path(item).exists() and _is_perturbation_spec(item):
            specs.append(item)
        else:
            paths.append(item)
    return paths, specs


def _d(name: str):
    """The default of EvalSettings field ``name``: each option's default exists once, there."""
    return field_default(EvalSettings, name)


@app.command("eval")
def eval_cmd(
    run: Path = typer.Argument(..., help="Checkpoint directory, or a training run directory with best/."),
    data: list[str] = typer.Argument(
        ..., help="Dataset roots (any layout; a root with splits is evaluated on val/), or with --real "
        "folders of generated images (generator = folder name)."
    ),
    out: Path = typer.Option(..., "--out", "-o", help="Directory for metrics.json/csv, report.md, "
                             "scores.csv and plots."),
    layout: str = typer.Option(_d("layout"), help="genimage, ufd, realfake, csv or auto."),
    real: Path = typer.Option(_d("real"), "--real", help="A folder of real images shared by every generator "
                              "(UniversalFakeDetect style); each DATA is then a folder of generated images."),
    calibrate_on: Path = typer.Option(_d("calibrate_on"), "--calibrate-on", help="Choose the threshold on this "
                                      "data's real images (--target-fpr false positives); default: the "
                                      "checkpoint's threshold."),
    target_fpr: float = typer.Option(_d("target_fpr"), "--target-fpr", help="False-positive rate for "
                                     "--calibrate-on."),
    oracle: bool = typer.Option(_d("oracle"), "--oracle", help="Also report the best threshold on the test labels "
                                "(an upper bound, labelled 'not a result')."),
    perturb: list[str] = typer.Option(list(_d("perturb")), "--perturb", help="Robustness sweep, e.g. --perturb "
                                      "jpeg:95,75,50 blur:1,2,3, or the preset genimage-degraded."),
    normalize_format: str = typer.Option(_d("normalize_format"), "--normalize-format", help="jpeg:Q or png: also "
                                         "re-run with every image re-encoded the same way and compare against "
                                         "the clean run."),
    mask: str = typer.Option(_d("mask"), "--mask", help="Analysis only: mask patches at inference, e.g. tam:0.5."),
    limit: int = typer.Option(_d("limit"), "--limit", help="At most N images per class per generator (seeded)."),
    batch_size: int = typer.Option(_d("batch_size"), "--batch-size", help="Images per forward pass."),
    workers: int = typer.Option(_d("workers"), "--workers", help="DataLoader worker processes."),
    device: str = typer.Option(_d("device"), "--device", help="auto, cpu or cuda[:N]."),
    precision: str = typer.Option(_d("precision"), "--precision", help="fp32; bf16 (autocast: faster only on CPUs "
                                  "with native bf16, AVX512-BF16 or AMX); auto (bf16 on those CPUs, else fp32); "
                                  "int8 (CPU only, approximate). Speed and accuracy of each: docs/performance.md."),
    views: str = typer.Option(
        _d("views"),
        "--views",
        help="Which crops are scored and how they combine: center, grid:N, whole, grid:N+whole, @mean or @max "
        "(default: the model's own; see docs/predict.md).",
    ),
    seed: int = typer.Option(_d("seed"), "--seed", help="Seed of --limit and of the bootstrap."),
    n_boot: int = typer.Option(_d("n_boot"), "--n-boot", help="Bootstrap resamples for the clean AP/AUC intervals "
                               "(0 skips them)."),
    sweep_n_boot: int = typer.Option(_d("sweep_n_boot"), "--sweep-n-boot", help="Bootstrap resamples for "
                                     f"perturbed and normalised conditions (default: {DEFAULT_SWEEP_N_BOOT}, or "
                                     "--n-boot if smaller)."),
    as_json: bool = typer.Option(False, "--json", help="Print metrics.json to stdout instead of the table."),
    config: Path | None = config_option(),
) -> None:
    """Evaluate a detector per generator: accuracy (real/fake), AP, AUC, TPR@FPR, with intervals.

    Example: mpft eval runs/x ../shared/data/genimage --perturb jpeg:95,75,50 blur:1,2,3 --out reports/x

    Options may come from a JSON file: mpft eval --config eval.json (command-line options override it).
    """
    from rich.console import Console

    from mpft.evaluation import evaluate
    from mpft.evaluation.console import console_table
    from mpft.fsutil import require_writable_dir

    # a bad report directory must fail now, not after every image is scored
    require_writable_dir(out, "--out")
    paths, specs = split_perturb_args(list(data), list(perturb))
    settings = EvalSettings(
        layout=layout,
        real=real,
        calibrate_on=calibrate_on,
        target_fpr=target_fpr,
        oracle=oracle,
        perturb=tuple(specs),
        normalize_format=normalize_format,
        mask=mask,
        limit=limit,
        batch_size=batch_size,
        workers=workers,
        device=device,
        precision=precision,
        views=views,
        seed=seed,
        n_boot=n_boot,
        sweep_n_boot=sweep_n_boot,
    )
    report = evaluate(run, paths, out=out, settings=settings)
    if report is None:  # a torchrun rank other than 0: rank 0 reports
        return
    if as_json:
        typer.echo((out / "metrics.json").read_text(encoding="utf-8"), nl=False)
    else:
        console = Console()
        console.print(console_table(report))
        if len(report.conditions) > 1:
            console.print(f"{len(report.conditions) - 1} more conditions in {out / 'report.md'}")
        console.print(f"report written to {out}")
    if report.meta.skipped:
        by_reason = ", ".join(f"{r}: {n}" for r, n in list(report.meta.skipped_by_reason.items())[:5])
        typer.echo(f"warning: {len(report.meta.skipped)} files skipped ({by_reason})", err=True)
