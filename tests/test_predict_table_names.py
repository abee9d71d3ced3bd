"""`mpft predict --format table`: one line per image, whatever characters a file name holds.

A file name may contain a newline (any byte but ``/`` and NUL). CSV quotes it and JSON escapes it;
the table printed it raw, so one image's row became two lines.
"""

from __future__ import annotations

import io

from mpft.detector import Prediction
from mpft.predict_io import make_writer


def test_table_row_of_a_name_with_a_newline_is_one_line() -> None:
    buf = io.StringIO()
    writer = make_writer("table", buf)
    writer.write(Prediction("photos/a\nb.png", 0.9, "generated", 0.5, "mpft-x"))
    writer.write(Prediction("photos/c\rd.png", None, "error", 0.5, "mpft-x", error="photos/c\rd.png: empty file"))
    writer.close()
    lines = buf.getvalue().splitlines()
    assert len(lines) == 3, lines  # header + one line per image
    assert lines[1].startswith("photos/a\\nb.png")
    assert "photos/c\\rd.png" in lines[2] and "error: photos/c\\rd.png: empty file" in lines[2]


def test_csv_and_json_keep_the_exact_name() -> None:
    import csv
    import json

    name = "photos/a\nb\x1b.png"
    for fmt in ("csv", "json", "jsonl"):
        buf = io.StringIO()
        writer = make_writer(fmt, buf)
        writer.write(Prediction(name, 0.9, "generated", 0.5, "mpft-x"))
        writer.close()
        text = buf.getvalue()
        if fmt == "csv":
            paths = [row["path"] for row in csv.DictReader(io.StringIO(text))]
        elif fmt == "json":
            paths = [row["path"] for row in json.loads(text)]
        else:
            paths = [json.loads(line)["path"] for line in text.splitlines()]
        assert paths == [name], fmt
