"""The accuracy gate of a reduced precision on a detector (docs/performance.md): max |P - P_fp32| over
real photos, through ``Detector.predict`` with the detector's own views.

    python benchmarks/precision_gate.py                        # the shipped detector, 64 ImageNet photos
    python benchmarks/precision_gate.py --model RUN/best --photos DIR --n 200 --json out.json

The gate is 0.01 (max over the photos); the mean and the photos' scores near the threshold are
printed too, because a shift matters where a verdict can flip.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from machine import cpu_description  # noqa: E402

PHOTOS = HERE.parent.parent / "shared" / "data" / "imagenet_samples" / "nature"
GATE = 0.01


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=None, help="checkpoint folder (default: the shipped detector)")
    ap.add_argument("--photos", type=Path, default=PHOTOS, help="a folder of real photos (first --n by name)")
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--precisions", nargs="*", default=["bf16", "int8"])
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    from mpft import Detector

    paths = [str(p) for p in sorted(args.photos.iterdir()) if p.is_file()][: args.n]
    det = Detector.load(args.model)
    ref = np.array([p.probability for p in det.predict(paths)])
    out = {"machine": cpu_description(), "model": det.model_id, "photos": len(paths), "gate": GATE, "precisions": {}}
    print(f"{det.model_id}: {len(paths)} photos from {args.photos}; {out['machine']}")
    for prec in args.precisions:
        got = np.array([p.probability for p in Detector.load(args.model, precision=prec).predict(paths)])
        d = np.abs(got - ref)
        flips = int(((got >= det.threshold) != (ref >= det.threshold)).sum())
        out["precisions"][prec] = {"max_abs_dp": float(d.max()), "mean_abs_dp": float(d.mean()),
                                   "verdict_flips": flips, "passes": bool(d.max() < GATE)}
        print(f"{prec}: max |dp| {d.max():.4f}, mean {d.mean():.5f}, verdicts flipped {flips} "
              f"-> {'passes' if d.max() < GATE else 'fails'} the {GATE} gate")
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
