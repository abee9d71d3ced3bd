"""The load test script runs in CI with a small count; its response checks can fail."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.kit import load_script

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "load_serve.py"


@pytest.mark.slow  # a server and 16 clients in a subprocess (~8 s); test_check_body_flags_wrong_answers stays quick
def test_load_script_small_run(tmp_path, serve_checkpoint):
    out = tmp_path / "summary.json"
    # --model: the fixture's checkpoint spares the script a torch import of its own; the server
    # runs with its default settings, and 16 concurrent clients must get no 503
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--model", str(serve_checkpoint), "--requests", "40", "--clients", "16",
         "--fail-on-503", "--time-budget", "60", "--json", str(out)],
        capture_output=True, text=True, timeout=180,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads(out.read_text())
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == summary
    assert summary["ok"] and summary["requests_sent"] == 40
    assert set(summary["status_counts"]) == {"200", "413", "415", "422"}
    assert summary["images_scored"] >= 16 and summary["scored_images_per_s"] > 0
    assert summary["queue"]["images"] >= summary["images_scored"]  # every scored image went through the queue
    assert summary["by_kind"]["bomb"] == {"422": 4} and summary["by_kind"]["text"] == {"415": 4}
    assert summary["server_rss_mb"]["peak_VmHWM"] > 50
    assert summary["latency_ms_all"]["p50"] > 0


def test_check_body_flags_wrong_answers():
    mod = load_script("load_serve")
    req = httpx.Request("POST", "http://127.0.0.1/api/v1/predict")

    def resp(status, body, headers=None):
        return httpx.Response(status, json=body, headers=headers, request=req)

    good = {"results": [{"error": None}]}
    assert mod.check_body("valid", 1, resp(200, good)) is None
    assert "per-file error" in mod.check_body("truncated", 1, resp(200, good))
    assert "2 results" in mod.check_body("valid", 1, resp(200, {"results": [{"error": None}] * 2}))
    assert "Retry-After" in mod.check_body("valid", 1, resp(503, {"detail": "busy"}))
    assert mod.check_body("valid", 1, resp(503, {"detail": "busy"}, {"Retry-After": "1"})) is None
    assert "detail" in mod.check_body("text", 1, resp(415, {"error": "x"}))
    # every malformed kind may only get its one rejection status
    assert all(len(v) == 1 for k, v in mod.EXPECTED.items() if k not in mod.MODEL_KINDS)
