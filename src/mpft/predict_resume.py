"""``mpft predict --output OUT --resume``: what an earlier, interrupted run already wrote to OUT.

Every resumable format commits rows as it goes: jsonl and csv write and flush one line per image,
parquet renames whole part files into its folder. A killed run (SIGKILL, power loss of the
process) therefore leaves complete rows plus at most one partial line at the end of a text file.
:func:`read_resume` cuts that line off, reads which inputs have a row, and the command scores the
others only, appending to the same output: a run killed at 60% scores the last 40% when resumed.

An input counts as done when it has any row, an error row included (an unreadable file stays
unreadable; delete its row to try it again). Inputs are matched by their path as the command
line expanded it, so resume with the same PATH arguments.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from mpft.errors import ConfigError
from mpft.fsutil import atomic_write_text

__all__ = ["RESUMABLE_FORMATS", "ResumeState", "read_resume", "remaining"]

log = logging.getLogger(__name__)

#: Formats whose output can be appended to after a crash (json is one array, table is for people).
RESUMABLE_FORMATS = ("jsonl", "csv", "parquet")


@dataclass(frozen=True)
class ResumeState:
    """What OUT already holds: the paths with a row, the model ids that scored them, the row count."""

    done: frozenset[str] = frozenset()
    model_ids: frozenset[str] = frozenset()
    rows: int = 0

    @property
    def empty(self) -> bool:
        return self.rows == 0

    def check_model(self, model_id: str, output: Path) -> None:
        """Raises ConfigError when OUT holds rows of another detector: one file, one model."""
        others = sorted(self.model_ids - {model_id})
        if others:
            raise ConfigError(
                f"--resume: {output} holds rows of {', '.join(others)}, but this run scores with {model_id}; "
                "use the same --model/--precision as the first run, or another --output"
            )


def _cut_partial_line(path: Path) -> int:
    """Truncate ``path`` after its last newline (a line cut short by a kill); returns bytes removed."""
    size = path.stat().st_size
    with open(path, "rb+") as fh:
        pos = size
        while pos > 0:
            step = min(65536, pos)
            fh.seek(pos - step)
            chunk = fh.read(step)
            nl = chunk.rfind(b"\n")
            if nl >= 0:
                pos = pos - step + nl + 1
                break
            pos -= step
        if pos < size:
            fh.truncate(pos)
            fh.flush()
            os.fsync(fh.fileno())
    return size - pos


def _read_jsonl(path: Path) -> tuple[list[str], list[str]]:
    paths, models = [], []
    with open(path, encoding="utf-8", errors="surrogateescape") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                paths.append(row["path"])
            except (json.JSONDecodeError, KeyError, TypeError):
                raise ConfigError(
                    f"--resume: line {n} of {path} is not an mpft predict jsonl row; was the file written by "
                    "`mpft predict --format jsonl`?"
                ) from None
            models.append(row.get("model_id", ""))
    return paths, models


def _read_csv(path: Path) -> tuple[list[str], list[str]]:
    from mpft.predict_io import COLUMNS

    text = path.read_text(encoding="utf-8", errors="surrogateescape")
    records: list[list[str]] = []
    cut_in_quotes = True
    # a quoted field (a newline in a file name) cut short by the kill ends the reading: dropped below
    with contextlib.suppress(csv.Error):
        for record in csv.reader(io.StringIO(text, newline=""), strict=True):
            records.append(record)
        cut_in_quotes = False
    if records and tuple(records[0]) != COLUMNS:
        raise ConfigError(f"--resume: {path} does not start with the header of `mpft predict --format csv`")
    complete = [r for r in records[1:] if len(r) == len(COLUMNS)]
    if cut_in_quotes or len(complete) != len(records) - 1:
        # rewrite the complete rows only, so the appended rows start on a record boundary
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerows([list(COLUMNS), *complete])
        atomic_write_text(path, buf.getvalue())
    col_path, col_model = COLUMNS.index("path"), COLUMNS.index("model_id")
    return [r[col_path] for r in complete], [r[col_model] for r in complete]


def _read_parquet(folder: Path) -> tuple[list[str], list[str]]:
    import pyarrow.parquet as pq

    paths, models = [], []
    for part in sorted(folder.glob("part-*.parquet")):
        table = pq.read_table(part, columns=["path", "model_id"])
        paths.extend(table.column("path").to_pylist())
        models.extend(table.column("model_id").to_pylist())
    for stale in folder.glob(".part-*"):
        # the temp file of a part a kill interrupted before its rename: never a complete part
        stale.unlink(missing_ok=True)
    return paths, models


def read_resume(output: Path, fmt: str) -> ResumeState:
    """The state of ``output`` for ``--resume`` (an empty state when it does not exist yet).

    Cuts a partial last line of a jsonl or csv file (the row a kill interrupted) and removes the
    temp file of an unfinished parquet part, so the run can append to what remains.

    Raises:
        ConfigError: ``fmt`` cannot be resumed, or ``output`` is not an mpft predict output of ``fmt``.
    """
    if fmt not in RESUMABLE_FORMATS:
        raise ConfigError(f"--resume needs --format {', '.join(RESUMABLE_FORMATS)} (got {fmt}): "
                          "those write each row as it is scored")
    if not os.path.lexists(output):
        return ResumeState()
    if fmt == "parquet":
        if not output.is_dir():
            raise ConfigError(f"--resume: {output} is not a folder of parquet parts")
        paths, models = _read_parquet(output)
    else:
        if not output.is_file():
            raise ConfigError(f"--resume: {output} is not a regular file")
        cut = _cut_partial_line(output)
        if cut:
            log.info("%s: removed a partial last row (%d bytes) left by the interrupted run", output, cut)
        paths, models = _read_jsonl(output) if fmt == "jsonl" else _read_csv(output)
    return ResumeState(frozenset(paths), frozenset(models), len(paths))


def remaining(inputs: list[Path], state: ResumeState) -> list[Path]:
    """``inputs`` without those that already have a row, order kept."""
    return [p for p in inputs if str(p) not in state.done]
