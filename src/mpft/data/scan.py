"""Safe folder walks: which entries of a folder tree are images, and which are never read.

Hidden files and folders are skipped; FIFOs, sockets and devices are never opened (reading a
FIFO blocks forever); symbolic links to folders are followed unless they loop. Images are
recognised by content (:func:`mpft.data.sniff.is_image_file`), never by extension alone.
Used by dataset discovery (:mod:`mpft.data.layouts`) and by ``mpft predict``'s folder inputs.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from mpft.data.sniff import is_image_file
from mpft.errors import DataError
from mpft.fsutil import link_problem, special_file_kind

__all__ = [
    "FolderScan",
    "IMAGE_SUFFIXES",
    "list_images",
    "list_subdirs",
    "log_skipped",
    "scan_folder",
]

log = logging.getLogger(__name__)

#: Names that promise an image. A scan keeps regular files with these names whose content is
#: not an image apart (:attr:`FolderScan.misnamed`), so a broken ``.jpg`` can be reported.
IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".gif", ".webp", ".bmp", ".tif", ".tiff"}
)


def _visible_entries(folder: str | os.PathLike[str]) -> list[os.DirEntry[str]]:
    """Entries of ``folder`` whose names do not start with a dot; OSError if it cannot be listed."""
    with os.scandir(folder) as it:
        return [e for e in it if not e.name.startswith(".")]


def list_subdirs(folder: Path) -> list[Path]:
    """Non-hidden sub-directories of ``folder``, sorted; [] if it cannot be listed.

    Links to folders count, except looping ones (``up -> ..``): those are never followed.
    """
    try:
        entries = _visible_entries(folder)
    except OSError:
        return []
    out = []
    for e in entries:
        if e.is_symlink() and link_problem(e.path) is not None:
            continue
        try:
            if e.is_dir(follow_symlinks=True):
                out.append(Path(e.path))
        except OSError:  # a link that cannot be resolved is no folder
            continue
    return sorted(out)


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
            entries = _visible_entries(current)
        except OSError as exc:
            raise DataError(f"{current}: cannot list folder ({exc.strerror or exc})") from None
        for entry in entries:
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
