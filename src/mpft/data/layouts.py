"""Dataset discovery: turn a folder tree (or a CSV) into a sorted list of labelled samples.

Supported layouts (see docs/data.md):

- ``genimage``: ``<root>/<generator>/{train,val}/{ai,nature}``, ``<root>/{train,val}/{ai,nature}``
  or ``<root>/{ai,nature}``.
- ``ufd`` (UniversalFakeDetect / CNNDetection): ``[<root>/<split>]/<generator>[/<class>]/{0_real,1_fake}``
  or ``<root>/{0_real,1_fake}``.
- ``realfake``: ``[<root>/<split>]/{real,fake}``.
- ``csv``: a ``.csv`` file with header ``path,label[,generator]``.

Image files are recognised by content (magic bytes), never by extension.
"""

from __future__ import annotations

import csv
import logging
import os
import stat
import zlib
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mpft.data.images import is_image_file
from mpft.errors import ConfigError, DataError
from mpft.fsutil import link_problem, special_file_kind

__all__ = [
    "FAKE",
    "FolderScan",
    "IMAGE_SUFFIXES",
    "LAYOUTS",
    "REAL",
    "Sample",
    "SPLIT_NAMES",
    "balanced_subset",
    "dataset_splits",
    "detect_layout",
    "discover",
    "has_splits",
    "limit_per_class",
    "list_images",
    "log_skipped",
    "require_both_classes",
    "scan_folder",
    "single_class",
    "split_folders",
    "summarize",
]

log = logging.getLogger(__name__)

REAL, FAKE = 0, 1
LAYOUTS = ("genimage", "ufd", "realfake", "csv")

#: Folder names that mark a split level in any folder layout.
SPLIT_NAMES = ("train", "val", "test")

# Class folder names of each folder layout, mapped to labels.
_CLASS_DIRS: dict[str, dict[str, int]] = {
    "genimage": {"nature": REAL, "ai": FAKE},
    "ufd": {"0_real": REAL, "1_fake": FAKE},
    "realfake": {"real": REAL, "fake": FAKE},
}
_CSV_LABELS = {
    "0": REAL,
    "real": REAL,
    "nature": REAL,
    "1": FAKE,
    "fake": FAKE,
    "ai": FAKE,
    "generated": FAKE,
}
# Breadth-first detection stops at this depth: ufd's deepest is root/split/gen/class/0_real.
_MAX_DETECT_DEPTH = 4

_LAYOUT_HELP = (
    "expected one of the layouts "
    + ", ".join(LAYOUTS)
    + ": genimage [<generator>/][{train,val}/]{ai,nature}/, "
    "ufd [<split>/][<generator>/[<class>/]]{0_real,1_fake}/, "
    "realfake [<split>/]{real,fake}/, "
    "or a .csv file with header path,label[,generator]"
)


@dataclass(frozen=True, order=True)
class Sample:
    """One labelled image. ``label`` is 0 for real, 1 for generated."""

    path: Path
    label: int
    generator: str


def _is_hidden(name: str) -> bool:
    return name.startswith(".")


def _subdirs(folder: Path) -> list[Path]:
    """Non-hidden sub-directories of ``folder``, sorted; [] if it cannot be listed.

    Links to folders count, except looping ones (``up -> ..``): those are never followed.
    """
    try:
        with os.scandir(folder) as it:
            entries = list(it)
    except OSError:
        return []
    out = []
    for e in entries:
        if _is_hidden(e.name) or (e.is_symlink() and link_problem(e.path) is not None):
            continue
        try:
            if e.is_dir(follow_symlinks=True):
                out.append(Path(e.path))
        except OSError:  # a link that cannot be resolved is no folder
            continue
    return sorted(out)


#: Names that promise an image. A scan keeps regular files with these names whose content is
#: not an image apart (:attr:`FolderScan.misnamed`), so a broken ``.jpg`` can be reported.
IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".gif", ".webp", ".bmp", ".tif", ".tiff"}
)


