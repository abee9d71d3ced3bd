"""A trained detector on disk: ``config.json`` + ``model.safetensors`` (trained tensors only).

The frozen backbone is never stored: ``config.json`` names it (spec and weights sha256), and
loading rebuilds it, checks its identity, then loads the trained tensors strictly.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from mpft import __version__
from mpft.backbones.base import InputContract
from mpft.config import DEFAULT_THRESHOLD, DEFAULT_UNCERTAIN_BAND
from mpft.data.transforms import PreprocessPolicy
from mpft.errors import CheckpointError, ConfigError
from mpft.fsutil import atomic_directory, atomic_write_text
from mpft.model import DetectorModel, create_model
from mpft.tam import MaskConfig

log = logging.getLogger(__name__)

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
FORMAT_VERSION = 1


@dataclass
class DetectorConfig:
    """Everything needed to rebuild a detector and to know how it was made."""

    backbone: str
    backbone_sha256: str
    tune: dict
    mask: dict
    preprocess: dict
    # which views are scored and how they combine (mpft.views.ViewConfig); {} = one centre crop
    views: dict = field(default_factory=dict)
    # the backbone's InputContract when the checkpoint was written ({} in older checkpoints): loading
    # refuses a backbone whose image processor now says otherwise
    input_contract: dict = field(default_factory=dict)
    threshold: float = DEFAULT_THRESHOLD
    uncertain_band: float = DEFAULT_UNCERTAIN_BAND
    thresholds: dict = field(default_factory=dict)
    training: dict = field(default_factory=dict)
    mpft_version: str = __version__
    format_version: int = FORMAT_VERSION
    weights_dtype: str = "float32"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict, *, source: str = "config.json") -> DetectorConfig:
        known = set(cls.__dataclass_fields__)
        missing = {"backbone", "backbone_sha256", "tune", "mask", "preprocess"} - set(d)
        if missing:
            raise CheckpointError(f"{source} lacks required fields {sorted(missing)}")
        if d.get("format_version", FORMAT_VERSION) > FORMAT_VERSION:
            raise CheckpointError(
                f"{source} has format version {d['format_version']}; this mpft ({__version__}) reads up to "
                f"{FORMAT_VERSION}. Upgrade mpft."
            )
        unknown = sorted(set(d) - known)
        if unknown:
            # the same rule as every settings block (mpft.config.from_dict): a key this version does
            # not know is an error, never silently dropped
            raise CheckpointError(
                f"{source} has unknown fields {unknown}; this mpft ({__version__}) knows {sorted(known)}. "
                "It was written by another mpft version or edited by hand."
            )
        return cls(**d)


def save_checkpoint(
    directory: str | Path, model: DetectorModel, config: DetectorConfig, *, dtype: torch.dtype | None = None
) -> Path:
    """Write the checkpoint directory atomically (temp dir beside it, then rename)."""
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    config.input_contract = model.encoder.input_contract.to_dict()
    state = model.trainable_state_dict()
    if dtype is not None:
        state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
        config.weights_dtype = str(dtype).removeprefix("torch.")
    with atomic_directory(directory) as tmp:
        save_file({k: v.contiguous() for k, v in state.items()}, str(tmp / WEIGHTS_NAME), metadata={"format": "pt"})
        (tmp / CONFIG_NAME).write_text(json.dumps(config.to_dict(), indent=2) + "\n")
    return directory


def update_config(directory: str | Path, **changes) -> DetectorConfig:
    """Change fields of an existing checkpoint's config.json atomically (e.g. a calibrated threshold)."""
    directory = Path(directory)
    cfg = read_config(directory)
    for k, v in changes.items():
        setattr(cfg, k, v)
    atomic_write_text(directory / CONFIG_NAME, json.dumps(cfg.to_dict(), indent=2) + "\n")
    return cfg


def read_config(directory: str | Path) -> DetectorConfig:
    directory = Path(directory)
    path = directory / CONFIG_NAME
    if not directory.is_dir():
        raise CheckpointError(f"checkpoint directory not found: {directory}")
    if not path.is_file():
        raise CheckpointError(f"{directory} is not an mpft checkpoint: no {CONFIG_NAME}")
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path} is not valid JSON: {exc}") from exc
    return DetectorConfig.from_dict(data, source=str(path))


