"""Reduced-precision accuracy: agreement of bf16 / int8 probabilities with fp32's and the AUC change."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def probabilities(det, paths: list[Path], batch: int = 32) -> np.ndarray:
    return np.array([p.probability for p in det.predict_iter(paths, batch_size=batch)], dtype=np.float64)


def measure_agreement(det_fp, det_q, paths: list[Path]) -> dict:
    p_fp, p_q = probabilities(det_fp, paths), probabilities(det_q, paths)
    ok = ~(np.isnan(p_fp) | np.isnan(p_q))
    d = np.abs(p_fp[ok] - p_q[ok])
    return {"max_abs_diff": float(d.max()), "mean_abs_diff": float(d.mean()), "images": int(ok.sum()),
            "prob_std_fp32": float(p_fp[ok].std()),
            "verdict_flips_at_0.5": int(((p_fp[ok] >= 0.5) != (p_q[ok] >= 0.5)).sum())}


def measure_auc(ckpt: Path, data: Path, limit: int, workers: int, precision: str) -> dict:
    """AUC of fp32 and of ``precision`` on the same images (one process, one sample), each detector
    loaded by ``Detector.load`` and scored as ``mpft eval`` scores it."""
    from sklearn.metrics import roc_auc_score

    from mpft.data.dataset import ImageDataset
    from mpft.data.samples import limit_per_class
    from mpft.detector import Detector
    from mpft.evaluation.inputs import resolve_eval_data
    from mpft.inference import score_dataset

    samples = limit_per_class(resolve_eval_data([data]).samples, limit, 0)
    labels = np.array([s.label for s in samples])
    out: dict = {"images": len(samples)}
    for p in ("fp32", precision):
        det = Detector.load(ckpt, device="cpu", precision=p)
        ds = ImageDataset(samples, det.policy, train=False, views=det.views)
        scores, _ = score_dataset(det.model, ds, batch_size=32, workers=workers, device=det.device,
                                  combine=det.views.combine)
        ok = ~np.isnan(scores)
        out[f"auc_{p}"] = float(roc_auc_score(labels[ok], scores[ok]))
    out["auc_reduced"] = out[f"auc_{precision}"]
    out["auc_diff"] = abs(out["auc_reduced"] - out["auc_fp32"])
    return out
