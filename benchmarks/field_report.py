"""Markdown tables of ``field_folds.py``'s results.jsonl (imported by it; ``--report`` prints them).

Every figure is a mean over the (fold, seed) records that measured it; intervals are the mean of the
per-record 95% bounds (Wilson for rates, bootstrap for AUC), as in ``unseen_generators.py``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

MAIN_VIEWS = "grid2+whole"


def load(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()] if path.is_file() else []


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _mean(xs: list[float]) -> float:
    return float(np.mean(xs)) if xs else float("nan")


def headline(recs: list[dict], views: str = MAIN_VIEWS) -> list[str]:
    """One row per method: unseen photo sources' FPR, unseen families' recall, AUC; in-source secondary."""
    methods = list(dict.fromkeys(r["method"] for r in recs))
    lines = [f"\n#### Held-out photo sources and families (views {views}; mean over folds x seeds)\n",
             "| method | runs | AUC unseen family vs unseen photos | FPR unseen photos, in-source thr. | "
             "FPR unseen photos, LOSO thr. | worst source FPR (LOSO) | recall unseen family (in-source / LOSO) | "
             "AUC vs in-source photos | format audit mean abs shift |",
             "|---|---|---|---|---|---|---|---|---|"]
    for m in methods:
        rs = [r for r in recs if r["method"] == m and views in r["views"]]
        v = [r["views"][views] for r in rs]
        auc = _mean([x["auc"] for x in v])
        fpr_in = _mean([x["at"]["in-source"]["fpr"]["rate"] for x in v])
        rec_in = _mean([x["at"]["in-source"]["recall"]["rate"] for x in v])
        lo = [x["at"]["loso"] for x in v if "loso" in x["at"]]
        fpr_lo = _pct(_mean([x["fpr"]["rate"] for x in lo])) if lo else "-"
        rec_lo = _pct(_mean([x["recall"]["rate"] for x in lo])) if lo else "-"
        worst = "-"
        if lo:
            by_src = per_source(rs, views, "loso")
            worst = max(by_src.items(), key=lambda kv: kv[1][0])
            worst = f"{_pct(worst[1][0])} ({worst[0]})"
        auc_in = _mean([x["auc_insource"] for x in v])
        aud = [r["audit"]["stored_vs_jpeg95_mean"] for r in rs if "audit" in r]
        lines.append(f"| {m} | {len(rs)} | {auc:.3f} | {_pct(fpr_in)} | {fpr_lo} | {worst} | {_pct(rec_in)} / "
                     f"{rec_lo} | {auc_in:.3f} | {_mean(aud):.3f} |" if aud else
                     f"| {m} | {len(rs)} | {auc:.3f} | {_pct(fpr_in)} | {fpr_lo} | {worst} | {_pct(rec_in)} / "
                     f"{rec_lo} | {auc_in:.3f} | - |")
    return lines


def per_source(rs: list[dict], views: str, thr: str) -> dict[str, tuple[float, float, float, int]]:
    """Held-out photo source -> (mean rate, mean lower, mean upper, n photos) at a threshold kind."""
    acc: dict[str, list[dict]] = {}
    for r in rs:
        at = r["views"][views]["at"].get(thr)
        if at is None:
            continue
        for s, x in at["fpr_by_source"].items():
            acc.setdefault(s, []).append(x)
    return {s: (_mean([x["rate"] for x in xs]), _mean([x["ci"][0] for x in xs]), _mean([x["ci"][1] for x in xs]),
                xs[0]["n"]) for s, xs in acc.items()}


def source_table(recs: list[dict], method: str, views: str = MAIN_VIEWS) -> list[str]:
    rs = [r for r in recs if r["method"] == method and views in r["views"]]
    if not rs:
        return []
    lines = [f"\n#### {method}: share of each unseen photo source called generated (views {views}; "
             "mean over seeds, Wilson 95%)\n",
             "| photo source | photos | in-source threshold | LOSO threshold |", "|---|---|---|---|"]
    a, b = per_source(rs, views, "in-source"), per_source(rs, views, "loso")
    for s in sorted(a):
        cell = lambda t: f"{_pct(t[0])} [{100 * t[1]:.0f}, {100 * t[2]:.0f}]"  # noqa: E731
        lines.append(f"| {s} | {a[s][3]} | {cell(a[s])} | {cell(b[s]) if s in b else '-'} |")
    lines += ["\n| unseen family group | images | AUC vs unseen photos | recall (in-source thr.) "
              "| recall (LOSO thr.) |",
              "|---|---|---|---|---|"]
    for g in dict.fromkeys(r["gen_group"] for r in rs):
        gs = [r["views"][views] for r in rs if r["gen_group"] == g]
        n = next(r["n_test_gen"] for r in rs if r["gen_group"] == g)
        lo = [x["at"]["loso"]["recall"]["rate"] for x in gs if "loso" in x["at"]]
        lines.append(f"| {g} | {n} | {_mean([x['auc'] for x in gs]):.3f} | "
                     f"{_pct(_mean([x['at']['in-source']['recall']['rate'] for x in gs]))} | "
                     f"{_pct(_mean(lo)) if lo else '-'} |")
    return lines


def calibration_size(recs: list[dict], method: str, sizes: tuple[int, ...] = (10, 20, 50, 100),
                     reps: int = 200) -> list[str]:
    """How many of its own photos a user needs: set a 5% threshold on n photos of a held-out source (the
    model never saw it), measure the false-positive rate on the source's other photos."""
    rs = [r for r in recs if r["method"] == method and "scores_real" in r["views"][MAIN_VIEWS]]
    if not rs:
        return []
    from mpft.evaluation.thresholds import threshold_at_fpr

    rng = np.random.default_rng(0)
    rows = []
    for n in sizes:
        rates = []
        for r in rs:
            v = r["views"][MAIN_VIEWS]
            s, src = np.array(v["scores_real"]), np.array(v["sources_real"])
            for name in set(src):
                x = s[src == name]
                if len(x) < n + 10:
                    continue
                for _ in range(reps // 10):
                    p = rng.permutation(len(x))
                    t = threshold_at_fpr(x[p[:n]], 0.05)
                    rates.append(float((x[p[n:]] >= t).mean()))
        if rates:
            q = np.percentile(rates, [50, 90])
            rows.append(f"| {n} | {_pct(_mean(rates))} | {_pct(q[0])} | {_pct(q[1])} | {len(rates)} |")
    return [f"\n#### Calibrating on your own photos ({method}, views {MAIN_VIEWS}): false-positive rate on the "
            "rest of a held-out source after setting a 5% threshold on n of its photos\n",
            "| n photos | mean FPR | median | 90th percentile | draws |", "|---|---|---|---|---|", *rows]


def shipped_table(path: Path) -> list[str]:
    """The shipped detector as it is (``field_folds.py --shipped``): per photo source and family."""
    if not path.is_file():
        return []
    b = json.loads(path.read_text())
    auc, ci = b["auc_unseen"]
    lines = [f"\n#### The shipped detector as it is (threshold {b['threshold']:.3f}, views grid2+whole, s512-jpeg95)\n",
             f"AUC, families it never trained on vs photo sources it never trained on: {auc:.3f} "
             f"[{ci[0]:.2f}, {ci[1]:.2f}]\n",
             "| photo source | photos | called generated | seen in training |", "|---|---|---|---|"]
    for s, x in b["photos"].items():
        lines.append(f"| {s} | {x['n']} | {_pct(x['rate'])} [{100 * x['ci'][0]:.0f}, {100 * x['ci'][1]:.0f}] | "
                     f"{'yes' if x['seen'] else 'no'} |")
    lines += ["\n| generator family | images | called generated | seen in training |", "|---|---|---|---|"]
    for s, x in b["generated"].items():
        lines.append(f"| {s} | {x['n']} | {_pct(x['rate'])} [{100 * x['ci'][0]:.0f}, {100 * x['ci'][1]:.0f}] | "
                     f"{'yes' if x['seen'] else 'no'} |")
    return lines


def report(path: Path, detail: str | None = None) -> str:
    recs = load(path)
    if not recs:
        return "no results yet"
    lines = shipped_table(path.parent / "shipped.json") + headline(recs)
    methods = list(dict.fromkeys(r["method"] for r in recs))
    for m in [detail] if detail else methods:
        lines += source_table(recs, m)
    for m in [detail] if detail else methods[:2]:
        lines += calibration_size(recs, m)
    return "\n".join(lines)


def source_comparison(recs: list[dict], methods: tuple[str, ...], views: str = MAIN_VIEWS) -> list[str]:
    """Per unseen photo source: share called generated by each method at the in-source and LOSO thresholds."""
    cols = [(m, thr) for m in methods for thr in ("in-source", "loso")]
    tables = {(m, thr): per_source([r for r in recs if r["method"] == m and views in r["views"]], views, thr)
              for m, thr in cols}
    sources = sorted({s for t in tables.values() for s in t})
    lines = ["| photo source | photos | " + " | ".join(f"{m}, {thr}" for m, thr in cols) + " |",
             "|---|---|" + "---|" * len(cols)]
    for s in sources:
        n = next(t[s][3] for t in tables.values() if s in t)
        cells = [f"{_pct(t[s][0])} [{100 * t[s][1]:.0f}, {100 * t[s][2]:.0f}]" if s in t else "-"
                 for t in (tables[c] for c in cols)]
        lines.append(f"| {s} | {n} | " + " | ".join(cells) + " |")
    return lines


FINETUNED = ("last-k", "last-k-random25", "last-k-tam25", "lora-tam25")
PROBES_BESIDE = ("linear", "blocks6-12")


def finetune_summary(recs: list[dict], views: str = MAIN_VIEWS) -> list[str]:
    """Means over the (fold, seed) pairs where every fine-tuned method and the probes beside them ran, and
    how often TAM beat no mask / a random mask on AUC (in-source threshold for the rates)."""
    by = {(r["fold"], r["seed"], r["method"]): r for r in recs}
    keys = sorted({(f, s) for f, s, m in by if all((f, s, x) in by for x in FINETUNED + PROBES_BESIDE)})
    if not keys:
        return []
    lines = [f"Means over {len(keys)} folds (seed {', '.join(sorted({str(s) for _, s in keys}))}), in-source "
             "threshold:", "", "| method | AUC | FPR unseen photos | recall unseen family | AUC wins vs last-k-tam25 |",
             "|---|---|---|---|---|"]
    for m in FINETUNED + PROBES_BESIDE:
        vs = [by[(f, s, m)]["views"][views] for f, s in keys]
        tam = [by[(f, s, "last-k-tam25")]["views"][views]["auc"] for f, s in keys]
        wins = sum(v["auc"] > t for v, t in zip(vs, tam, strict=True))
        lines.append(f"| {m} | {_mean([v['auc'] for v in vs]):.3f} | "
                     f"{_pct(_mean([v['at']['in-source']['fpr']['rate'] for v in vs]))} | "
                     f"{_pct(_mean([v['at']['in-source']['recall']['rate'] for v in vs]))} | "
                     f"{'-' if m == 'last-k-tam25' else f'{wins} of {len(keys)}'} |")
    return lines


def finetune_table(recs: list[dict], views: str = MAIN_VIEWS) -> list[str]:
    """Fine-tuned methods next to the probes on the same (fold, seed): in-source threshold (the only one
    fine-tuning has: LOSO would need 6 more fine-tunes per fold)."""
    tuned = [r for r in recs if r["method"].startswith(("last-k", "lora"))]
    keys = sorted({(r["fold"], r["seed"]) for r in tuned})
    if not keys:
        return []
    lines = ["| fold (photos / family), seed | method | AUC | FPR unseen photos | recall unseen family | "
             "FPR in-source photos | train s |", "|---|---|---|---|---|---|---|"]
    for k, s in keys:
        rows = [r for r in recs if r["fold"] == k and r["seed"] == s and r["method"] in FINETUNED + PROBES_BESIDE]
        for r in sorted(rows, key=lambda r: (not r["method"].startswith(("last-k", "lora")), r["method"])):
            v = r["views"][views]
            at = v["at"]["in-source"]
            lines.append(f"| {k} ({r['real_group']} / {r['gen_group']}), {s} | {r['method']} | {v['auc']:.3f} "
                         f"[{v['auc_ci'][0]:.2f}, {v['auc_ci'][1]:.2f}] | {_pct(at['fpr']['rate'])} | "
                         f"{_pct(at['recall']['rate'])} | {_pct(at['fpr_insource']['rate'])} | "
                         f"{r['train_seconds']:.0f} |")
    return lines


if __name__ == "__main__":  # the tables docs/benchmarks.md quotes: python benchmarks/field_report.py [RESULTS]
    import sys

    path = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent / "results/field_folds/results.jsonl"
    recs = load(path)
    print("\n".join(headline(recs)[2:]))
    print()
    print("\n".join(source_comparison(recs, ("blocks6-12", "linear"))))
    print()
    print("\n".join(calibration_size(recs, "blocks6-12")[3:]))
    print()
    print("\n".join(finetune_table(recs)))
    print()
    print("\n".join(finetune_summary(recs)))
