"""The targets: each one's threshold, its value judged from the results file, and the printed table."""

from __future__ import annotations

import math

from speedlib.paths import path_kept
from speedlib.plan import PRECISIONS, REDUCED, Plan
from speedlib.results import Store

# target id -> (description, comparison, threshold)
TARGETS: dict[str, tuple[str, str, float]] = {
    "forward_roofline": ("B/16 fp32 forward at batch 32: fraction of the matmul roofline", ">=", 0.70),
    "e2e_vs_forward": ("end to end (decode+preprocess+forward, batch 32) / forward alone", ">=", 0.85),
    "peer_ratio": ("our end-to-end images/s / the peer pipeline's (best kept precision)", ">=", 1.5),
    "int8_agreement": ("int8 vs fp32: max |probability difference| on real images", "<", 0.01),
    "int8_auc": ("int8 vs fp32: |AUC difference| on --auc-data", "<", 0.005),
    "bf16_agreement": ("bf16 vs fp32: max |probability difference| on real images", "<", 0.01),
    "bf16_auc": ("bf16 vs fp32: |AUC difference| on --auc-data", "<", 0.005),
    "tam_drop_speedup": ("training step time, TAM drop rho=0.5 / no masking (each strategy)", "<=", 0.6),
    "memory_predict": ("peak RSS of mpft predict (GB, 1e9 bytes)", "<=", 1.5),
    "memory_train": ("peak RSS of last-k training at batch 16 (GB, 1e9 bytes)", "<=", 6.0),
}


def judge(store: Store, plan: Plan) -> dict:
    """Each target's measured value and PASS / FAIL / SKIP (SKIP: its figures are not in the file)."""
    R = store.results

    def ok(key: str) -> dict | None:
        r = R.get(key)
        return r if r and not r.get("failed") and r.get("params", {}).get("mode") == plan.mode else None

    out: dict[str, dict] = {}

    def put(tid: str, value: float | None, detail: str = "", note: str = "") -> None:
        desc, cmp, thr = TARGETS[tid]
        if value is None or (isinstance(value, float) and math.isnan(value)):
            status = "SKIP"
        else:
            status = "PASS" if {"<": value < thr, "<=": value <= thr, ">=": value >= thr}[cmp] else "FAIL"
        out[tid] = {"description": desc, "target": f"{cmp} {thr:g}", "value": value, "status": status,
                    "detail": detail, "note": note}

    bmax = max(plan.batches)
    f32 = ok(f"forward/main/fp32/b{bmax}")
    put("forward_roofline", f32.get("roofline_fraction") if f32 else None,
        f"{f32['gflops_achieved']:.1f} GFLOP/s achieved" if f32 else "")

    kept = []
    for precision in REDUCED:
        agree = ok(f"{precision}/agreement")
        auc = ok(f"{precision}/auc")
        put(f"{precision}_agreement", agree["max_abs_diff"] if agree else None,
            f"{agree['images']} images" if agree else "")
        put(f"{precision}_auc", auc["auc_diff"] if auc else None,
            f"fp32 {auc['auc_fp32']:.4f} {precision} {auc['auc_reduced']:.4f}" if auc
            else "needs --model and --auc-data")
        # the AUC check needs a trained detector; without one, agreement alone decides (stated in the note)
        if out[f"{precision}_agreement"]["status"] == "PASS" and out[f"{precision}_auc"]["status"] != "FAIL":
            kept.append(precision)

    ratios, peer_ratios, details = [], [], []
    for ds in ("nature", "cifake"):
        for precision in PRECISIONS:
            fwd = ok(f"forward/main/{precision}/b{bmax}")
            e2e = [r for k, r in R.items() if k.startswith(f"e2e/{ds}/{precision}/b{bmax}/") and ok(k)]
            if fwd and e2e:
                best = max(e2e, key=lambda r: r["images_per_s"])
                ratios.append(best["images_per_s"] / fwd["images_per_s"])
                details.append(f"{ds}/{precision} {ratios[-1]:.2f} (w{best['params']['workers']})")
        peer = ok(f"peer/{ds}")
        cands = [r for k, r in R.items() if k.startswith(f"e2e/{ds}/") and ok(k)
                 and k.split("/")[2] in ("fp32", *kept)]
        if peer and cands:
            best = max(r["images_per_s"] for r in cands)
            peer_ratios.append((ds, best / peer["images_per_s"]))
    put("e2e_vs_forward", min(ratios) if ratios else None, "; ".join(details), "worst of datasets x precisions")
    put("peer_ratio", min(r for _, r in peer_ratios) if peer_ratios else None,
        "; ".join(f"{ds} x{r:.2f}" for ds, r in peer_ratios),
        f"fp32 and {', '.join(kept)} (passed the accuracy gate)" if kept
        else "fp32 only (no reduced precision passed the accuracy gate, or it was not measured)")

    drops = []
    for strategy in ("last-k", "full"):
        none, drop = ok(f"train/{strategy}/none"), ok(f"train/{strategy}/drop")
        if none and drop:
            drops.append((strategy, drop["step_s"] / none["step_s"]))
    put("tam_drop_speedup", max(r for _, r in drops) if drops else None,
        "; ".join(f"{s} {r:.2f}" for s, r in drops), "worst strategy")

    mp = [ok(f"memory/predict/{p}") for p in PRECISIONS]
    mp = [m for m in mp if m]
    put("memory_predict", min(m["peak_gb"] for m in mp) if mp else None,
        "; ".join(f"{k.split('/')[-1]} {R[k]['peak_gb']:.2f}" for k in R if k.startswith("memory/predict/") and ok(k)),
        "best precision")
    mt = ok("memory/train/last-k")
    put("memory_train", mt["peak_gb"] if mt else None)
    if plan.mode == "quick":
        for t in out.values():
            t["note"] = (t["note"] + "; " if t["note"] else "") + "quick mode: tiny model, not a result"
    out["_precisions_kept"] = {"value": kept}
    out["_paths_kept"] = {"value": sorted(k.split("/", 1)[1] for k in R if k.startswith("paths/") and ok(k)
                                          and path_kept(R[k]))}
    return out


def print_targets(targets: dict) -> None:
    print("\n[targets]")
    for tid, t in targets.items():
        if tid.startswith("_"):
            continue
        v = t["value"]
        vs = "-" if v is None else f"{v:.4g}"
        print(f"  {t['status']:<4}  {tid:<18} {vs:>9} (target {t['target']})  {t['detail']}"
              + (f"  [{t['note']}]" if t["note"] else ""))
    kept = targets["_paths_kept"]["value"] or "none"
    precisions = ", ".join(targets["_precisions_kept"]["value"]) or "none"
    print(f"  reduced precisions kept: {precisions}; speed paths kept: {kept}")
