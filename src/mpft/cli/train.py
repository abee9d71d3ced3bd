"""``mpft train``: MPFT fine-tuning with Texture-Aware Masking."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import typer

from mpft.cli import app
from mpft.cli.runconfig import config_option

_TUNE_HELP = "linear (frozen CLIP + linear head, UnivFD), last-k, lora, full."


def parse_pair(text: str, name: str, cast=float) -> tuple:
    try:
        lo, hi = (cast(v) for v in text.split(","))
    except ValueError:
        from mpft.errors import ConfigError

        raise ConfigError(f"{name} takes LO,HI (e.g. 30,100), got {text!r}") from None
    return lo, hi


def parse_blocks(text: str) -> tuple[int, ...]:
    """'1-12' / '6,9,12' / '' -> block numbers (1-based)."""
    out: list[int] = []
    try:
        for part in filter(None, (p.strip() for p in text.split(","))):
            lo, sep, hi = part.partition("-")
            out += list(range(int(lo), int(hi) + 1)) if sep else [int(lo)]
    except ValueError:
        from mpft.errors import ConfigError

        raise ConfigError(f"--feature-blocks takes block numbers like '1-12' or '6,9,12', got {text!r}") from None
    return tuple(out)


@app.command("train")
def train_cmd(
    data: list[Path] = typer.Argument(
        ...,
        help="Training data: one or more GenImage / UFD / real-fake folders or CSV manifests "
        "(a folder of only real or only generated images is fine when another argument has the other class); "
        "their images are pooled (see --balance).",
    ),
    out: Path = typer.Option(
        ..., "--out", "-o", help="Run directory: best/, last/ checkpoints and the resume state resume/."
    ),
    layout: str = typer.Option("auto", help="genimage, ufd, realfake, csv or auto."),
    val: Path = typer.Option(None, help="Validation data (default: the data's val split, if it has one)."),
    validate: bool = typer.Option(True, "--validate/--no-validate", help="Validate after each epoch."),
    backbone: str = typer.Option("clip-vit-b16", help="Backbone spec (see `mpft backbone list`)."),
    tune: str = typer.Option("last-k", help=_TUNE_HELP),
    layers: int = typer.Option(4, help="K for --tune last-k: how many final blocks train."),
    lora_rank: int = typer.Option(8, help="LoRA rank for --tune lora."),
    feature_blocks: str = typer.Option(
        "",
        help="Blocks whose CLS tokens feed the head, e.g. '1-12' or '6,9,12' (1 = first block; intermediate "
        "blocks keep low-level traces, RINE). Empty: the final embedding.",
    ),
    mask: str = typer.Option("tam", help="Patch masking during training: tam, random, inverse, none."),
    mask_ratio: float = typer.Option(0.25, help="rho: fraction of patches masked (0.25: see docs/benchmarks.md)."),
    texture: str = typer.Option(
        "gradient", help="Texture measure for TAM: gradient, variance, laplacian, diff."
    ),
    mask_temperature: float = typer.Option(0.0, help="T > 0 samples TAM masks from softmax(score/T)."),
    mask_apply: str = typer.Option("drop", help="drop (remove tokens: cheaper) or fill (zero the pixels)."),
    shots: int = typer.Option(None, help="Train on a class-balanced, seeded subset of N images."),
    epochs: int = typer.Option(2, help="Training epochs."),
    batch_size: int = typer.Option(16, help="Global batch size (split across torchrun processes)."),
    lr_head: float = typer.Option(1e-3, help="Learning rate of the head."),
    lr_backbone: float = typer.Option(
        None, help="Learning rate of the tuned backbone tensors (default 2e-5 for blocks, 5e-4 for LoRA adapters)."
    ),
    weight_decay: float = typer.Option(0.01, help="AdamW weight decay (not on biases and norms)."),
    warmup: float = typer.Option(0.1, help="Warm-up fraction of the steps before the cosine decay."),
    clip_grad: float = typer.Option(1.0, help="Gradient-norm clipping (0 disables)."),
    resize: bool = typer.Option(
        False,
        "--resize/--no-resize",
        help="Resize the shorter side to the input size "
        "before cropping (default: crop at native resolution, upscale only small images).",
    ),
    flip: bool = typer.Option(True, "--flip/--no-flip", help="Random horizontal flips."),
    blur_prob: float = typer.Option(0.0, help="Probability of Gaussian blur augmentation."),
    blur_sigma: str = typer.Option("0,3", help="Blur sigma range LO,HI."),
    jpeg_prob: float = typer.Option(0.0, help="Probability of JPEG re-encoding augmentation."),
    jpeg_quality: str = typer.Option("30,100", help="JPEG quality range LO,HI."),
    downscale_prob: float = typer.Option(
        0.0, help="Probability of a random downscale before the crop (both classes alike)."
    ),
    downscale_range: str = typer.Option("0.25,1", help="Downscale factor range LO,HI (never below the crop size)."),
    balance: str = typer.Option(
        "none",
        help="Sampling across pooled data: none (each image once per epoch), source (each data argument's real "
        "and generated images get equal shares), generator (each generator and each real source gets an equal "
        "share of its class).",
    ),
    views: str = typer.Option(
        "center",
        help="Views the trained detector scores at inference, recorded in the checkpoint: center, grid:N, "
        "whole, grid:N+whole, with @mean or @max (see docs/predict.md). Validation uses them too.",
    ),
    val_limit: int = typer.Option(
        200,
        help="Validate each epoch on a seeded subset of at most N images per class "
        "per generator (0 = all; `mpft eval` does the full test).",
    ),
    seed: int = typer.Option(0, help="Seed for subsets, augmentation, masks and initialisation."),
    workers: int = typer.Option(2, help="DataLoader worker processes."),
    device: str = typer.Option("auto", help="auto, cpu or cuda."),
    resume: bool = typer.Option(False, "--resume", help="Continue the interrupted run in --out."),
    config: Path | None = config_option(),
) -> None:
    """Fine-tune a CLIP detector with Texture-Aware Masking (the paper's MPFT).

    Example: mpft train ../shared/data/cifake_sd14 --shots 256 --tune last-k --mask tam --epochs 2 --out runs/x

    The same run from a file: mpft train --config run.json, with run.json
    {"data": ["../shared/data/cifake_sd14"], "shots": 256, "tune": "last-k", "epochs": 2, "out": "runs/x"}.
    """
    from mpft.data.transforms import Augment, PreprocessPolicy
    from mpft.fsutil import require_writable_dir
    from mpft.model import TuneConfig
    from mpft.tam import MaskConfig
    from mpft.training import TrainConfig, train

    # a bad run directory must fail now, not after an epoch of training
    require_writable_dir(out, "--out")
    cfg = TrainConfig(
        data=[str(d) for d in data],
        out=str(out),
        layout=layout,
        val=str(val) if val else None,
        validate=validate,
        backbone=backbone,
        tune=TuneConfig(
            strategy=tune,
            layers=layers,
            lora_rank=lora_rank,
            feature_blocks=parse_blocks(feature_blocks),
        ),
        mask=MaskConfig(
            strategy=mask, ratio=mask_ratio, texture=texture, temperature=mask_temperature, apply=mask_apply
        ),
        augment=Augment(
            flip=flip,
            blur_prob=blur_prob,
            blur_sigma=parse_pair(blur_sigma, "--blur-sigma"),
            jpeg_prob=jpeg_prob,
            jpeg_quality=parse_pair(jpeg_quality, "--jpeg-quality", int),
            downscale_prob=downscale_prob,
            downscale_range=parse_pair(downscale_range, "--downscale-range"),
        ),
        balance=balance,
        views=views,
        shots=shots,
        val_limit=val_limit,
        epochs=epochs,
        batch_size=batch_size,
        lr_head=lr_head,
        lr_backbone=lr_backbone,
        weight_decay=weight_decay,
        warmup=warmup,
        clip_grad=clip_grad,
        seed=seed,
        workers=workers,
        device=device,
        resume=resume,
        command="mpft " + shlex.join(sys.argv[1:]) if sys.argv else None,
    )
    cfg.preprocess = PreprocessPolicy(size=cfg.preprocess.size, resize=resize)
    result = train(cfg)
    if result.history:
        last = result.history[-1]
        val_txt = ""
        if "val" in last:
            v = last["val"]
            val_txt = f"; val acc {v['acc']:.4f} (real {v['real_acc']:.4f}, fake {v['fake_acc']:.4f}), AP {v['ap']:.4f}"
        typer.echo(f"done in {result.seconds:.1f} s ({result.images_per_second:.1f} img/s){val_txt}")
    typer.echo(f"best checkpoint: {result.best}\nlast checkpoint: {result.last}")
    if result.skipped:
        typer.echo(f"{len(result.skipped)} files skipped (see the log above)", err=True)
