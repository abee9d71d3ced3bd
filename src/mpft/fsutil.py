"""File-system helpers.

Atomic file and directory writes (a reader sees the old content or the new, never half of
either); checks that an output location is writable, run before any long work; and what a
path found in a folder scan is (regular file, FIFO, device, looping symbolic link).
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_directory(final: Path) -> Iterator[Path]:
    """Yield a temp dir beside ``final``; on success it replaces ``final``, on error it is removed."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    try:
        yield tmp
        tmp.chmod(0o755)
        for f in tmp.iterdir():
            f.chmod(0o644)  # readable by a server or CI running as another user
        if final.exists():
            old = final.with_name(f".{final.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            final.rename(old)
            tmp.rename(final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


@contextmanager
def atomic_file(path: Path) -> Iterator[Path]:
    """Yield a temp path beside ``path`` to write to; on success it replaces ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    with atomic_file(path) as tmp:
        tmp.write_text(text)


# ---- checks before work --------------------------------------------------------------------------
def _first_existing(path: Path) -> tuple[Path, list[str]]:
    """The deepest existing ancestor-or-self of ``path`` and the names below it still to create."""
    missing: list[str] = []
    current = path
    while not os.path.lexists(current):
        if current.parent == current:
            break
        missing.append(current.name)
        current = current.parent
    return current, missing


def require_writable_dir(path: str | os.PathLike[str], what: str) -> Path:
    """Check, without creating anything, that ``path`` is a directory mpft can create or write into.

    Called before any long work (training, scoring, a backbone download) so that a bad output
    location fails at once instead of after it: the folder itself, or its deepest existing
    ancestor, must be a writable directory, and no component may be a file.

    Args:
        path: the output directory.
        what: how the user named it, for the message (``"--out"``, ``"MPFT_HOME"``).

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        ConfigError: a component is a file (or a dangling link), or the directory is not writable.
    """
    from mpft.errors import ConfigError

    path = Path(os.path.expanduser(os.fspath(path)))
    existing, missing = _first_existing(path.absolute())
    if not existing.is_dir():
        kind = "a broken symbolic link" if existing.is_symlink() and not existing.exists() else "not a directory"
        where = "" if not missing else f" (it would hold {Path(*reversed(missing))})"
        raise ConfigError(f"{what} {path}: {existing} is {kind}{where}; choose a folder path")
    if not os.access(existing, os.W_OK | os.X_OK):
        verb = "write into" if not missing else "create folders in"
        raise ConfigError(f"{what} {path}: cannot {verb} {existing} (permission denied or read-only)")
    return path


def require_writable_file(path: str | os.PathLike[str], what: str) -> Path:
    """Check, without creating anything, that a file can be written at ``path``.

    Raises:
        ConfigError: ``path`` is a directory, or its folder cannot be created or written into.
    """
    from mpft.errors import ConfigError

    path = Path(os.path.expanduser(os.fspath(path)))
    if path.is_dir():
        raise ConfigError(f"{what} {path}: is a directory; give a file name")
    if path.exists() and not os.access(path, os.W_OK):
        raise ConfigError(f"{what} {path}: file is not writable")
    require_writable_dir(path.absolute().parent, what)
    return path


# ---- what a path is ------------------------------------------------------------------------------
def special_file_kind(mode: int) -> str | None:
    """A name for a non-regular, non-directory file type (``"named pipe (FIFO)"`` ...), else None.

    Reading a FIFO blocks until a writer appears and a device may never end, so folder scans and
    decoders must not open them.
    """
    if stat.S_ISFIFO(mode):
        return "named pipe (FIFO)"
    if stat.S_ISSOCK(mode):
        return "socket"
    if stat.S_ISCHR(mode):
        return "character device"
    if stat.S_ISBLK(mode):
        return "block device"
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return None
    return "special file"


def _is_within(inner: str, outer: str) -> bool:
    """True when real path ``inner`` is ``outer`` or below it."""
    return inner == outer or inner.startswith(outer.rstrip(os.sep) + os.sep)


def link_problem(path: str | os.PathLike[str], ancestors: Iterable[str] = ()) -> str | None:
    """Why following the symbolic link ``path`` would break a folder walk, or None.

    - a link that never resolves (``a -> b``, ``b -> a``): a loop;
    - a link to a folder that contains the link (``d/up -> ..``): walking it reaches the link
      again, and on the way it escapes into the parent and scans unrelated files;
    - a link to a folder already on the walk (``ancestors``: real paths of the folders being
      walked): a loop through several links.

    A dangling link is not reported here (it reads as a missing file). Paths that are not links
    give None.
    """
    p = os.fspath(path)
    if not os.path.islink(p):
        return None
    try:
        os.stat(p)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return f"symbolic link loop ({p} -> {os.readlink(p)} never reaches a file)"
        return None
    if not os.path.isdir(p):
        return None
    target = os.path.realpath(p)
    if _is_within(os.path.realpath(os.path.dirname(os.path.abspath(p))), target):
        return f"symbolic link to a folder that contains it ({p} -> {os.readlink(p)}): a loop"
    if target in set(ancestors):
        return f"symbolic link loop ({p} -> {os.readlink(p)} leads back to {target})"
    return None
