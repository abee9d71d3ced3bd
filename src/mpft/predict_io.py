"""Input expansion and streaming output writers for ``mpft predict``.

Inputs: files, folders (images found by content, plus files named like images so that a
broken ``.jpg`` is reported rather than silently skipped), glob patterns (expanded here so
quoted globs work on every shell) and ``-`` for a list of paths on stdin.

Outputs: ``table``, ``jsonl`` and ``csv`` write and flush one row per result, so an
interrupted run keeps every finished row; ``json`` writes one array when the run ends
(also when it is interrupted, with the rows finished so far); ``parquet`` writes a folder of
part files, each complete when it appears (for large runs; needs pyarrow, the ``ray`` extra).
"""

from __future__ import annotations

import csv
import glob
import json
import logging
import os
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from mpft.data.scan import IMAGE_SUFFIXES, log_skipped, scan_folder
from mpft.decision import check_band, check_threshold
from mpft.display import display_name
from mpft.errors import ConfigError
from mpft.fsutil import atomic_file, link_problem

if TYPE_CHECKING:  # the detector pulls in torch; this module must stay light for `mpft --help`
    from mpft.detector import Prediction

__all__ = [
    "COLUMNS",
    "FOLDER_FORMATS",
    "FORMATS",
    "IMAGE_SUFFIXES",
    "RowWriter",
    "check_decision",
    "expand_inputs",
    "make_writer",
    "PARQUET_PART_ROWS",
    "ParquetWriter",
    "parquet_schema",
    "require_pyarrow",
    "prediction_row",
    "read_path_list",
    "check_format",
]

log = logging.getLogger(__name__)

FORMATS = ("table", "json", "jsonl", "csv", "parquet")
#: Formats written to a folder of files rather than a text stream (``--output`` required).
FOLDER_FORMATS = frozenset({"parquet"})
#: Rows per Parquet part file: a killed run re-scores at most this many finished images.
PARQUET_PART_ROWS = 1024
#: Output columns, in order, of every format.
COLUMNS = ("path", "probability", "verdict", "threshold", "model_id", "error", "notes")
_GLOB_CHARS = frozenset("*?[")


# ---- inputs --------------------------------------------------------------------------------------
def read_path_list(lines: Iterable[str]) -> list[str]:
    """Paths from a text stream, one per line; blank lines are skipped, spaces inside kept.

    Only the line ending (and a Windows ``\\r``) is removed: file names may start or end
    with spaces.
    """
    out = []
    for line in lines:
        entry = line.rstrip("\r\n")
        if entry.strip():
            out.append(entry)
    return out


def _has_glob(text: str) -> bool:
    return any(c in _GLOB_CHARS for c in text)


def _beyond_bad_link(path: Path) -> bool:
    """True when a folder above ``path`` is a looping symbolic link (``up -> ..``)."""
    return any(parent.is_symlink() and link_problem(parent) is not None for parent in path.parents)


def _expand_folder(folder: Path, recursive: bool) -> list[Path]:
    """Files of ``folder`` to score, sorted: images (by content), files named like images whose
    content is not one, and entries that must not be read but promise something: looping
    symbolic links (always) and FIFOs / devices named like images. Each of the last two gets
    its error row from the decoder; other FIFOs, sockets and devices are skipped with a count."""
    scan = scan_folder(folder, recursive)
    rows = {*scan.images, *scan.misnamed, *(p for p, _ in scan.bad_links)}
    quiet = [(p, why) for p, why in scan.special if p.suffix.lower() not in IMAGE_SUFFIXES]
    rows.update(p for p, _ in scan.special if p.suffix.lower() in IMAGE_SUFFIXES)
    log_skipped(folder, quiet)
    if not rows:
        log.warning("%s: no images found (files are recognised by content, any extension)", folder)
    return sorted(rows)


