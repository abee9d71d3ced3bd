"""Each `mpft train` option's default is the settings dataclass's default (issue 12 item 3).

The CLI repeats the defaults of TrainConfig, TuneConfig, MaskConfig, Augment and PreprocessPolicy
in its typer signature; this test reads the command's parameters through click's introspection
and fails when one of them drifts from the dataclass field it fills.
"""

from __future__ import annotations

import dataclasses

import pytest
import typer.main

from mpft.cli import app
from mpft.cli.train import parse_blocks, parse_pair
from mpft.data.transforms import Augment, PreprocessPolicy
from mpft.model import TuneConfig
from mpft.tam import MaskConfig
from mpft.training import TrainConfig
from mpft.views import ViewConfig, parse_views

# option name -> (dataclass, field name, how the CLI's text becomes the field's value)
_RENAMED = {
    "tune": (TuneConfig, "strategy", None),
    "layers": (TuneConfig, "layers", None),
    "lora_rank": (TuneConfig, "lora_rank", None),
    "feature_blocks": (TuneConfig, "feature_blocks", parse_blocks),
    "mask": (MaskConfig, "strategy", None),
    "mask_ratio": (MaskConfig, "ratio", None),
    "texture": (MaskConfig, "texture", None),
    "mask_temperature": (MaskConfig, "temperature", None),
    "mask_apply": (MaskConfig, "apply", None),
    "resize": (PreprocessPolicy, "resize", None),
    "blur_sigma": (Augment, "blur_sigma", lambda t: parse_pair(t, "--blur-sigma")),
    "jpeg_quality": (Augment, "jpeg_quality", lambda t: parse_pair(t, "--jpeg-quality", int)),
    "downscale_range": (Augment, "downscale_range", lambda t: parse_pair(t, "--downscale-range")),
    "views": (TrainConfig, "views", parse_views),
}
for _name in ("flip", "blur_prob", "jpeg_prob", "downscale_prob"):
    _RENAMED[_name] = (Augment, _name, None)

# Parameters not compared, and why. (No option's default differs from its field on purpose:
# `views` "center" parses to ViewConfig(), `balance` is "none" in both, `lr_backbone` None in both.)
_INTENDED = {
    "data": "required argument: no default in either",
    "out": "required option: no default in either",
    "config": "--config RUN.JSON supplies other options' values (mpft.cli.runconfig): not a setting itself",
}


def _train_params() -> dict[str, object]:
    group = typer.main.get_command(app)
    cmd = group.commands["train"]  # type: ignore[attr-defined]
    return {p.name: p for p in cmd.params}


def _field_default(cls: type, name: str):
    f = {f.name: f for f in dataclasses.fields(cls)}[name]
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    raise AssertionError(f"{cls.__name__}.{name} has no default")


def _cases() -> list[tuple[str, type, str, object]]:
    train_fields = {f.name for f in dataclasses.fields(TrainConfig)}
    out = []
    for name in _train_params():
        if name in _INTENDED:
            continue
        if name in _RENAMED:
            cls, field_name, parse = _RENAMED[name]
        elif name in train_fields:
            cls, field_name, parse = TrainConfig, name, None
        else:
            raise AssertionError(f"`mpft train` option {name!r} maps to no settings field; add it to _RENAMED")
        out.append((name, cls, field_name, parse))
    return out


@pytest.mark.parametrize("name,cls,field_name,parse", _cases(), ids=lambda v: v if isinstance(v, str) else "")
def test_train_option_default_equals_dataclass_default(name, cls, field_name, parse):
    param = _train_params()[name]
    cli_default = param.default
    if parse is not None and isinstance(cli_default, str):
        cli_default = parse(cli_default)
    expected = _field_default(cls, field_name)
    if isinstance(expected, tuple):
        cli_default = tuple(cli_default)
    assert cli_default == expected, (
        f"`mpft train --{name.replace('_', '-')}` defaults to {param.default!r} but "
        f"{cls.__name__}.{field_name} defaults to {expected!r}"
    )


def test_every_settings_field_reachable_from_the_cli_is_checked():
    """A new option must be mapped (or listed as intended) rather than skipped silently."""
    names = {c[0] for c in _cases()}
    assert {"mask_ratio", "lora_rank", "views", "balance", "warmup", "val_limit", "backbone"} <= names


def test_lora_alpha_defaults_to_twice_the_rank_and_saved_numbers_load_unchanged():
    assert TuneConfig(lora_rank=4).lora_alpha == 8.0
    assert TuneConfig().lora_alpha == 2.0 * TuneConfig().lora_rank
    # a config saved with an explicit alpha (old checkpoints: 16 at any rank) keeps it
    saved = TuneConfig(strategy="lora", lora_rank=4, lora_alpha=16.0).to_dict()
    assert saved["lora_alpha"] == 16.0
    assert TuneConfig.from_dict(saved).lora_alpha == 16.0
    # the resolved number is what a checkpoint records
    assert TuneConfig(lora_rank=3).to_dict()["lora_alpha"] == 6.0


def test_views_cli_default_is_the_single_centre_crop():
    assert parse_views("center") == ViewConfig()
