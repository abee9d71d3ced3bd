"""CSV sample lists: a ``path,label[,generator[,source]]`` file -> labelled samples, with line-exact errors.

The ``csv`` layout of :func:`mpft.data.layouts.discover`, for datasets whose labels are not in
the folder names.
"""

from __future__ import annotations

import csv
from pathlib import Path

from mpft.data.samples import FAKE, REAL, Sample
from mpft.errors import DataError

__all__ = ["read_csv_samples"]

# Label column values (any case, surrounding spaces ignored) -> label.
_CSV_LABELS = {
    "0": REAL,
    "real": REAL,
    "nature": REAL,
    "1": FAKE,
    "fake": FAKE,
    "ai": FAKE,
    "generated": FAKE,
}


def read_csv_samples(path: Path) -> list[Sample]:
    """The samples a CSV list names, in file order.

    Args:
        path: a UTF-8 ``.csv`` file (a BOM is allowed) with header ``path,label[,generator[,source]]``;
            relative paths are relative to the file's folder; blank rows are skipped; a missing
            generator is ``"unknown"``; ``source`` names the collection (``Sample.source``).

    Raises:
        DataError: unreadable or malformed file, a bad header or label, a wrong column count,
            an empty path, or a listed image that does not exist; with the line number.
    """
    base = path.parent
    samples: list[Sample] = []
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.reader(fh)
            header = next(reader, None)
            cols = [c.strip().lower() for c in header] if header else []
            if cols[:2] != ["path", "label"] or cols[2:] not in ([], ["generator"], ["generator", "source"]):
                raise DataError(f"{path}: line 1: header must be 'path,label[,generator[,source]]', got {header!r}")
            for row in reader:
                line = reader.line_num
                if not row or all(not c.strip() for c in row):
                    continue
                if len(row) != len(cols):
                    raise DataError(f"{path}: line {line}: expected {len(cols)} columns, got {len(row)}")
                rel = row[0].strip()
                if not rel:
                    raise DataError(f"{path}: line {line}: empty path")
                label = _CSV_LABELS.get(row[1].strip().lower())
                if label is None:
                    raise DataError(
                        f"{path}: line {line}: bad label {row[1]!r} "
                        "(use 0/1, real/fake, nature/ai or generated)"
                    )
                gen = row[2].strip() if len(cols) >= 3 and row[2].strip() else "unknown"
                source = row[3].strip() if len(cols) == 4 else ""
                file = (base / rel) if not Path(rel).is_absolute() else Path(rel)
                if not file.is_file():
                    raise DataError(f"{path}: line {line}: image file not found: {file}")
                samples.append(Sample(file, label, gen, source))
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not a UTF-8 text CSV ({exc.reason})") from None
    except csv.Error as exc:
        raise DataError(f"{path}: malformed CSV: {exc}") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read CSV ({exc.strerror or exc})") from None
    return samples