def build_model(config: DetectorConfig, encoder=None) -> DetectorModel:
    """Rebuild the (untrained) network a config describes (:func:`mpft.model.create_model`)."""
    return create_model(encoder if encoder is not None else config.backbone, config.tune)


def _check_input_contract(preprocess: dict, contract: InputContract, directory: Path) -> dict:
    """The checkpoint's preprocess block, checked against the backbone's input contract.

    Checkpoints written before the backbone owned its contract also stored ``mean``/``std``;
    they are accepted when they equal the backbone's and dropped (the backbone's are used).
    """
    rest = dict(preprocess)
    for key, want in (("mean", contract.mean), ("std", contract.std)):
        if key in rest:
            got = tuple(float(v) for v in rest.pop(key))
            if len(got) != len(want) or any(abs(a - b) > 1e-6 for a, b in zip(got, want, strict=False)):
                raise CheckpointError(
                    f"{directory}: the checkpoint normalises with {key} {list(got)}, but its backbone uses "
                    f"{list(want)}; this mpft normalises with the backbone's values"
                )
    try:
        PreprocessPolicy.from_dict(rest).for_backbone(contract.image_size, contract.interpolation)
    except ConfigError as exc:
        raise CheckpointError(f"{directory}: bad preprocess block in {CONFIG_NAME}: {exc}") from exc
    return rest


def load_checkpoint(directory: str | Path, *, encoder=None) -> tuple[DetectorModel, DetectorConfig]:
    """Load a detector; fails with a message naming whatever differs from what the config promises."""
    directory = Path(directory)
    config = read_config(directory)
    MaskConfig.from_dict(config.mask)  # validate early: a bad mask block is a bad checkpoint
    model = build_model(config, encoder)
    contract = model.encoder.input_contract
    if config.input_contract and (diff := contract.differences(config.input_contract)):
        raise CheckpointError(
            f"{directory}: the checkpoint was trained on inputs its backbone {config.backbone} no longer takes: "
            f"{'; '.join(diff)}. The backbone's image processor (preprocessor_config.json) or its config changed "
            "since training; restore the one it was trained with, or retrain"
        )
    config.preprocess = _check_input_contract(config.preprocess, contract, directory)
    actual = model.encoder.weights_sha256
    if actual != config.backbone_sha256:
        raise CheckpointError(
            f"{directory}: backbone {config.backbone} has weights sha256 {actual[:12]}..., but the checkpoint was "
            f"trained on {config.backbone_sha256[:12]}...: a different model hides behind the same name"
        )
    wpath = directory / WEIGHTS_NAME
    if not wpath.is_file():
        raise CheckpointError(f"{directory} has no {WEIGHTS_NAME}")
    try:
        state = load_file(str(wpath))
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"{wpath} is not a readable safetensors file: {exc}") from exc
    trainable = set(model.trainable_names())
    expected = {k: v for k, v in model.state_dict().items() if k in trainable}
    missing = sorted(set(expected) - set(state))
    extra = sorted(set(state) - set(expected))
    shapes = [
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in sorted(set(state) & set(expected))
        if tuple(state[k].shape) != tuple(expected[k].shape)
    ]
    if missing or extra or shapes:
        parts = []
        if missing:
            parts.append(f"missing tensors {missing[:6]}{' ...' if len(missing) > 6 else ''}")
        if extra:
            parts.append(f"unexpected tensors {extra[:6]}{' ...' if len(extra) > 6 else ''}")
        if shapes:
            parts.append("shape mismatches " + "; ".join(shapes[:6]))
        raise CheckpointError(
            f"{wpath} does not match the model described by its config ({config.tune}): " + ", ".join(parts)
        )
    dtype = next(model.parameters()).dtype
    model.load_state_dict({k: v.to(dtype) for k, v in state.items()}, strict=False)
    model.eval()
    return model, config
