"""benchmarks/speed.py in --quick mode: every section runs, the JSON has its keys, reruns resume.

The script runs are marked slow (subprocesses that import torch, ~60 s on 2 cores); the quick loop
keeps the in-process FLOP-count test.
"""

from __future__ import annotations

import importlib
import json
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch

from tests.kit import fill_folder, load_script

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "speed.py"


def _run(*args: str) -> subprocess.CompletedProcess:
    r = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--threads", "1", *args],
                       capture_output=True, text=True, timeout=300, check=False)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    return r


def _speedlib(name: str) -> ModuleType:
    """``benchmarks/speedlib/<name>.py``, the module speed.py takes its measurements from."""
    load_script("speed")  # puts benchmarks/ on sys.path, as running the script does
    return importlib.import_module(f"speedlib.{name}")


def _measured(stdout: str) -> int:
    m = re.search(r"(\d+) configurations measured, (\d+) reused", stdout)
    assert m, stdout[-1000:]
    return int(m.group(1))


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("speed")
    nature = fill_folder(tmp / "nature", 6, seed=1, w=64, h=48, name="{i}.jpg", fmt="JPEG")
    cifake = fill_folder(tmp / "cifake", 6, seed=2, w=32, h=32, name="{i}.jpg", fmt="JPEG")
    out = tmp / "speed.json"
    args = ("--json", str(out), "--images", str(nature), "--cifake", str(cifake))
    r = _run(*args)
    return out, args, r.stdout


EXPECTED_PREFIXES = (
    "roofline/matmul", "flops/", "forward/main/fp32/b32", "forward/main/int8/b1", "forward/large/fp32/b8",
    "e2e/nature/fp32/b32/w0", "e2e/cifake/int8/b8/w1", "peer/nature", "peer/cifake", "int8/agreement",
    "bf16/agreement", "forward/main/bf16/b8", "e2e/nature/bf16/b1/w1", "memory/predict/bf16",
    "train/last-k/drop", "train/full/fill", "memory/predict/fp32", "memory/predict/int8", "memory/train/last-k",
    "paths/baseline_inference_mode", "paths/bf16_autocast", "paths/torch_compile", "decode/nature/draft",
)


@pytest.mark.slow
def test_json_has_every_section_and_target(first_run):
    out, _, stdout = first_run
    data = json.loads(out.read_text())
    assert data["schema"] == 1 and data["meta"]["plan"]["mode"] == "quick"
    results = data["results"]
    for prefix in EXPECTED_PREFIXES:
        assert any(k.startswith(prefix) for k in results), prefix
    failed = {k: r["error"] for k, r in results.items() if r.get("failed")}
    assert not failed, failed
    for key, r in results.items():
        assert {"params", "machine", "finished"} <= set(r), key
    assert results["roofline/matmul"]["gflops"] > 0
    for key in (k for k in results if k.startswith(("forward/", "e2e/", "peer/"))):
        assert results[key]["images_per_s"] > 0, key
    assert 0 <= results["int8/agreement"]["max_abs_diff"] < 0.5
    assert 0 < results["bf16/agreement"]["max_abs_diff"] < 0.5  # bf16 really ran: not bit-identical to fp32
    assert results["memory/predict/fp32"]["peak_gb"] > 0.05  # python + torch alone is more than 50 MB
    base = results["paths/baseline_inference_mode"]
    assert "speedup" not in base and "max_abs_diff" in results["paths/no_grad"]
    assert results["paths/no_grad"]["max_abs_diff"] < 1e-6  # same computation, same numbers

    targets = data["targets"]
    target_ids = list(_speedlib("targets").TARGETS)
    for tid in target_ids:
        assert targets[tid]["status"] in ("PASS", "FAIL", "SKIP"), tid
        assert "not a result" in targets[tid]["note"]
    assert targets["int8_auc"]["status"] == targets["bf16_auc"]["status"] == "SKIP"  # no --model / --auc-data
    assert isinstance(targets["_precisions_kept"]["value"], list)
    assert targets["memory_predict"]["status"] == "PASS"
    for tid in target_ids:
        assert re.search(rf"(PASS|FAIL|SKIP)\s+{tid}\b", stdout), tid


@pytest.mark.slow
def test_rerun_resumes_only_what_is_missing(first_run):
    out, args, _ = first_run
    data = json.loads(out.read_text())
    before = dict(data["results"])
    del data["results"]["roofline/matmul"]  # as if the run had stopped before this one finished
    out.write_text(json.dumps(data))
    r = _run(*args)
    # on failure, name what was measured again (a failed entry, changed params or fingerprint)
    again = [ln.split()[0] for ln in r.stdout.splitlines()
             if ln.startswith("  ") and "/" in ln.split()[0] and "(cached)" not in ln]
    assert _measured(r.stdout) == 1, f"measured again: {again}\n{r.stdout[-3000:]}"
    assert "(cached)" in r.stdout
    after = json.loads(out.read_text())["results"]
    assert set(after) == set(before)
    assert {k: v["finished"] for k, v in after.items() if k != "roofline/matmul"} == {
        k: v["finished"] for k, v in before.items() if k != "roofline/matmul"
    }


@pytest.mark.slow
def test_force_measures_again(first_run):
    out, args, _ = first_run
    r = _run(*args, "--only", "roofline", "--force")
    assert _measured(r.stdout) == 3  # matmul and the two FLOP counts


def test_vit_flops_formula_matches_counted_flops():
    """The analytic count agrees with torch's FLOP counter on a real forward (random:tiny)."""
    from torch.utils.flop_counter import FlopCounterMode

    from mpft.backbones import load_backbone

    timing = _speedlib("timing")
    enc = load_backbone("random:tiny")
    # eager attention: torch's counter does not see the CPU SDPA kernel, but counts its two bmm
    enc.model.set_attn_implementation("eager")
    analytic = timing.encoder_flops(enc)["total"]
    x = torch.randn(2, 3, enc.image_size, enc.image_size)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        enc(x)
    counted = counter.get_total_flops() / 2
    assert counted == pytest.approx(analytic, rel=1e-3)
    b16 = timing.vit_flops(224, 16, 768, 12, 3072, 512)
    assert b16["total"] / 1e9 == pytest.approx(35.1, abs=0.1)  # ViT-B/16: the usual 17.6 GMACs


@pytest.mark.slow
def test_gpu_script_quick_runs_on_cpu(tmp_path):
    """benchmarks/gpu_speed.py --quick: the script a GPU session would run works end to end (CPU smoke)."""
    out = tmp_path / "gpu.json"
    r = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu_speed.py"), "--quick", "--json", str(out)],
                       capture_output=True, text=True, timeout=300, check=False)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    data = json.loads(out.read_text())
    assert r.stdout.startswith("device:") and data["cuda"] is False
    assert data["forward"] and all(v > 0 for v in data["forward"].values())
    for strategy in ("last-k", "full"):
        t = data["train"][strategy]
        assert t["none"] > 0 and t["drop"] > 0 and t["drop_over_none"] == pytest.approx(t["drop"] / t["none"])
