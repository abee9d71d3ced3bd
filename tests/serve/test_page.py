"""The page's script without a browser: static/app.js under node, with a minimal DOM built from
static/index.html (tests/serve/page_harness.js). The Chromium test (test_browser.py) checks the
same behaviour end to end where Chromium is installed."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from mpft.serve.app import STATIC_DIR
from tests.kit import require

HARNESS = Path(__file__).with_name("page_harness.js")
NODE = shutil.which("node") or shutil.which("nodejs")


def page_after(scenario: str) -> dict:
    require(NODE is not None, "node", "install Node.js (the page's script runs under it)")
    proc = subprocess.run([NODE, str(HARNESS), str(STATIC_DIR), scenario], capture_output=True, text=True,
                          timeout=30)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_a_scored_image_shows_the_card_and_the_heatmap():
    page = page_after("ok")
    assert page["result"]["shown"] and page["verdict"]["text"] == "generated"
    assert page["probability"]["text"] == "91.0%"
    assert page["preview"]["shown"] and page["heatmap"]["shown"] and not page["error"]["shown"]


@pytest.mark.parametrize("scenario", ["rejected", "unreachable"])
def test_a_failed_request_shows_only_the_error(scenario):
    page = page_after(scenario)
    assert page["error"]["shown"]
    expected = "not a supported image" if scenario == "rejected" else "could not be reached"
    assert expected in page["error"]["text"]
    # no empty result card, and no broken-image icon above the error
    assert not page["result"]["shown"]
    assert not (page["preview"]["shown"] and page["preview"]["broken"])