def expand_inputs(
    paths: Sequence[str], *, recursive: bool = True, stdin: Iterable[str] | None = None
) -> list[Path]:
    """Turn command-line PATH arguments into the ordered list of files to score.

    Args:
        paths: files, folders, glob patterns (``*``, ``?``, ``[...]``, ``**``), or ``-``.
        recursive: descend into sub-folders of folder arguments (and of folders a glob matches).
        stdin: lines to read for ``-`` (one path per line, each expanded like an argument).
            Read at most once, however many ``-`` there are.

    Returns:
        Files in argument order, folder contents sorted, duplicates dropped (first kept).
        A path that does not exist, or a glob that matches nothing, is kept as it is so that
        the caller reports an error row for it instead of dropping it silently.
    """
    queue: list[str] = []
    stdin_used = False
    for arg in paths:
        if arg == "-":
            if stdin_used:
                continue
            stdin_used = True
            if stdin is None:
                raise ConfigError("'-' reads paths from stdin, but no stdin was given")
            queue.extend(read_path_list(stdin))
        else:
            queue.append(arg)

    out: list[Path] = []
    seen: set[Path] = set()

    def add(p: Path) -> None:
        if p not in seen:
            seen.add(p)
            out.append(p)

    for arg in queue:
        p = Path(os.path.expanduser(arg))
        # an existing file whose name holds glob characters is taken literally
        if p.is_dir():
            for f in _expand_folder(p, recursive):
                add(f)
        elif p.exists() or not _has_glob(arg):
            add(p)
        else:
            # `**` follows links into folders: drop what lies beyond a looping link (the link
            # itself is matched too and gets its error row)
            matches = sorted(m for m in glob.glob(os.path.expanduser(arg), recursive=True)
                             if not _beyond_bad_link(Path(m)))
            if not matches:
                log.warning("%s: no file matches this pattern", arg)
                add(p)
            for m in matches:
                mp = Path(m)
                if mp.is_dir() and not (mp.is_symlink() and link_problem(mp) is not None):
                    for f in _expand_folder(mp, recursive):
                        add(f)
                else:
                    add(mp)
    return out


# ---- decisions -----------------------------------------------------------------------------------
def check_decision(threshold: float | None, band: float | None) -> None:
    """Validate ``--threshold`` (in [0, 1]) and ``--band`` (in [0, 0.5)) before any model loads.

    Raises:
        ConfigError: a value is out of range.
    """
    if threshold is not None:
        check_threshold(threshold, "--threshold")
    if band is not None:
        check_band(band, "--band")


# ---- outputs -------------------------------------------------------------------------------------
def prediction_row(pred: Prediction) -> dict:
    """One result as a dict with the keys of :data:`COLUMNS` (notes a list, probability None on error)."""
    return {
        "path": pred.source,
        "probability": pred.probability,
        "verdict": pred.verdict,
        "threshold": pred.threshold,
        "model_id": pred.model_id,
        "error": pred.error,
        "notes": list(pred.notes),
    }


class RowWriter:
    """Writes results to a text stream. ``write`` then ``close``; rows are flushed as written."""

    def __init__(self, stream: TextIO | None):
        self.stream = stream

    def write(self, pred: Prediction) -> None:
        raise NotImplementedError

    def close(self) -> None:
        self.stream.flush()

    def _emit(self, text: str) -> None:
        self.stream.write(text)
        self.stream.flush()


class JsonlWriter(RowWriter):
    def write(self, pred: Prediction) -> None:
        self._emit(json.dumps(prediction_row(pred)) + "\n")


class JsonWriter(RowWriter):
    """Buffers the rows and writes one JSON array at :meth:`close` (use jsonl to stream)."""

    def __init__(self, stream: TextIO):
        super().__init__(stream)
        self.rows: list[dict] = []

    def write(self, pred: Prediction) -> None:
        self.rows.append(prediction_row(pred))

    def close(self) -> None:
        self._emit(json.dumps(self.rows, indent=2) + "\n")


class CsvWriter(RowWriter):
    """RFC 4180 CSV with a header (``header=False`` when appending to a file that has one); notes
    joined by ``"; "``, empty cells for missing values."""

    def __init__(self, stream: TextIO, *, header: bool = True):
        super().__init__(stream)
        self._csv = csv.writer(stream, lineterminator="\n")
        if header:
            self._csv.writerow(COLUMNS)
        stream.flush()

    def write(self, pred: Prediction) -> None:
        row = prediction_row(pred)
        row["notes"] = "; ".join(row["notes"])
        # repr keeps every digit, so a probability read back equals the one computed
        row["probability"] = "" if row["probability"] is None else repr(row["probability"])
        row["error"] = row["error"] or ""
        self._csv.writerow([row[c] for c in COLUMNS])
        self.stream.flush()


