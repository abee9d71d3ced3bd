"""Data-parallel training with torchrun on 2 CPU processes (gloo) equals single-process training."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from tests.kit import genimage_tree


def _run(args: list[str], cwd) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_two_processes_match_one_on_the_same_global_batch(tmp_path):
    data = genimage_tree(tmp_path / "data", n_per_class=8)
    common = ["train", str(data), "--backbone", "random:tiny", "--tune", "last-k", "--layers", "2",
              "--mask", "tam", "--epochs", "2", "--batch-size", "4", "--workers", "0", "--device", "cpu"]
    single = _run([sys.executable, "-m", "mpft", *common, "--out", str(tmp_path / "one")], tmp_path)
    assert single.returncode == 0, single.stderr[-2000:]
    multi = _run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                  "-m", "mpft", *common, "--out", str(tmp_path / "two")], tmp_path)
    assert multi.returncode == 0, multi.stderr[-3000:]
    a = load_file(str(tmp_path / "one" / "last" / "model.safetensors"))
    b = load_file(str(tmp_path / "two" / "last" / "model.safetensors"))
    assert set(a) == set(b)
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=2e-5, rtol=1e-4)
    # the head bias starts at zero: training moved it, so these are not two untrained models
    assert a["head.bias"].abs().item() > 0
