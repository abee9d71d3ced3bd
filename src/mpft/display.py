"""Text shown to people on one line: file and folder names with control characters escaped.

Kept free of heavy imports: ``mpft predict`` (table output) and the evaluation report both use it.
"""

from __future__ import annotations

import re

__all__ = ["display_name"]

_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def display_name(s: str) -> str:
    """``s`` on one line: control characters (a newline in a folder name) shown escaped, as ``\\n``.

    File and folder names may hold any character but ``/`` (and NUL); a raw newline would break
    a table row in two. Escaped rather than dropped, so two names never look alike.
    """
    return _CONTROL_RE.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), s)