class TableWriter(RowWriter):
    """Aligned text for people: path, probability (4 digits), verdict, model id, then error or notes.

    Each row is one line: control characters in a cell (a newline or carriage return in a file
    name) are shown escaped (``\\n``), as in the evaluation report; csv and json keep exact names.

    Args:
        path_width: width of the path column (longest input path, capped); longer paths
            push their row's other cells right instead of being cut.
    """

    HEADER = ("PATH", "PROBABILITY", "VERDICT", "THRESHOLD", "MODEL_ID", "ERROR/NOTES")

    def __init__(self, stream: TextIO, path_width: int = 40, model_width: int = 24):
        super().__init__(stream)
        self.widths = (
            max(len(self.HEADER[0]), min(path_width, 100)),
            len(self.HEADER[1]),
            len("uncertain"),
            len(self.HEADER[3]),
            max(len(self.HEADER[4]), model_width),
        )
        self._emit(self._line(self.HEADER))

    def _line(self, cells: Sequence[str]) -> str:
        # control characters escaped (a newline in a file name) before padding: one line per row
        cells = [display_name(c) for c in cells]
        padded = [c.ljust(w) for c, w in zip(cells, self.widths, strict=False)]
        return "  ".join([*padded, *cells[len(self.widths):]]).rstrip() + "\n"

    def write(self, pred: Prediction) -> None:
        prob = "-" if pred.probability is None else f"{pred.probability:.4f}"
        detail = f"error: {pred.error}" if pred.error else "; ".join(pred.notes)
        cells = (pred.source, prob, pred.verdict, f"{pred.threshold:g}", pred.model_id, detail)
        self._emit(self._line(cells))


def parquet_schema():
    """The Arrow schema of a Parquet part: the :data:`COLUMNS`, notes as a list of strings."""
    import pyarrow as pa

    return pa.schema([
        ("path", pa.string()), ("probability", pa.float64()), ("verdict", pa.string()),
        ("threshold", pa.float64()), ("model_id", pa.string()), ("error", pa.string()),
        ("notes", pa.list_(pa.string())),
    ])


def require_pyarrow() -> None:
    """Raises ConfigError when pyarrow (Parquet) is missing, before any model loads."""
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        raise ConfigError("--format parquet needs pyarrow: pip install 'mpft[ray]' (or pip install pyarrow)") from None


class ParquetWriter(RowWriter):
    """Rows to a folder of Parquet files (``part-<start>-<n>.parquet``), one every ``part_rows`` rows
    and one at :meth:`close`. Each part is written beside its name and renamed into place, so the
    folder only ever holds complete parts: a killed run loses the rows of its unfinished part only,
    and ``--resume`` adds parts. ``pyarrow.parquet.read_table(folder)`` (or pandas, Spark, Ray)
    reads the folder as one table.
    """

    def __init__(self, folder: Path, *, part_rows: int = PARQUET_PART_ROWS):
        super().__init__(None)
        require_pyarrow()
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.part_rows = max(1, part_rows)
        # a resumed run's parts sort after the first run's and never overwrite them
        self._prefix = f"part-{time.time_ns()}"
        self._parts = 0
        self.rows: list[dict] = []

    def write(self, pred: Prediction) -> None:
        self.rows.append(prediction_row(pred))
        if len(self.rows) >= self.part_rows:
            self._flush()

    def _flush(self) -> None:
        if not self.rows:
            return
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.Table.from_pylist(self.rows, schema=parquet_schema())
        with atomic_file(self.folder / f"{self._prefix}-{self._parts:06d}.parquet") as tmp:
            pq.write_table(table, tmp)
        self._parts += 1
        self.rows = []

    def close(self) -> None:
        self._flush()


def make_writer(fmt: str, stream: TextIO | None, *, path_width: int = 40, model_width: int = 24,
                append: bool = False, folder: Path | None = None) -> RowWriter:
    """The writer for ``fmt`` (one of :data:`FORMATS`).

    ``append``: the stream already holds rows of this format (``--resume``): no CSV header.
    ``folder``: where a folder format (parquet) writes its parts.

    Raises:
        ConfigError: unknown format name; parquet without a folder or without pyarrow.
    """
    fmt = check_format(fmt)
    if fmt == "parquet":
        if folder is None:
            raise ConfigError("--format parquet writes a folder of part files: give it with --output DIR")
        return ParquetWriter(folder)
    if fmt == "jsonl":
        return JsonlWriter(stream)
    if fmt == "json":
        return JsonWriter(stream)
    if fmt == "csv":
        return CsvWriter(stream, header=not append)
    return TableWriter(stream, path_width=path_width, model_width=model_width)


def check_format(fmt: str) -> str:
    """The normalised (lower-case) format name.

    Raises:
        ConfigError: not one of :data:`FORMATS`.
    """
    name = fmt.lower()
    if name not in FORMATS:
        raise ConfigError(f"unknown --format {fmt!r}; choose one of {', '.join(FORMATS)}")
    return name