@dataclass
class FolderScan:
    """What a folder walk found (:func:`scan_folder`); every list is sorted.

    Attributes:
        images: regular files whose content is an image (magic bytes).
        misnamed: regular files named like images (:data:`IMAGE_SUFFIXES`) whose content is not one.
        bad_links: ``(path, reason)`` of symbolic links that loop or point to a folder holding
            them; not followed.
        special: ``(path, reason)`` of entries that are neither regular files nor folders (FIFOs,
            sockets, devices); never opened, since reading a FIFO blocks forever.
    """

    images: list[Path] = field(default_factory=list)
    misnamed: list[Path] = field(default_factory=list)
    bad_links: list[tuple[Path, str]] = field(default_factory=list)
    special: list[tuple[Path, str]] = field(default_factory=list)

    @property
    def skipped(self) -> list[tuple[Path, str]]:
        """Entries not read: bad links and special files, with the reason, sorted by path."""
        return sorted(self.bad_links + self.special)


def scan_folder(folder: str | os.PathLike[str], recursive: bool = True) -> FolderScan:
    """Walk ``folder`` (following symbolic links safely) and sort what it holds.

    Only regular files are opened. Hidden files and folders are skipped. A symbolic link to a
    folder is followed unless it loops (:func:`mpft.fsutil.link_problem`): to a folder holding
    it (``up -> ..``), to one already on the walk, or a link chain that never ends.

    Raises:
        DataError: ``folder`` (or a sub-folder) is not a readable directory.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: not a directory (expected a folder of images)")
    scan = FolderScan()
    # each folder travels with the real paths of the folders above it, to catch link cycles
    stack: list[tuple[Path, tuple[str, ...]]] = [(folder, (os.path.realpath(folder),))]
    while stack:
        current, chain = stack.pop()
        try:
            with os.scandir(current) as it:
                entries = list(it)
        except OSError as exc:
            raise DataError(f"{current}: cannot list folder ({exc.strerror or exc})") from None
        for entry in entries:
            if _is_hidden(entry.name):
                continue
            path = Path(entry.path)
            if entry.is_symlink():
                problem = link_problem(path, chain)
                if problem is not None:
                    scan.bad_links.append((path, problem))
                    continue
            try:
                st = os.stat(path)  # follows links; a dangling one fails and is skipped
            except OSError:
                continue
            if stat.S_ISDIR(st.st_mode):
                if recursive:
                    stack.append((path, (*chain, os.path.realpath(path))))
                continue
            kind = special_file_kind(st.st_mode)
            if kind is not None:
                scan.special.append((path, f"{kind}, not a regular file"))
            elif is_image_file(path):
                scan.images.append(path)
            elif path.suffix.lower() in IMAGE_SUFFIXES:
                scan.misnamed.append(path)
    scan.images.sort()
    scan.misnamed.sort()
    scan.bad_links.sort()
    scan.special.sort()
    return scan


def list_images(folder: Path, recursive: bool = True) -> list[Path]:
    """Image files under ``folder``, sorted, hidden files and dirs skipped.

    A file is an image by its content (any extension), or by its name: a regular file named
    like an image (:data:`IMAGE_SUFFIXES`) whose content is not one (an empty ``x.jpg``, a text
    file ``notes.jpg``; :attr:`FolderScan.misnamed`) is listed too, so it becomes a sample that
    fails to decode and is reported as skipped instead of vanishing from the counts.

    Entries that are not read (FIFOs, sockets, devices, looping symbolic links) are logged
    with a count; :func:`scan_folder` returns them.

    Args:
        folder: directory to scan.
        recursive: descend into sub-directories.

    Returns:
        Sorted list of paths (names with spaces, dots or parentheses are kept as they are).

    Raises:
        DataError: ``folder`` is not a readable directory.
    """
    scan = scan_folder(folder, recursive)
    log_skipped(folder, scan.skipped)
    return sorted([*scan.images, *scan.misnamed])


def log_skipped(folder: str | os.PathLike[str], skipped: Sequence[tuple[Path, str]]) -> None:
    """One warning with the count of entries a scan did not read, and the first few reasons."""
    if not skipped:
        return
    shown = "; ".join(f"{p}: {reason}" for p, reason in skipped[:3])
    more = f"; and {len(skipped) - 3} more" if len(skipped) > 3 else ""
    noun = "entry that is not a regular file or is a looping link" if len(skipped) == 1 else \
        "entries that are not regular files or are looping links"
    log.warning("%s: skipped %d %s (%s%s)", folder, len(skipped), noun, shown, more)


def _dir_names(folder: Path) -> set[str]:
    return {p.name.lower() for p in _subdirs(folder)}


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
        level = [child for folder in level for child in _subdirs(folder)]
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
        samples = _discover_csv(root)
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
    subdirs = _subdirs(Path(folder))
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
    for sub in _subdirs(root):
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
    for sub in _subdirs(folder):
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
    for gen_dir in _subdirs(base):
        if _class_layout_of(gen_dir) == layout:
            samples.extend(_class_samples(gen_dir, layout, gen_dir.name))
            continue
        # CNNDetection keeps one folder per object class under each generator; merge them.
        for class_dir in _subdirs(gen_dir):
            if _class_layout_of(class_dir) == layout:
                samples.extend(_class_samples(class_dir, layout, gen_dir.name))
    return samples


def _discover_genimage(root: Path, split: str | None) -> list[Sample]:
    if _class_layout_of(root) == "genimage":
        if split is not None:
            log.warning("%s: split %r requested but the dataset has no split folders; using all", root, split)
        return _class_samples(root, "genimage", _generator_name(root))
    if split_folders(root):
        return _class_samples(_select_split(root, "genimage", split), "genimage", _generator_name(root))
    samples: list[Sample] = []
    for gen_dir in _subdirs(root):
        if split_folders(gen_dir):
            base = _select_split(gen_dir, "genimage", split)
            samples.extend(_class_samples(base, "genimage", gen_dir.name))
        elif _class_layout_of(gen_dir) == "genimage":
            samples.extend(_class_samples(gen_dir, "genimage", gen_dir.name))
    return samples


def _parse_label(value: str) -> int | None:
    return _CSV_LABELS.get(value.strip().lower())


def _discover_csv(path: Path) -> list[Sample]:
    if not path.is_file():
        raise DataError(f"{path}: csv layout needs a .csv file; {_LAYOUT_HELP}")
    base = path.parent
    samples: list[Sample] = []
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.reader(fh)
            header = next(reader, None)
            cols = [c.strip().lower() for c in header] if header else []
            if cols[:2] != ["path", "label"] or cols[2:] not in ([], ["generator"]):
                raise DataError(f"{path}: line 1: header must be 'path,label[,generator]', got {header!r}")
            for row in reader:
                line = reader.line_num
                if not row or all(not c.strip() for c in row):
                    continue
                if len(row) != len(cols):
                    raise DataError(f"{path}: line {line}: expected {len(cols)} columns, got {len(row)}")
                rel = row[0].strip()
                if not rel:
                    raise DataError(f"{path}: line {line}: empty path")
                label = _parse_label(row[1])
                if label is None:
                    raise DataError(
                        f"{path}: line {line}: bad label {row[1]!r} "
                        "(use 0/1, real/fake, nature/ai or generated)"
                    )
                gen = row[2].strip() if len(cols) == 3 and row[2].strip() else "unknown"
                file = (base / rel) if not Path(rel).is_absolute() else Path(rel)
                if not file.is_file():
                    raise DataError(f"{path}: line {line}: image file not found: {file}")
                samples.append(Sample(file, label, gen))
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not a UTF-8 text CSV ({exc.reason})") from None
    except csv.Error as exc:
        raise DataError(f"{path}: malformed CSV: {exc}") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read CSV ({exc.strerror or exc})") from None
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


def _class_name(label: int) -> str:
    return "real" if label == REAL else "generated"


def require_both_classes(samples: Iterable[Sample], what: str) -> None:
    """Raise DataError unless ``samples`` hold both real and generated images.

    Args:
        what: name of the set for the message, e.g. ``"training set"``.
    """
    counts = {REAL: 0, FAKE: 0}
    for s in samples:
        counts[s.label] = counts.get(s.label, 0) + 1
    for label in (REAL, FAKE):
        if counts[label] == 0:
            other = FAKE if label == REAL else REAL
            raise DataError(
                f"{what} has only {_class_name(other)} images ({counts[other]}) and no "
                f"{_class_name(label)} ones; both classes are needed"
            )


def _group_rng(seed: int, *key: object) -> np.random.Generator:
    # Seeding each group from its own name keeps one group's draw independent of the others.
    digest = zlib.crc32("\x1f".join(map(str, key)).encode("utf-8"))
    return np.random.default_rng([seed, digest])


def _by_generator(samples: Iterable[Sample]) -> dict[str, list[Sample]]:
    groups: dict[str, list[Sample]] = defaultdict(list)
    for s in samples:
        groups[s.generator].append(s)
    return {g: sorted(v) for g, v in sorted(groups.items())}


def _spread_pick(samples: Sequence[Sample], k: int, seed: int, label: int) -> list[Sample]:
    """Pick k samples round-robin over generators, each generator's order shuffled by seed."""
    queues = []
    for gen, group in _by_generator(samples).items():
        order = _group_rng(seed, label, gen).permutation(len(group))
        queues.append([group[i] for i in order])
    picked: list[Sample] = []
    depth = 0
    while len(picked) < k:
        for queue in queues:
            if depth < len(queue) and len(picked) < k:
                picked.append(queue[depth])
        depth += 1
    return picked


