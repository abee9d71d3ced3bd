"""CI cannot pass by skipping (issue 18 item 5): the rules, checked on the test suite and .ci/run.

A test whose prerequisite (the shared data, the B/16 weights, node, chromium) is missing calls
``tests.kit.require``: it skips on a developer's machine and fails under ``CI=true``. The only
other skips are platform facts listed below with their reason.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from tests import kit

ROOT = Path(__file__).resolve().parents[1]
TESTS = ROOT / "tests"

# (file, the skip's reason text) of skips that no installation can fix, so CI may skip them too
PLATFORM_SKIPS = {
    ("tests/fifo_guard.py", "named pipes need a POSIX system"),
    ("tests/data/test_images.py", "needs /proc"),
    ("tests/test_detector_api.py", "Pillow built without WebP"),
    ("tests/test_detector_api.py", "Pillow cannot write animated WebP here"),
    ("tests/test_output_checks.py", "root may write anywhere"),
}


def _calls(tree: ast.AST, names: tuple[str, ...]):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in names:
            yield node


def _text(node: ast.AST) -> str:
    """The literal text of a skip reason (f-strings: their constant parts)."""
    if isinstance(node, ast.Constant):
        return str(node.value)
    if isinstance(node, ast.JoinedStr):
        return "".join(v.value for v in node.values if isinstance(v, ast.Constant)).strip(": ")
    return ""


def _test_files() -> list[Path]:
    return [p for p in sorted(TESTS.rglob("*.py")) if p.name != "kit.py"]


def test_no_importorskip_of_the_projects_own_modules():
    for path in _test_files():
        for call in _calls(ast.parse(path.read_text()), ("importorskip",)):
            module = _text(call.args[0]) if call.args else ""
            assert not module.startswith("mpft"), f"{path.relative_to(ROOT)}:{call.lineno} importorskip({module!r})"


def test_every_skip_is_a_platform_fact_or_goes_through_require():
    found = set()
    for path in _test_files():
        tree = ast.parse(path.read_text())
        for call in _calls(tree, ("skip", "skipif", "importorskip")):
            if isinstance(call.func.value, ast.Name) and call.func.value.id == "pytest" or (
                isinstance(call.func.value, ast.Attribute) and call.func.value.attr == "mark"
            ):
                reason = _text(call.args[0]) if call.func.attr == "skip" and call.args else ""
                for kw in call.keywords:
                    if kw.arg == "reason":
                        reason = _text(kw.value)
                key = (str(path.relative_to(ROOT)), reason)
                assert any(key[0] == f and reason.startswith(r) for f, r in PLATFORM_SKIPS), (
                    f"{key[0]}:{call.lineno}: a skip that is not a platform fact ({reason!r}); a missing "
                    "prerequisite must call tests.kit.require, which fails under CI=true"
                )
                found.add(key)
    assert len(found) == len(PLATFORM_SKIPS), f"stale PLATFORM_SKIPS entries: {PLATFORM_SKIPS - found}"


@pytest.mark.parametrize("ci", ["true", "", None])
def test_require_skips_locally_and_fails_under_ci(monkeypatch, ci):
    if ci is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", ci)
    kit.require(True, "anything", "nothing to do")  # present: nothing happens
    expected = pytest.fail.Exception if ci == "true" else pytest.skip.Exception
    with pytest.raises(expected, match="node is missing: install it"):
        kit.require(False, "node", "install it")


def test_ci_script_installs_and_checks_what_the_tests_need():
    script = (ROOT / ".ci" / "run").read_text()
    assert re.search(r"^export CI=true$", script, re.M), "the suite must run with CI=true"
    assert "ruff check src tests benchmarks" in script
    assert "mpft backbone fetch clip-vit-b16" in script
    assert "apt-get install" in script and "chromium" in script
    assert "command -v node" in script
    # the README's test command, as written there
    readme = (ROOT / "README.md").read_text()
    assert "pip install -e '.[dev,ray]' && python -m pytest -q" in readme and (
        "pip install -e '.[dev,ray]' && python -m pytest -q" in script
    )


def test_strict_markers_are_on():
    import tomllib

    opts = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]["addopts"]
    assert "--strict-markers" in opts.split()
