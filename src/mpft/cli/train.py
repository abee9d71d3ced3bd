"""``mpft train``: MPFT fine-tuning with Texture-Aware Masking.

Every option's default is the settings field it fills (``_FIELDS``: option -> dataclass and field),
read from the dataclass, so a default exists once; ``--config`` of a checkpoint's ``config.json``
turns its recorded ``training.settings`` back into these options through the same table.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer

from mpft.cli import _app as app
from mpft.cli.runconfig import config_option
from mpft.config import field_default
from mpft.data.dataset import BALANCE_MODES
from mpft.data.transforms import Augment, PreprocessPolicy
from mpft.errors import ConfigError
from mpft.model import TuneConfig
from mpft.tam import MASK_STRATEGIES, TEXTURE_METHODS, MaskConfig
from mpft.training.config import BLOCK_LR, FEATURE_PRECISIONS, LORA_LR, TrainConfig
from mpft.views import ViewConfig, parse_views

_TUNE_HELP = "linear (frozen CLIP + linear head, UnivFD), last-k, lora, full."


def parse_pair(text: str, name: str, cast=float) -> tuple:
    try:
        lo, hi = (cast(v) for v in text.split(","))
    except ValueError:
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
        raise ConfigError(f"--feature-blocks takes block numbers like '1-12' or '6,9,12', got {text!r}") from None
    return tuple(out)


def _pair_text(v) -> str:
    return ",".join(f"{x:g}" if isinstance(x, float) else str(x) for x in v)


def _blocks_text(v) -> str:
    return ",".join(str(b) for b in v)


def _views_text(v) -> str:
    return (ViewConfig.from_dict(v) if isinstance(v, dict) else parse_views(v)).spec


# settings block of each dataclass in TrainConfig.to_dict() (None: the top level)
_SECTIONS: dict[type, str | None] = {TrainConfig: None, TuneConfig: "tune", MaskConfig: "mask",
                                     PreprocessPolicy: "preprocess", Augment: "augment"}
# option (parameter name) -> (dataclass, field, setting value -> option value); None: the value as is
_FIELDS: dict[str, tuple[type, str, Callable[[Any], Any] | None]] = {
    "data": (TrainConfig, "data", lambda v: [v] if isinstance(v, str) else list(v)),
    "out": (TrainConfig, "out", None),
    "layout": (TrainConfig, "layout", None),
    "val": (TrainConfig, "val", None),
    "validate": (TrainConfig, "validate", None),
    "backbone": (TrainConfig, "backbone", None),
    "tune": (TuneConfig, "strategy", None),
    "layers": (TuneConfig, "layers", None),
    "lora_rank": (TuneConfig, "lora_rank", None),
    "feature_blocks": (TuneConfig, "feature_blocks", _blocks_text),
    "mask": (MaskConfig, "strategy", None),
    "mask_ratio": (MaskConfig, "ratio", None),
    "texture": (MaskConfig, "texture", None),
    "mask_temperature": (MaskConfig, "temperature", None),
    "mask_apply": (MaskConfig, "apply", None),
    "shots": (TrainConfig, "shots", None),
    "exclude": (TrainConfig, "exclude", list),
    "train_views": (TrainConfig, "train_views", None),
    "feature_cache": (TrainConfig, "feature_cache", None),
    "feature_precision": (TrainConfig, "feature_precision", None),
    "epochs": (TrainConfig, "epochs", None),
    "batch_size": (TrainConfig, "batch_size", None),
    "lr_head": (TrainConfig, "lr_head", None),
    "lr_backbone": (TrainConfig, "lr_backbone", None),
    "weight_decay": (TrainConfig, "weight_decay", None),
    "warmup": (TrainConfig, "warmup", None),
    "clip_grad": (TrainConfig, "clip_grad", None),
    "resize": (PreprocessPolicy, "resize", None),
    "flip": (Augment, "flip", None),
    "blur_prob": (Augment, "blur_prob", None),
    "blur_sigma": (Augment, "blur_sigma", _pair_text),
    "jpeg_prob": (Augment, "jpeg_prob", None),
    "jpeg_quality": (Augment, "jpeg_quality", _pair_text),
    "downscale_prob": (Augment, "downscale_prob", None),
    "downscale_range": (Augment, "downscale_range", _pair_text),
    "balance": (TrainConfig, "balance", None),
    "views": (TrainConfig, "views", _views_text),
    "val_limit": (TrainConfig, "val_limit", None),
    "seed": (TrainConfig, "seed", None),
    "workers": (TrainConfig, "workers", None),
    "device": (TrainConfig, "device", None),
}
# recorded settings that no option sets: a checkpoint repeats only if they hold these values
_FIXED = {("tune", "lora_dropout"): field_default(TuneConfig, "lora_dropout")}


def _default(option: str) -> Any:
    """The option's default: the default of the settings field it fills, as the option spells it."""
    cls, name, to_option = _FIELDS[option]
    value = field_default(cls, name)
    return to_option(value) if to_option is not None and value is not None else value


