"""Peak resident memory of a command, measured in a fresh launcher process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
GB = 1e9


_LAUNCHER = (
    "import json, resource, subprocess, sys\n"
    "r = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL)\n"
    "print(json.dumps({'rc': r.returncode, 'maxrss_kb': resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}))\n"
)


def peak_rss(cmd: list[str]) -> dict:
    """Peak resident memory of ``cmd`` (its largest process), measured by a fresh launcher process."""
    path = [str(REPO / "src"), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(path)}
    r = subprocess.run([sys.executable, "-c", _LAUNCHER, *cmd], capture_output=True, text=True, env=env,
                       check=False)
    if r.returncode != 0 or not r.stdout.strip():
        raise RuntimeError(f"launcher failed ({r.returncode}): {r.stderr[-500:]}")
    out = json.loads(r.stdout.strip().splitlines()[-1])
    if out["rc"] != 0:
        raise RuntimeError(f"{' '.join(cmd[:4])} ... exited with {out['rc']}")
    return {"peak_gb": out["maxrss_kb"] * 1024 / GB, "maxrss_kb": out["maxrss_kb"], "command": cmd}
