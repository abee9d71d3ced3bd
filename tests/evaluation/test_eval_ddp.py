"""``torchrun --nproc-per-node 2 -m mpft eval`` on CPU gives the metrics of a single-process run.

Two CPU processes (gloo) each score half of the images; rank 0 gathers them and writes the report.
Slow: it starts two Python processes that import torch and transformers (~25 s on 2 busy cores).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mpft.evaluation import evaluate

pytestmark = pytest.mark.slow


def _conditions(path: Path) -> list[dict]:
    return json.loads(path.read_text())["conditions"]


def test_torchrun_two_processes_match_single_process(
    eval_checkpoint: Path, eval_tree: Path, tmp_path: Path
) -> None:
    out = tmp_path / "ddp"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
        "-m", "mpft", "eval", str(eval_checkpoint), str(eval_tree), "--out", str(out),
        "--perturb", "jpeg:75", "--n-boot", "50", "--device", "cpu", "--batch-size", "4",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=240, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # only rank 0 prints the table and writes files
    assert proc.stdout.count("mpft evaluation: clean") == 1
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == sorted(
        ["metrics.json", "metrics.csv", "report.md", "scores.csv", "roc.png", "histograms.png", "sweep.png"]
    )

    single = tmp_path / "single"
    evaluate(eval_checkpoint, [eval_tree], out=single, perturb=["jpeg:75"], n_boot=50, device="cpu")
    ddp_conds, single_conds = _conditions(out / "metrics.json"), _conditions(single / "metrics.json")
    assert [c["name"] for c in ddp_conds] == ["clean", "jpeg:75"]
    # Batches differ between 1 and 2 processes, so scores may differ in the last float bits;
    # every figure must still agree to far better than any reported digit.
    assert _close(ddp_conds, single_conds)
    ddp_meta = json.loads((out / "metrics.json").read_text())["meta"]
    assert ddp_meta["n_skipped"] == 1 and ddp_meta["skipped"][0]["path"].endswith("broken.png")
    ddp_scores = sorted((out / "scores.csv").read_text().splitlines())
    single_scores = sorted((single / "scores.csv").read_text().splitlines())
    assert len(ddp_scores) == len(single_scores) == 1 + 2 * 24


def _close(a: object, b: object) -> bool:
    """Deep equality with a relative tolerance on floats (pytest.approx does not nest this deep)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_close(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) and isinstance(b, float):
        return a == pytest.approx(b, rel=1e-6, abs=1e-9)
    return a == b
