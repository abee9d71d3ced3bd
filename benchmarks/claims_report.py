"""Turn ``paper_claims.py`` results into the tables and plots of docs/benchmarks.md.

    python benchmarks/claims_report.py [--results benchmarks/results/paper_claims] [--out docs/benchmarks]

Writes ``tables.md`` (every finished configuration, with intervals), ``results.csv`` (flat), and
``shots.png``, ``ood_recall.png``, ``mask_ratio.png`` into ``--out``. Missing configurations are simply
absent from the tables: the numbers are whatever was measured.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

REPO = Path(__file__).resolve().parents[1]


def label(run: dict) -> str:
    if run["tune"] == "linear":
        return "linear probe (UnivFD)"
    name = f"{run['tune']}" + (f" K={run['layers']}" if run["tune"] == "last-k" else "")
    mask = "no mask" if run["mask"] == "none" else f"{run['mask']} rho={run['ratio']}"
    if run["mask"] == "tam" and run["texture"] != "gradient":
        mask += f" ({run['texture']})"
    return f"{name}, {mask}"


def pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}"


def ci(c: list[float]) -> str:
    return f"[{100 * c[0]:.1f}, {100 * c[1]:.1f}]"


def load(results: Path) -> list[dict]:
    path = results / "results.jsonl"
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()] if path.is_file() else []


def table(rows: list[dict], title: str) -> list[str]:
    out = [f"### {title}", "",
           "| configuration | shots | seed | ID acc @0.5 | ID AUC | OOD recall @5% FPR | OOD test FPR | OOD AUC* "
           "| train s | img/s |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        run, i, o = r["run"], r["id"], r["ood"]
        out.append(
            f"| {label(run)} | {run['shots']} | {run['seed']} | {pct(i['acc'])} {ci(i['acc_ci'])} | {pct(i['auc'])} "
            f"| {pct(o['recall'])} {ci(o['recall_ci'])} | {pct(o['fpr_test'])} {ci(o['fpr_test_ci'])} "
            f"| {pct(o['auc_confounded'])} | {r['train_seconds']:.0f} | {r['train_images_per_second']:.2f} |"
        )
    return out + [""]


def seed_summary(rows: list[dict]) -> list[str]:
    by = defaultdict(list)
    for r in rows:
        if r["run"]["shots"] == 256 and r["run"]["group"] in ("main", "seeds"):
            by[label(r["run"])].append(r)
    out = ["### Main comparison, mean ± std over seeds (256 shots)", "",
           "| configuration | seeds | ID acc | ID AUC | OOD recall @5% FPR | OOD test FPR |",
           "|---|---|---|---|---|---|"]
    for name, rs in by.items():
        def ms(f, rs=rs):
            v = np.array([f(r) for r in rs]) * 100
            return f"{v.mean():.1f} ± {v.std(ddof=1):.1f}" if len(v) > 1 else f"{v.mean():.1f}"

        out.append(f"| {name} | {len(rs)} | {ms(lambda r: r['id']['acc'])} | {ms(lambda r: r['id']['auc'])} "
                   f"| {ms(lambda r: r['ood']['recall'])} | {ms(lambda r: r['ood']['fpr_test'])} |")
    out += [""] + paired_differences(by)
    return out + [""]


def paired_differences(by: dict[str, list[dict]], ref: str = "last-k K=4, tam rho=0.5") -> list[str]:
    """TAM minus each other method, seed by seed (same training subset, same evaluation sets).

    The seed picks the few-shot training subset (and head init, mask draws), which moves every
    method's OOD recall together, so per-seed differences say more than the unpaired mean ± std.
    """
    if ref not in by:
        return []
    ref_by_seed = {r["run"]["seed"]: r for r in by[ref]}
    seeds = sorted(ref_by_seed)
    out = ["TAM (rho 0.5) minus each method, per seed, in percentage points (same seed = same training images):",
           "", "| method | " + " | ".join(f"seed {s}: ID acc / OOD recall" for s in seeds) + " | TAM ahead OOD |",
           "|---|" + "---|" * (len(seeds) + 1)]
    for name, rs in by.items():
        if name == ref:
            continue
        mine = {r["run"]["seed"]: r for r in rs}
        cells, ahead, n = [], 0, 0
        for s in seeds:
            if s not in mine:
                cells.append("-")
                continue
            d_id = 100 * (ref_by_seed[s]["id"]["acc"] - mine[s]["id"]["acc"])
            d_ood = 100 * (ref_by_seed[s]["ood"]["recall"] - mine[s]["ood"]["recall"])
            cells.append(f"{d_id:+.1f} / {d_ood:+.1f}")
            ahead += d_ood > 0
            n += 1
        out.append(f"| {name} | " + " | ".join(cells) + f" | {ahead} of {n} |")
    return out


def _fig(w=6.5, h=4.0):
    fig = Figure(figsize=(w, h))
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot(111)


def plots(rows: list[dict], out: Path) -> None:
    # accuracy and OOD recall against shots, per method (seed 0)
    fig, ax = _fig()
    by = defaultdict(dict)
    for r in rows:
        run = r["run"]
        if run["seed"] == 0 and run["group"] in ("main", "shots") and run["layers"] == 4 and run["ratio"] == 0.5 \
                and run["texture"] == "gradient":
            by[label(run)][run["shots"]] = r
    for name, d in by.items():
        xs = sorted(d)
        if len(xs) < 2:
            continue
        ax.plot(xs, [100 * d[x]["id"]["acc"] for x in xs], "o-", label=f"{name}: ID acc")
        ax.plot(xs, [100 * d[x]["ood"]["recall"] for x in xs], "s--", label=f"{name}: OOD recall")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("training images (shots)")
    ax.set_ylabel("%")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title("Accuracy (cifake val) and OOD recall at 5% FPR vs shots")
    fig.savefig(out / "shots.png", dpi=110, bbox_inches="tight")

    # OOD recall per method (256 shots, seed 0) with Wilson intervals
    fig, ax = _fig(7.5, 4.5)
    sel = [r for r in rows if r["run"]["shots"] == 256 and r["run"]["seed"] == 0]
    names = [label(r["run"]) for r in sel]
    rec = np.array([100 * r["ood"]["recall"] for r in sel])
    lo = rec - np.array([100 * r["ood"]["recall_ci"][0] for r in sel])
    hi = np.array([100 * r["ood"]["recall_ci"][1] for r in sel]) - rec
    ax.barh(range(len(sel)), rec, xerr=[lo, hi], color="tab:red", alpha=0.7)
    ax.set_yticks(range(len(sel)), names, fontsize=7)
    ax.set_xlabel("recall on comfyui_t2i (%) at 5% FPR on held-back ImageNet photos")
    ax.set_xlim(0, 100)
    ax.grid(axis="x", alpha=0.3)
    fig.savefig(out / "ood_recall.png", dpi=110, bbox_inches="tight")

    # mask-ratio curve for last-k + TAM (seed 0, 256 shots)
    fig, ax = _fig()
    pts = sorted(
        (0.0 if r["run"]["mask"] == "none" else r["run"]["ratio"], r)
        for r in sel
        if r["run"]["tune"] == "last-k" and r["run"]["layers"] == 4 and r["run"]["texture"] == "gradient"
        and r["run"]["mask"] in ("tam", "none")
    )
    if pts:
        xs = [p[0] for p in pts]
        ax.plot(xs, [100 * p[1]["id"]["acc"] for p in pts], "o-", label="ID acc (cifake val)")
        ax.plot(xs, [100 * p[1]["ood"]["recall"] for p in pts], "s--", label="OOD recall @5% FPR")
        ax.set_xlabel("mask ratio rho (TAM, gradient; 0 = no mask)")
        ax.set_ylabel("%")
        ax.set_ylim(0, 100)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.savefig(out / "mask_ratio.png", dpi=110, bbox_inches="tight")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--results", type=Path, default=REPO / "benchmarks" / "results" / "paper_claims")
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "benchmarks")
    args = ap.parse_args(argv)
    rows = load(args.results)
    args.out.mkdir(parents=True, exist_ok=True)
    lines = ["<!-- generated by benchmarks/claims_report.py; do not edit -->", ""]
    frozen = args.results / "frozen_features.json"
    if frozen.is_file():
        f = json.loads(frozen.read_text())
        lines += ["### Claim (a): frozen CLIP ViT-B/16 features", "",
                  "| set | silhouette (real vs generated, cosine) | linear probe acc (5-fold CV) | n |",
                  "|---|---|---|---|"]
        for k, name in (("id", "CIFAKE val (SD1.4 vs CIFAR-10)"), ("ood", "comfyui_t2i vs ImageNet (normalised)")):
            lines.append(f"| {name} | {f[k]['silhouette_real_vs_fake']:.3f} | {100 * f[k]['probe_acc_5fold']:.1f} "
                         f"± {100 * f[k]['probe_acc_std']:.1f} | {f[k]['n']} |")
        c = f["ood_cosine"]
        lines += ["", f"Mean cosine similarity of frozen embeddings: real-real {c['real_real']:.3f}, "
                  f"generated-generated {c['fake_fake']:.3f}, real-generated {c['real_fake']:.3f}.", ""]
    groups = [("main", "Main comparison (256 shots)"), ("seeds", "Other seeds"), ("shots", "Shots"),
              ("ratio", "Mask ratio"), ("texture", "Texture measure"), ("layers", "Tuned blocks K")]
    for g, title in groups:
        sel = [r for r in rows if r["run"]["group"] == g]
        if sel:
            lines += table(sel, title)
    if any(r["run"]["group"] == "seeds" for r in rows):
        lines += seed_summary(rows)
    lines += ["*OOD AUC is on the confounded pair (different sources, content); read it with the README caveat.", ""]
    (args.out / "tables.md").write_text("\n".join(lines))
    with open(args.out / "results.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["key", "group", "tune", "mask", "ratio", "texture", "layers", "shots", "seed", "id_acc", "id_auc",
                    "id_ap", "ood_recall", "ood_fpr_test", "ood_threshold", "ood_auc_confounded", "train_seconds"])
        for r in rows:
            run = r["run"]
            w.writerow([r["key"], run["group"], run["tune"], run["mask"], run["ratio"], run["texture"], run["layers"],
                        run["shots"], run["seed"], r["id"]["acc"], r["id"]["auc"], r["id"]["ap"], r["ood"]["recall"],
                        r["ood"]["fpr_test"], r["ood"]["threshold"], r["ood"]["auc_confounded"], r["train_seconds"]])
    if rows:
        plots(rows, args.out)
    print(f"{len(rows)} configurations -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
