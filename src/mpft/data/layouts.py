"""Dataset discovery: turn a folder tree (or a CSV) into a sorted list of labelled samples.

Supported layouts (see docs/data.md):

- ``genimage``: ``<root>/<generator>/{train,val}/{ai,nature}``, ``<root>/{train,val}/{ai,nature}``
  or ``<root>/{ai,nature}``.
- ``ufd`` (UniversalFakeDetect / CNNDetection): ``[<root>/<split>]/<generator>[/<class>]/{0_real,1_fake}``
  or ``<root>/{0_real,1_fake}``.
- ``realfake``: ``[<root>/<split>]/{real,fake}``.
- ``csv``: a ``.csv`` file with header ``path,label[,generator[,source]]`` (:mod:`mpft.data.csvlist`).

This module knows the layouts: their class folder names, the split rule, where generators sit.
Image files are recognised by content (magic bytes), never by extension; the folder walk is
:mod:`mpft.data.scan`, the samples and their subsets :mod:`mpft.data.samples`.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from mpft.data.csvlist import read_csv_samples
from mpft.data.samples import FAKE, REAL, Sample
from mpft.data.scan import list_images, list_subdirs
from mpft.errors import ConfigError, DataError

__all__ = [
    "LAYOUTS",
    "SPLIT_NAMES",
    "dataset_splits",
    "detect_layout",
    "discover",
    "has_splits",
    "single_class",
    "split_folders",
]

log = logging.getLogger(__name__)

LAYOUTS = ("genimage", "ufd", "realfake", "csv")

#: Folder names that mark a split level in any folder layout.
SPLIT_NAMES = ("train", "val", "test")

# Class folder names of each folder layout, mapped to labels.
_CLASS_DIRS: dict[str, dict[str, int]] = {
    "genimage": {"nature": REAL, "ai": FAKE},
    "ufd": {"0_real": REAL, "1_fake": FAKE},
    "realfake": {"real": REAL, "fake": FAKE},
}
# Breadth-first detection stops at this depth: ufd's deepest is root/split/gen/class/0_real.
_MAX_DETECT_DEPTH = 4

_LAYOUT_HELP = (
    "expected one of the layouts "
    + ", ".join(LAYOUTS)
    + ": genimage [<generator>/][{train,val}/]{ai,nature}/, "
    "ufd [<split>/][<generator>/[<class>/]]{0_real,1_fake}/, "
    "realfake [<split>/]{real,fake}/, "
    "or a .csv file with header path,label[,generator[,source]]"
)


def _dir_names(folder: Path) -> set[str]:
    return {p.name.lower() for p in list_subdirs(folder)}


def _class_layout_of(folder: Path) -> str | None:
    """The folder layout whose class folders sit directly inside ``folder``, if any."""
    names = _dir_names(folder)
    for layout, classes in _CLASS_DIRS.items():
        if names & set(classes):
            return layout
    return None


def detect_layout(root: Path) -> str:
    """Guess the layout of ``root`` from its class folder names (shallowest match wins).

    Returns:
        One of :data:`LAYOUTS`.

    Raises:
        DataError: ``root`` is missing, unreadable or matches no layout.
    """
    root = _check_root(Path(root))
    if root.is_file():
        if root.suffix.lower() == ".csv":
            return "csv"
        raise DataError(f"{root}: is a file, not a dataset folder; {_LAYOUT_HELP}")
    level = [root]
    for _ in range(_MAX_DETECT_DEPTH):
        for folder in level:
            layout = _class_layout_of(folder)
            if layout is not None:
                return layout
        level = [child for folder in level for child in list_subdirs(folder)]
        if not level:
            break
    raise DataError(f"{root}: dataset layout not recognised (no class folders found); {_LAYOUT_HELP}")


def _check_root(root: Path) -> Path:
    if not root.exists():
        raise DataError(f"{root}: dataset path does not exist; {_LAYOUT_HELP}")
    if not os.access(root, os.R_OK) or (root.is_dir() and not os.access(root, os.X_OK)):
        raise DataError(f"{root}: dataset path is not readable (check permissions)")
    return root


def discover(root: str | Path, *, layout: str = "auto", split: str | None = None) -> list[Sample]:
    """List the labelled images of a dataset.

    Args:
        root: dataset folder, or a ``.csv`` file for the csv layout.
        layout: ``"auto"`` or one of :data:`LAYOUTS`.
        split: split folder to use (``"train"``, ``"val"`` ...) when the dataset has them.

    Returns:
        Samples sorted by (path, label, generator).

    Raises:
        DataError: missing/unreadable root, unknown or unrecognised layout, split needed but
            not given (or not present), bad CSV rows, no images found.
    """
    root = _check_root(Path(root))
    if layout == "auto":
        layout = detect_layout(root)
        log.info("%s: detected layout %r", root, layout)
    if layout not in LAYOUTS:
        raise DataError(f"{root}: unknown layout {layout!r}; {_LAYOUT_HELP}")
    if layout == "csv":
        if not root.is_file():
            raise DataError(f"{root}: csv layout needs a .csv file; {_LAYOUT_HELP}")
        samples = read_csv_samples(root)
    else:
        if not root.is_dir():
            raise DataError(f"{root}: layout {layout!r} needs a folder; {_LAYOUT_HELP}")
        samples = _discover_folders(root, layout, split)
    if not samples:
        raise DataError(f"{root}: no images found for layout {layout!r}; {_LAYOUT_HELP}")
    return sorted(samples)


def _generator_name(folder: Path) -> str:
    # A split folder ("train") is a poor generator name: use the dataset folder above it.
    if folder.name.lower() in SPLIT_NAMES and folder.parent.name:
        return folder.parent.name
    return folder.name


def _is_ufd_class_dir(folder: Path) -> bool:
    return _class_layout_of(folder) == "ufd"


def split_folders(folder: str | os.PathLike[str]) -> dict[str, Path]:
    """The split folders directly inside ``folder``: ``{"train": folder/train, ...}``.

    This is the one split rule every command uses (``discover``, ``mpft train``, ``mpft eval``).
    A sub-folder named ``train``/``val``/``test`` (any case) is a split, except when it is an
    object-class folder of the ufd layout: it directly holds ``0_real``/``1_fake`` and so does
    at least one sibling whose name is not a split name. CNNDetection has an object class
    called ``train`` (``progan_train/{airplane,...,train}/{0_real,1_fake}``), which is no split;
    ``<root>/{train,val}/{0_real,1_fake}`` still is.

    Returns:
        Split name (lower case) -> folder; empty when ``folder`` has no splits or is not a folder.
    """
    subdirs = list_subdirs(Path(folder))
    named = [p for p in subdirs if p.name.lower() in SPLIT_NAMES]
    if not named:
        return {}
    has_class_siblings = any(
        p.name.lower() not in SPLIT_NAMES and _is_ufd_class_dir(p) for p in subdirs
    )
    return {
        p.name.lower(): p for p in named if not (has_class_siblings and _is_ufd_class_dir(p))
    }


def dataset_splits(root: str | os.PathLike[str]) -> list[str]:
    """Split names a dataset has, in ``root`` itself or in its generator folders (one level down).

    Uses :func:`split_folders`, so CNNDetection's object class ``train`` is not counted.

    Returns:
        Sorted split names (lower case); empty for a file (csv) or a dataset without splits.
    """
    root = Path(root)
    if not root.is_dir():
        return []
    found = set(split_folders(root))
    for sub in list_subdirs(root):
        found.update(split_folders(sub))
    return sorted(found)


def has_splits(root: str | os.PathLike[str]) -> bool:
    """True when ``root`` or its generator folders hold split folders (see :func:`split_folders`)."""
    return bool(dataset_splits(root))


def _select_split(root: Path, layout: str, split: str | None) -> Path:
    """Descend into ``root/<split>`` when the dataset has split folders."""
    splits = split_folders(root)
    if not splits or _class_layout_of(root) == layout:
        if split is not None:
            log.warning("%s: split %r requested but the dataset has no split folders; using all", root, split)
        return root
    if split is None:
        raise DataError(
            f"{root}: has split folders {sorted(splits)}; pass a split (e.g. split={sorted(splits)[0]!r})"
        )
    chosen = splits.get(split.lower())
    if chosen is None:
        raise DataError(f"{root}: split {split!r} not found; available splits: {sorted(splits)}")
    return chosen


def _class_samples(folder: Path, layout: str, generator: str) -> list[Sample]:
    samples: list[Sample] = []
    classes = _CLASS_DIRS[layout]
    for sub in list_subdirs(folder):
        label = classes.get(sub.name.lower())
        if label is not None:
            samples.extend(Sample(p, label, generator) for p in list_images(sub))
    return samples


def _discover_folders(root: Path, layout: str, split: str | None) -> list[Sample]:
    if layout == "genimage":
        return _discover_genimage(root, split)
    base = _select_split(root, layout, split)
    if _class_layout_of(base) == layout:
        return _class_samples(base, layout, _generator_name(base))
    if layout == "realfake":
        raise DataError(f"{base}: no real/ or fake/ folders; {_LAYOUT_HELP}")
    samples: list[Sample] = []
    for gen_dir in list_subdirs(base):
        if _class_layout_of(gen_dir) == layout:
            samples.extend(_class_samples(gen_dir, layout, gen_dir.name))
            continue
        # CNNDetection keeps one folder per object class under each generator; merge them.
        for class_dir in list_subdirs(gen_dir):
            if _class_layout_of(class_dir) == layout:
                samples.extend(_class_samples(class_dir, layout, gen_dir.name))
    return samples


def _discover_genimage(root: Path, split: str | None) -> list[Sample]:
    if _class_layout_of(root) == "genimage" or split_folders(root):
        # root holds the class folders (a requested split is warned about, then ignored) or the splits
        return _class_samples(_select_split(root, "genimage", split), "genimage", _generator_name(root))
    samples: list[Sample] = []
    for gen_dir in list_subdirs(root):
        if split_folders(gen_dir):
            base = _select_split(gen_dir, "genimage", split)
            samples.extend(_class_samples(base, "genimage", gen_dir.name))
        elif _class_layout_of(gen_dir) == "genimage":
            samples.extend(_class_samples(gen_dir, "genimage", gen_dir.name))
    return samples


def single_class(folder: Path, label: int, generator: str | None = None) -> list[Sample]:
    """All images under ``folder`` with one label (``--real DIR`` pools, unlabelled folders).

    Args:
        folder: directory scanned recursively.
        label: :data:`REAL` or :data:`FAKE`.
        generator: generator name; defaults to the folder's name.

    Raises:
        ConfigError: label is not 0 or 1.
        DataError: folder missing or without images.
    """
    if label not in (REAL, FAKE):
        raise ConfigError(f"label must be {REAL} (real) or {FAKE} (generated), got {label!r}")
    folder = _check_root(Path(folder))
    name = generator if generator is not None else _generator_name(folder)
    samples = [Sample(p, label, name) for p in list_images(folder)]
    if not samples:
        raise DataError(f"{folder}: no images found (files are recognised by content, any extension)")
    return samples
