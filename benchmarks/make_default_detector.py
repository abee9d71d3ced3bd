"""Package a trained checkpoint as mpft's shipped default detector.

1. Calibrate the decision threshold on held-back real photos: the first half of a seeded permutation
   of ``imagenet_samples`` (the same half ``paper_claims.py`` calibrates on; the other half is test data),
   preprocessed with the detector's own policy, at ``--target-fpr`` false positives.
2. Measure, with that threshold: accuracy on ``cifake_sd14/val`` (seeded subset), false-positive rate on
   the other half of the photos, recall on ``comfyui_t2i`` (all with Wilson intervals).
3. Write ``src/mpft/detectors/default/`` (config.json + fp16 ``model.safetensors``), atomically, with the
   training command, data and these metrics in config.json.

    python benchmarks/make_default_detector.py SOURCE_CHECKPOINT [--target-fpr 0.05]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import torch

from mpft.checkpoint import load_checkpoint, save_checkpoint, update_config
from mpft.data.layouts import discover, limit_per_class, list_images
from mpft.detector import Detector
from mpft.detectors import DEFAULT_DETECTOR_DIR
from mpft.evaluate.metrics import threshold_at_fpr, wilson_interval

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
from paper_claims import DATA  # noqa: E402


def _scores(det: Detector, paths: list[Path]) -> np.ndarray:
    preds = det.predict([str(p) for p in paths], batch_size=16)
    return np.array([p.probability if p.ok else np.nan for p in preds], dtype=np.float64)


def _rate(k: int, n: int) -> dict:
    lo, hi = wilson_interval(k, n)
    return {"k": k, "n": n, "rate": k / n if n else None, "ci95": [lo, hi]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("source", type=Path, help="checkpoint directory to package")
    ap.add_argument("--target-fpr", type=float, default=0.05)
    ap.add_argument("--n-real", type=int, default=500, help="photos in each half (calibration / test)")
    ap.add_argument("--n-id", type=int, default=100, help="cifake val images per class")
    ap.add_argument("--band", type=float, default=0.05, help="half-width of the 'uncertain' band")
    ap.add_argument("--out", type=Path, default=DEFAULT_DETECTOR_DIR)
    args = ap.parse_args(argv)
    torch.set_grad_enabled(False)

    # package first, then calibrate and measure the fp16 weights that will actually ship
    tmp = args.out.with_name(args.out.name + ".new")
    shutil.rmtree(tmp, ignore_errors=True)
    model, cfg = load_checkpoint(args.source)
    save_checkpoint(tmp, model, cfg, dtype=torch.float16)
    det = Detector.load(tmp)
    photos = list_images(DATA / "imagenet_samples" / "nature")
    perm = np.random.default_rng(0).permutation(len(photos))
    half = len(photos) // 2
    calib = [photos[i] for i in perm[:half][: args.n_real]]
    test_real = [photos[i] for i in perm[half:][: args.n_real]]
    fakes = list_images(DATA / "comfyui_t2i" / "ai")
    val = limit_per_class(discover(DATA / "cifake_sd14", split="val"), args.n_id, 0)

    s_cal = _scores(det, calib)
    t = float(threshold_at_fpr(s_cal[~np.isnan(s_cal)], args.target_fpr))
    s_real, s_fake = _scores(det, test_real), _scores(det, fakes)
    s_val = _scores(det, [s.path for s in val])
    y_val = np.array([s.label for s in val])

    def at(thr: float) -> dict:
        return {
            "cifake_val_acc": _rate(int(((s_val >= thr) == (y_val == 1)).sum()), len(y_val)),
            "imagenet_test_fpr": _rate(int((s_real >= thr).sum()), len(s_real)),
            "comfyui_recall": _rate(int((s_fake >= thr).sum()), len(s_fake)),
        }

    metrics = {"at_calibrated_threshold": at(t), "at_0.5": at(0.5)}
    thresholds = {
        "calibrated": {
            "value": t,
            "how": f"{args.target_fpr:.0%} false positives on {len(calib)} held-back ImageNet validation photos "
            "(imagenet_samples, first half of permutation seed 0), detector's own preprocessing",
            "target_fpr": args.target_fpr,
        },
        "uncalibrated": {"value": 0.5},
    }
    training = dict(cfg.training, default_detector={
        "source_checkpoint": str(args.source),
        "packaged_by": "python benchmarks/make_default_detector.py " + " ".join(argv or sys.argv[1:]),
        "metrics": metrics,
        "data": {
            "calibration_photos": len(calib), "test_photos": len(test_real), "generated": len(fakes),
            "cifake_val": len(y_val),
        },
    })
    update_config(tmp, threshold=t, uncertain_band=args.band, thresholds=thresholds, training=training)
    Detector.load(tmp)  # it must load before it replaces anything
    if args.out.exists():
        shutil.rmtree(args.out)
    tmp.rename(args.out)
    size = sum(f.stat().st_size for f in args.out.iterdir())
    print(json.dumps({"threshold": t, "bytes": size, "metrics": metrics}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