def balanced_subset(samples: Sequence[Sample], n: int, seed: int) -> list[Sample]:
    """A seeded class-balanced subset: ``n // 2`` real and ``n - n // 2`` generated images.

    Within a class the pick is spread evenly across generators (round-robin), so each
    generator gets ``k // G`` or one more unless it has too few.

    Returns:
        Sorted list of ``n`` samples; same inputs and seed give the same list.

    Raises:
        ConfigError: ``n`` is negative.
        DataError: a class has fewer images than needed.
    """
    if n < 0:
        raise ConfigError(f"subset size must be >= 0, got {n}")
    wanted = {REAL: n // 2, FAKE: n - n // 2}
    out: list[Sample] = []
    for label, k in wanted.items():
        pool = [s for s in samples if s.label == label]
        if len(pool) < k:
            raise DataError(
                f"balanced subset of {n} needs {k} {_class_name(label)} images, only {len(pool)} available"
            )
        out.extend(_spread_pick(pool, k, seed, label))
    return sorted(out)


def limit_per_class(samples: Sequence[Sample], n: int, seed: int) -> list[Sample]:
    """Keep at most ``n`` samples per (generator, class), chosen with a seeded shuffle.

    Returns:
        Sorted list.

    Raises:
        ConfigError: ``n`` is negative.
    """
    if n < 0:
        raise ConfigError(f"per-class limit must be >= 0, got {n}")
    groups: dict[tuple[str, int], list[Sample]] = defaultdict(list)
    for s in samples:
        groups[(s.generator, s.label)].append(s)
    out: list[Sample] = []
    for (gen, label), group in sorted(groups.items()):
        group.sort()
        if len(group) > n:
            keep = _group_rng(seed, label, gen).permutation(len(group))[:n]
            group = [group[i] for i in sorted(keep)]
        out.extend(group)
    return sorted(out)


def summarize(samples: Iterable[Sample]) -> dict:
    """Counts per generator and class.

    Returns:
        ``{"total": N, "real": R, "fake": F, "generators": {name: {"real": r, "fake": f}}}``
        with generators sorted by name.
    """
    per_gen: dict[str, dict[str, int]] = defaultdict(lambda: {"real": 0, "fake": 0})
    for s in samples:
        per_gen[s.generator]["real" if s.label == REAL else "fake"] += 1
    generators = {g: dict(c) for g, c in sorted(per_gen.items())}
    real = sum(c["real"] for c in generators.values())
    fake = sum(c["fake"] for c in generators.values())
    return {"total": real + fake, "real": real, "fake": fake, "generators": generators}
