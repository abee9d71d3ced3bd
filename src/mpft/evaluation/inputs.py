"""What an evaluation reads: the checkpoint directory, the labelled test images, the calibration reals.

Only finds files and their labels (through :mod:`mpft.data.layouts`); nothing here decodes an image.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mpft.checkpoint import CONFIG_NAME
from mpft.data.layouts import FAKE, REAL, dataset_splits, detect_layout, discover, single_class
from mpft.data.samples import Sample, limit_per_class
from mpft.errors import CheckpointError, DataError
from mpft.evaluation.groups import resolve_real_pool
from mpft.evaluation.settings import EvalSettings

log = logging.getLogger(__name__)

__all__ = [
    "EVAL_SPLITS",
    "EvalData",
    "EvalInputs",
    "calibration_reals",
    "eval_split",
    "gather_inputs",
    "resolve_checkpoint_dir",
    "resolve_eval_data",
]

#: Split folders an evaluation uses, in order of preference (GenImage's test split is ``val``).
EVAL_SPLITS = ("val", "test")


def resolve_checkpoint_dir(path: str | os.PathLike[str]) -> Path:
    """The checkpoint directory of ``path``: itself, or ``path/best`` for a training run directory.

    Raises:
        CheckpointError: ``path`` is missing or neither is a checkpoint (no ``config.json``).
    """
    p = Path(path)
    if not p.exists():
        raise CheckpointError(f"checkpoint not found: {p} (pass a checkpoint dir or a run dir with best/)")
    if (p / CONFIG_NAME).is_file():
        return p
    if (p / "best" / CONFIG_NAME).is_file():
        return p / "best"
    raise CheckpointError(
        f"{p} is not an mpft checkpoint: no {CONFIG_NAME} in it or in {p / 'best'} "
        "(pass RUN_DIR/best, RUN_DIR/last or a run directory written by `mpft train`)"
    )


def eval_split(root: str | os.PathLike[str]) -> str | None:
    """Split folder to evaluate in ``root``: "val" (GenImage's test split), else "test", or None.

    Split folders are found by :func:`mpft.data.layouts.dataset_splits` (``root`` and its
    generator folders; an object-class folder named ``train`` is no split).

    Raises:
        DataError: the dataset has split folders but only a training split.
    """
    found = dataset_splits(root)
    if not found:
        return None
    for split in EVAL_SPLITS:
        if split in found:
            return split
    raise DataError(
        f"{root}: has only {found} split folders; evaluation needs a val/ or test/ split "
        "(or pass the split folder itself)"
    )


@dataclass
class EvalData:
    """The labelled images of an evaluation, in a fixed order (sorted per dataset root)."""

    samples: list[Sample]
    real_pool: str
    splits: dict[str, str | None] = field(default_factory=dict)
    layouts: dict[str, str] = field(default_factory=dict)


def _discover_eval(root: str, layout: str) -> tuple[list[Sample], str | None, str]:
    p = Path(root)
    if not p.exists():
        raise DataError(f"evaluation data not found: {p}")
    used_layout = detect_layout(p) if layout == "auto" else layout
    split = eval_split(p) if used_layout != "csv" else None
    return discover(p, layout=used_layout, split=split), split, used_layout


def _dedupe_generators(per_root: list[tuple[str, list[Sample]]]) -> list[Sample]:
    """Rename generators that appear under several roots to ``<root folder name>/<generator>``."""
    owners: dict[str, set[str]] = {}
    for root, samples in per_root:
        for s in samples:
            owners.setdefault(s.generator, set()).add(root)
    clash = sorted(g for g, roots in owners.items() if len(roots) > 1)
    if not clash:
        return [s for _, samples in per_root for s in samples]
    log.warning("generator names %s appear in several datasets; prefixed with the dataset folder name", clash)
    renamed: dict[tuple[str, str], str] = {}
    out: list[Sample] = []
    for root, samples in per_root:
        for s in samples:
            gen = f"{Path(root).name}/{s.generator}" if s.generator in clash else s.generator
            renamed[(root, s.generator)] = gen
            out.append(Sample(s.path, s.label, gen))
    if len(set(renamed.values())) != len(renamed):
        raise DataError(
            f"generators {clash} appear in several datasets whose folders have the same name; "
            "rename the folders so that every generator gets a unique name"
        )
    return out


def resolve_eval_data(
    data: Sequence[str | os.PathLike[str]],
    *,
    layout: str = "auto",
    real: str | os.PathLike[str] | None = None,
) -> EvalData:
    """Find the labelled images of the evaluation datasets.

    Without ``real``: each root is any supported layout; a root with split folders is evaluated on
    its ``val`` split (GenImage's test split), else ``test``. Real images count per generator.
    With ``real``: each root is a folder of generated images (generator = folder name) and the
    images under ``real`` form one real pool shared by every generator row (UniversalFakeDetect
    style).

    Raises:
        DataError: a missing root, no images, or a fake folder that holds real images.
    """
    if not data:
        raise DataError("no evaluation data given: pass one or more dataset folders")
    roots = [str(d) for d in data]
    if real is None:
        per_root, splits, layouts = [], {}, {}
        for root in roots:
            samples, split, used = _discover_eval(root, layout)
            per_root.append((root, samples))
            splits[root], layouts[root] = split, used
        samples = _dedupe_generators(per_root)
        labels = np.array([s.label for s in samples])
        pool = resolve_real_pool(labels, [s.generator for s in samples], "auto")
        return EvalData(samples, pool, splits, layouts)

    real_root = Path(real)
    if not real_root.exists():
        raise DataError(f"--real folder not found: {real_root}")
    per_root = []
    for root in roots:
        p = Path(root)
        if not p.exists():
            raise DataError(f"evaluation data not found: {p}")
        _reject_labelled(p, layout)
        per_root.append((root, single_class(p, FAKE, generator=p.name)))
    fakes = _dedupe_generators(per_root)
    reals = single_class(real_root, REAL, generator=real_root.name)
    return EvalData(sorted(fakes + reals), "shared", {}, {r: "fake folder" for r in roots})


def _reject_labelled(folder: Path, layout: str) -> None:
    """With --real every DATA folder must hold generated images only; refuse one with real images."""
    try:
        used = detect_layout(folder) if layout == "auto" else layout
        samples = discover(folder, layout=used, split=eval_split(folder))
    except DataError:
        return  # not a labelled layout: a plain folder of generated images, as expected
    n_real = sum(s.label == REAL for s in samples)
    if n_real:
        raise DataError(
            f"{folder}: with --real each DATA must be a folder of generated images, but this is a {used} "
            f"dataset with {n_real} real images; drop --real to evaluate it with its own real images"
        )


def calibration_reals(path: str | os.PathLike[str], layout: str) -> list[Sample]:
    """The real images of ``--calibrate-on``: a labelled dataset's reals, or a plain folder of real photos.

    Raises:
        DataError: the path is missing or holds no real image.
    """
    p = Path(path)
    if not p.exists():
        raise DataError(f"--calibrate-on data not found: {p}")
    if layout == "auto" and p.is_dir():
        try:
            detect_layout(p)
        except DataError:
            # No class folders: a plain folder of real photos is the simplest calibration set.
            return single_class(p, REAL)
    samples, _, _ = _discover_eval(str(p), layout)
    reals = [s for s in samples if s.label == REAL]
    if not reals:
        raise DataError(f"--calibrate-on {p}: no real images found; calibration needs real images")
    return reals



@dataclass
class EvalInputs:
    """The files of one evaluation, found and checked before any model is loaded."""

    ckpt_dir: Path
    #: The DATA arguments as given (strings), for the report's provenance.
    data: list[str]
    eval_data: EvalData
    #: ``eval_data.samples`` after ``--limit``.
    samples: list[Sample]
    #: Real images of ``--calibrate-on``; None without it.
    cal_samples: list[Sample] | None


def gather_inputs(
    checkpoint: str | os.PathLike[str], data: Sequence[str | os.PathLike[str]], settings: EvalSettings
) -> EvalInputs:
    """Find the checkpoint, the test images (``--limit`` applied, seeded) and the calibration reals.

    Raises:
        CheckpointError: no checkpoint at ``checkpoint``. DataError: missing or unusable data.
    """
    ckpt_dir = resolve_checkpoint_dir(checkpoint)
    eval_data = resolve_eval_data(data, layout=settings.layout, real=settings.real)
    samples = eval_data.samples
    if settings.limit is not None:
        samples = limit_per_class(samples, settings.limit, settings.seed)
    cal = settings.calibrate_on
    cal_samples = calibration_reals(cal, settings.layout) if cal is not None else None
    return EvalInputs(ckpt_dir, [str(d) for d in data], eval_data, samples, cal_samples)
