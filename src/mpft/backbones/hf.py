"""``hf:NAME_OR_DIR``: a transformers checkpoint (hub id or local folder) of any registered family.

The checkpoint's ``config.json`` says its ``model_type``, which picks the family adapter
(:mod:`mpft.backbones.families`); its ``preprocessor_config.json`` (when present) says the input
contract: size (the crop, else the resize target), mean/std and interpolation. Without one, the
family's defaults and the config's image size apply.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

from mpft.backbones.base import VisionBackbone, interpolation_name
from mpft.backbones.families import family_for
from mpft.errors import BackboneError, BackboneNotAvailableError

log = logging.getLogger(__name__)

PROCESSOR_FILE = "preprocessor_config.json"


def load_hf(spec: str, arg: str) -> VisionBackbone:
    """Build the adapter for the transformers checkpoint ``arg`` (hub id or folder)."""
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(arg)
    except (OSError, ValueError) as exc:
        raise BackboneNotAvailableError(
            f"cannot load {spec}: {exc}. Offline, pass a local folder (hf:/path/to/dir) or set HF_HOME to a cache "
            "that holds it."
        ) from exc
    adapter = family_for(config.model_type, spec).adapter_class()
    try:
        model = adapter.load_pretrained(arg)
    except OSError as exc:
        raise BackboneNotAvailableError(f"cannot load the weights of {spec}: {exc}") from exc
    contract = processor_contract(read_processor_config(arg), adapter, spec, int(model.config.patch_size))
    encoder = adapter(model.float(), spec=spec, **contract)
    if not adapter.interpolates_positions and encoder.image_size != int(model.config.image_size):
        raise BackboneError(
            f"{spec}: its image processor gives {encoder.image_size} px inputs, but its position embeddings are for "
            f"{model.config.image_size} px and {adapter.family} does not interpolate them"
        )
    if encoder.image_size % encoder.patch_size:
        raise BackboneError(
            f"{spec}: input size {encoder.image_size} is not a multiple of the patch size {encoder.patch_size}"
        )
    return encoder


def read_processor_config(arg: str) -> dict:
    """The checkpoint's image-processor settings, or {} when it has none."""
    local = Path(arg)
    if local.is_dir():
        path = local / PROCESSOR_FILE
        return json.loads(path.read_text()) if path.is_file() else {}
    from transformers.utils import cached_file

    try:
        found = cached_file(arg, PROCESSOR_FILE, _raise_exceptions_for_missing_entries=False)
    except OSError:
        found = None
    return json.loads(Path(found).read_text()) if found else {}


def processor_contract(pp: dict, adapter: type[VisionBackbone], spec: str, patch_size: int) -> dict:
    """Image-processor settings -> the adapter's contract arguments (mean, std, image_size, interpolation).

    The size is the centre crop when the processor crops, else its resize target, else (NaFlex) the
    square of ``max_num_patches`` patches; a processor that gives non-square inputs is refused.
    None leaves the size to the adapter (its config's).
    """
    size = None
    if pp.get("do_center_crop") and pp.get("crop_size") is not None:
        size = _square(pp["crop_size"], spec, "crop_size")
    elif pp.get("size") is not None:
        size = _square(pp["size"], spec, "size")
    elif pp.get("max_num_patches"):
        size = patch_size * math.isqrt(int(pp["max_num_patches"]))
    return {
        "mean": tuple(pp.get("image_mean", adapter.default_mean)),
        "std": tuple(pp.get("image_std", adapter.default_std)),
        "image_size": size,
        "interpolation": interpolation_name(pp.get("resample"), adapter.default_interpolation),
    }


def _square(value: int | dict, spec: str, key: str) -> int | None:
    if isinstance(value, int):
        return value
    if "height" in value or "width" in value:
        if value.get("height") != value.get("width"):
            raise BackboneError(f"{spec}: its image processor's {key} {value} is not square; mpft needs square inputs")
        return int(value["height"])
    if "shortest_edge" in value:
        return int(value["shortest_edge"])
    return None