def settings_to_options(settings: dict) -> dict[str, Any]:
    """A checkpoint's ``training.settings`` (``TrainConfig.to_dict()``) -> ``mpft train`` option values.

    Raises ConfigError for a recorded setting that no option can repeat (e.g. a LoRA alpha other than 2R).
    """
    cfg = TrainConfig.from_dict(settings)  # checks the keys and values once
    d = cfg.to_dict()
    out: dict[str, Any] = {}
    for option, (cls, name, to_option) in _FIELDS.items():
        section = _SECTIONS[cls]
        value = (d[section] if section else d)[name]
        out[option] = to_option(value) if to_option is not None and value is not None else value
    for (section, name), want in _FIXED.items():
        if d[section][name] != want:
            raise ConfigError(f"recorded setting {section}.{name} = {d[section][name]!r} has no option to repeat it")
    alpha, rank = d["tune"]["lora_alpha"], d["tune"]["lora_rank"]
    if alpha != 2.0 * rank:
        raise ConfigError(f"recorded LoRA alpha {alpha} is not 2 x rank {rank}: no option repeats it")
    return out


# on/off options spelled --name/--no-name
_SWITCHES = ("validate", "resize", "flip")


def train_command(cfg: TrainConfig) -> str:
    """The ``mpft train`` command line that repeats ``cfg`` (options at their default left out): what a
    checkpoint records as ``training.command``, whether the run came from the CLI, a --config file or code."""
    opts = settings_to_options(cfg.to_dict())
    parts = ["mpft", "train", *opts.pop("data")]
    resolved_lr = LORA_LR if cfg.tune.strategy == "lora" else BLOCK_LR
    for option, value in opts.items():
        required = option == "out"
        if not required and (value == _default(option) or (option == "lr_backbone" and value == resolved_lr)):
            continue
        flag = "--" + option.replace("_", "-")
        if option in _SWITCHES:
            parts.append(flag if value else f"--no-{option}")
        elif isinstance(value, list):
            for v in value:
                parts += [flag, str(v)]
        else:
            parts += [flag, str(value)]
    return shlex.join(parts)


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
    layout: str = typer.Option(_default("layout"), help="genimage, ufd, realfake, csv or auto."),
    val: Path = typer.Option(_default("val"), help="Validation data (default: the data's val split, if it has one)."),
    validate: bool = typer.Option(_default("validate"), "--validate/--no-validate", help="Validate after each epoch."),
    backbone: str = typer.Option(_default("backbone"), help="Backbone spec (see `mpft backbone list`)."),
    tune: str = typer.Option(_default("tune"), help=_TUNE_HELP),
    layers: int = typer.Option(_default("layers"), help="K for --tune last-k: how many final blocks train."),
    lora_rank: int = typer.Option(_default("lora_rank"), help="LoRA rank for --tune lora (alpha = 2 x rank)."),
    feature_blocks: str = typer.Option(
        _default("feature_blocks"),
        help="Blocks whose CLS tokens feed the head, e.g. '1-12' or '6,9,12' (1 = first block; intermediate "
        "blocks keep low-level traces, RINE). Empty: the final embedding.",
    ),
    mask: str = typer.Option(_default("mask"), help=f"Patch masking during training: {', '.join(MASK_STRATEGIES)}."),
    mask_ratio: float = typer.Option(
        _default("mask_ratio"), help="rho: fraction of patches masked (the default: see docs/benchmarks.md)."
    ),
    texture: str = typer.Option(_default("texture"), help=f"Texture measure for TAM: {', '.join(TEXTURE_METHODS)}."),
    mask_temperature: float = typer.Option(
        _default("mask_temperature"), help="T > 0 samples TAM masks from softmax(score/T)."
    ),
    mask_apply: str = typer.Option(
        _default("mask_apply"), help="drop (remove tokens: cheaper) or fill (zero the pixels)."
    ),
    shots: int = typer.Option(_default("shots"), help="Train on a class-balanced, seeded subset of N images."),
    exclude: list[Path] = typer.Option(
        _default("exclude"),
        help="Leave these images out of training and validation: an image path, or a CSV whose 'path' column "
        "lists them (relative to the CSV's folder), e.g. a benchmark fold's held-out images. Repeatable.",
    ),
    train_views: int = typer.Option(
        _default("train_views"),
        help="0: a fresh augmentation at every draw. N: N augmented views per image, fixed per seed; each draw "
        "trains on one of them. With --tune linear --mask none the backbone then runs once per view "
        "(the feature cache).",
    ),
    feature_cache: str = typer.Option(
        _default("feature_cache"),
        help="Where a frozen-backbone run (--tune linear --mask none, --train-views N) keeps its features: "
        "auto (OUT/features), a folder (shared between runs on the same images), or none (run the backbone "
        "at every step).",
    ),
    feature_precision: str = typer.Option(
        _default("feature_precision"),
        help=f"Precision of the backbone while it computes cached features: {', '.join(FEATURE_PRECISIONS)} "
        "(bf16 is faster on CPUs with AVX512-BF16 or AMX).",
    ),
    epochs: int = typer.Option(_default("epochs"), help="Training epochs."),
    batch_size: int = typer.Option(_default("batch_size"), help="Global batch size (split across torchrun processes)."),
    lr_head: float = typer.Option(_default("lr_head"), help="Learning rate of the head."),
    lr_backbone: float = typer.Option(
        _default("lr_backbone"),
        help=f"Learning rate of the tuned backbone tensors (default {BLOCK_LR:g} for blocks, {LORA_LR:g} for "
        "LoRA adapters).",
    ),
    weight_decay: float = typer.Option(_default("weight_decay"), help="AdamW weight decay (not on biases and norms)."),
    warmup: float = typer.Option(_default("warmup"), help="Warm-up fraction of the steps before the cosine decay."),
    clip_grad: float = typer.Option(_default("clip_grad"), help="Gradient-norm clipping (0 disables)."),
    resize: bool = typer.Option(
        _default("resize"),
        "--resize/--no-resize",
        help="Resize the shorter side to the input size "
        "before cropping (default: crop at native resolution, upscale only small images).",
    ),
    flip: bool = typer.Option(_default("flip"), "--flip/--no-flip", help="Random horizontal flips."),
    blur_prob: float = typer.Option(_default("blur_prob"), help="Probability of Gaussian blur augmentation."),
    blur_sigma: str = typer.Option(_default("blur_sigma"), help="Blur sigma range LO,HI."),
    jpeg_prob: float = typer.Option(_default("jpeg_prob"), help="Probability of JPEG re-encoding augmentation."),
    jpeg_quality: str = typer.Option(_default("jpeg_quality"), help="JPEG quality range LO,HI."),
    downscale_prob: float = typer.Option(
        _default("downscale_prob"), help="Probability of a random downscale before the crop (both classes alike)."
    ),
    downscale_range: str = typer.Option(
        _default("downscale_range"), help="Downscale factor range LO,HI (never below the crop size)."
    ),
    balance: str = typer.Option(
        _default("balance"),
        help=f"Sampling across pooled data ({', '.join(BALANCE_MODES)}): none (each image once per epoch), source "
        "(each data argument's real and generated images get equal shares), generator (each generator gets an "
        "equal share of the generated images, each real source - a CSV's source column, else the folder or "
        "generator name - an equal share of the real ones).",
    ),
    views: str = typer.Option(
        _default("views"),
        help="Views the trained detector scores at inference, recorded in the checkpoint: center, grid:N, "
        "whole, grid:N+whole, with @mean or @max (see docs/predict.md). Validation uses them too.",
    ),
    val_limit: int = typer.Option(
        _default("val_limit"),
        help="Validate each epoch on a seeded subset of at most N images per class "
        "per generator (0 = all; `mpft eval` does the full test).",
    ),
    seed: int = typer.Option(_default("seed"), help="Seed for subsets, augmentation, masks and initialisation."),
    workers: int = typer.Option(_default("workers"), help="DataLoader worker processes."),
    device: str = typer.Option(_default("device"), help="auto, cpu or cuda."),
    resume: bool = typer.Option(
        field_default(TrainConfig, "resume"), "--resume", help="Continue the interrupted run in --out."
    ),
    config: Path | None = config_option(from_checkpoint=settings_to_options),
) -> None:
    """Fine-tune a CLIP detector with Texture-Aware Masking (the paper's MPFT).

    Example: mpft train ../shared/data/cifake_sd14 --shots 256 --tune last-k --mask tam --epochs 2 --out runs/x

    The same run from a file: mpft train --config run.json, with run.json
    {"data": ["../shared/data/cifake_sd14"], "shots": 256, "tune": "last-k", "epochs": 2, "out": "runs/x"}.
    A run repeated from its checkpoint: mpft train --config runs/x/best/config.json (or the checkpoint's
    folder, or the run folder: its last/), options on the command line overriding the recorded ones.
    """
    from mpft.fsutil import require_writable_dir
    from mpft.training import train

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
        preprocess=PreprocessPolicy(resize=resize),
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
        exclude=tuple(str(e) for e in exclude or ()),
        train_views=train_views,
        feature_cache=feature_cache,
        feature_precision=feature_precision,
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
    )
    cfg.command = train_command(cfg)
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
