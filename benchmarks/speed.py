"""CPU speed, memory and reduced-precision (bf16, int8) accuracy of mpft against its targets (issue 7).

Measures, prints and saves to JSON (``--json PATH``) one entry per configuration, written as
soon as that configuration finishes; a rerun skips the entries already there (same settings,
same machine) unless ``--force``, so an interrupted run resumes where it stopped. At the end it
prints every target with PASS / FAIL / SKIP (targets and method: docs/performance.md).

Sections (``--only a,b`` / ``--skip a,b``):

- ``roofline``: fp32 matmul GFLOP/s of this machine (large square torch.mm, best of several),
  and analytic FLOPs per image of each backbone;
- ``forward``: images/s of the detector forward alone (uint8 batch in, probabilities out) at
  batch 1/8/32, fp32, bf16 and int8, for the main backbone (B/16) and the large one (L/14);
- ``e2e``: images/s of ``Detector.predict_iter`` (what ``mpft predict`` runs: decode +
  preprocess in worker processes + forward) on real JPEGs (ImageNet ~500x375, resize policy)
  and on CIFAKE 32x32;
- ``peer``: the plain pipeline most CLIP detectors use (PIL + numpy CLIP transform,
  transformers CLIPVisionModelWithProjection fp32, one image at a time, no workers);
- ``accuracy``: for bf16 and int8, max |p - p_fp32| on real images, and the AUC change on
  ``--auc-data``: the gate a reduced precision must pass to count for the peer target;
- ``train``: training step time with TAM drop / fill / no masking (last-k K=4 and full);
- ``memory``: peak RSS of ``mpft predict`` and of a few last-k training steps (subprocesses);
- ``paths``: optional speed paths (inference_mode, bf16 autocast, channels-last, torch.compile,
  threads, LoRA merge), each kept only if faster and equivalent (|dp| < 1e-3);
- ``decode``: ms per image of decode + preprocess, with and without PIL's JPEG draft mode.

    python benchmarks/speed.py --json runs/speed.json                 # full run (~20-30 min on 2 cores)
    python benchmarks/speed.py --json runs/speed.json --model runs/x/best \\
        --auc-data ../shared/data/cifake_sd14 --auc-limit 200
    python benchmarks/speed.py --quick --json /tmp/speed-quick.json   # tiny sizes, seconds (CI smoke)

Without ``--model`` a detector is built on the backbone (``clip-vit-b16`` when cached, else
``random:b16``) with a LoRA adapter and a head fitted so that logits on real photos have a
standard deviation of 3 (a trained detector's spread), so score differences mean something.

This script parses the arguments, runs the sections in order and keeps the results file; the
measurements live in ``benchmarks/speedlib/``, one module per job (its ``__init__`` lists them).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

import torch
from PIL import Image

# speedlib/ lies next to this file: on sys.path when run as a script, added here when imported as a module
sys.path.insert(0, str(Path(__file__).resolve().parent))
from speedlib.accuracy import measure_agreement, measure_auc
from speedlib.decode import decode_times
from speedlib.inference import measure_e2e, measure_forward, measure_peer
from speedlib.inputs import Detectors, build_checkpoint, default_backbone, image_set
from speedlib.machine import machine_fingerprint
from speedlib.memory import peak_rss
from speedlib.paths import path_kept, speed_paths
from speedlib.plan import PRECISIONS, REDUCED, Plan
from speedlib.results import Store
from speedlib.targets import judge, print_targets
from speedlib.timing import encoder_flops, measure_matmul, time_calls
from speedlib.training import train_child, train_step_fn

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
DEFAULT_NATURE = SHARED / "imagenet_samples" / "nature"
DEFAULT_CIFAKE = SHARED / "cifake_sd14" / "val"
SECTIONS = ("roofline", "forward", "e2e", "peer", "accuracy", "train", "memory", "paths", "decode")


def _fmt_ips(r: dict) -> str:
    s = f"{r['images_per_s']:8.2f} img/s"
    if "roofline_fraction" in r:
        s += f"  {r['gflops_achieved']:7.1f} GFLOP/s = {100 * r['roofline_fraction']:5.1f}% of matmul"
    return s


def _fmt_path(r: dict) -> str:
    for k in ("skipped", "unavailable"):
        if k in r:
            return f"{k}: {r[k]}"
    s = f"{r['images_per_s']:8.2f} img/s"
    if "speedup" in r:
        verdict = "(noise check)" if r.get("noise_check") else ("KEEP" if path_kept(r) else "drop")
        s += f"  x{r['speedup']:.2f}  max|dp| {r['max_abs_diff']:.1e}  {verdict}"
    return s


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", type=Path, default=None, help="Results file (resumable; created if absent).")
    ap.add_argument("--force", action="store_true", help="Measure again configurations already in --json.")
    ap.add_argument("--quick", action="store_true", help="Tiny model and sizes: a smoke test in seconds.")
    ap.add_argument("--only", default="", help=f"Comma-separated sections to run: {','.join(SECTIONS)}.")
    ap.add_argument("--skip", default="", help="Comma-separated sections to leave out.")
    ap.add_argument("--backbone", default=None, help="Main backbone (default: clip-vit-b16 if cached, else "
                    "random:b16).")
    ap.add_argument("--large", default=None, help="Large backbone for the forward-only figures (random:l14).")
    ap.add_argument("--model", type=Path, default=None, help="A trained checkpoint to measure instead of the "
                    "fitted-head detector.")
    ap.add_argument("--strategy", default="lora", help="Tuning strategy of the built detector (no --model).")
    ap.add_argument("--auc-data", type=Path, default=None, help="Labelled data for the bf16 / int8 AUC check.")
    ap.add_argument("--auc-limit", type=int, default=200, help="Images per class for the AUC check.")
    ap.add_argument("--images", type=Path, default=DEFAULT_NATURE, help="Real photos (~500x375 JPEG).")
    ap.add_argument("--cifake", type=Path, default=DEFAULT_CIFAKE, help="CIFAKE 32x32 images.")
    ap.add_argument("--workers", type=int, default=1, help="Decoding processes of the end-to-end runs.")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice).")
    ap.add_argument("--no-compile", action="store_true", help="Do not try torch.compile.")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["_train-child"]:
        return train_child(argv[1:])
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    plan = Plan.quick() if args.quick else Plan(mode="full", backbone="", large="random:l14",
                                                  train_backbone="random:b16")
    if not args.quick:
        plan.backbone = args.backbone or default_backbone()
    elif args.backbone:
        plan.backbone = args.backbone
    if args.large:
        plan.large = args.large
    only = {s for s in args.only.split(",") if s}
    skip = {s for s in args.skip.split(",") if s}
    bad = (only | skip) - set(SECTIONS)
    if bad:
        print(f"unknown sections {sorted(bad)}; choose from {', '.join(SECTIONS)}", file=sys.stderr)
        return 2
    sections = [s for s in SECTIONS if (not only or s in only) and s not in skip]

    machine = machine_fingerprint()
    store = Store(args.json, force=args.force, machine=machine)
    store.data["meta"] = {"plan": asdict(plan), "machine": machine, "args": vars(args) | {"json": str(args.json)},
                          "updated": datetime.now(UTC).isoformat(timespec="seconds")}
    print(f"mpft speed benchmark ({plan.mode}): {machine['cpu']}, {machine['cores']} cores, "
          f"torch {machine['torch']} with {machine['threads']} threads; backbone {plan.backbone}")

    scratch = Path(tempfile.mkdtemp(prefix="mpft-speed-"))
    try:
        run_sections(args, plan, store, sections, scratch)
    finally:
        import shutil

        shutil.rmtree(scratch, ignore_errors=True)
    targets = judge(store, plan)
    store.data["targets"] = targets
    store.save()
    print_targets(targets)
    print(f"\n{len(store.measured)} configurations measured, {len(store.reused)} reused"
          + (f"; results in {args.json}" if args.json else ""))
    return 0


def run_sections(args, plan: Plan, store: Store, sections: list[str], scratch: Path) -> None:
    from mpft.backbones import load_backbone

    mode = {"mode": plan.mode}
    nature, nature_src = image_set(args.images, max(plan.n_e2e, plan.n_agree, plan.n_head_fit), scratch=scratch,
                                   fallback_size=(500, 375), name="nature")
    cifake, cifake_src = image_set(args.cifake, plan.n_e2e, scratch=scratch, fallback_size=(32, 32),
                                   name="cifake")
    datasets = {"nature": (nature, nature_src, True), "cifake": (cifake, cifake_src, False)}

    # the detector under test: --model, or a LoRA detector with a fitted head on the backbone
    def checkpoint() -> Path:
        if args.model is not None:
            return args.model
        if "ckpt" not in _ckpt:
            _ckpt["ckpt"] = build_checkpoint(plan.backbone, args.strategy, scratch / "ckpt",
                                             nature[: plan.n_head_fit])
        return _ckpt["ckpt"]

    _ckpt: dict = {}
    model_id = str(args.model) if args.model else f"{plan.backbone}+{args.strategy}+fitted-head"
    dets = Detectors()
    flops: dict[str, dict] = {}

    def spec_flops(spec: str) -> dict:
        if spec not in flops:
            key = f"flops/{spec}"
            enc = load_backbone(spec) if store.cached(key, {"spec": spec}) is None else None
            flops[spec] = store.run(key, {"spec": spec}, lambda: encoder_flops(enc),
                                    lambda r: f"{r['total'] / 1e9:8.2f} GFLOP/image")
        return flops[spec]

    roof: dict = {}
    if "roofline" in sections or "forward" in sections:
        print("\n[roofline]")
        roof = store.run("roofline/matmul", {**mode, "sizes": list(plan.mm_sizes), "repeats": plan.mm_repeats},
                         lambda: measure_matmul(plan.mm_sizes, plan.mm_repeats),
                         lambda r: f"{r['gflops']:8.1f} GFLOP/s fp32 matmul {r['by_size']}")
        spec_flops(plan.backbone)
        spec_flops(plan.large)
    gflops = roof.get("gflops")

    if "forward" in sections:
        print("\n[forward alone: uint8 batch -> probabilities]")
        f_main = spec_flops(plan.backbone)["total"]
        for precision in PRECISIONS:
            for b in plan.batches:
                params = {**mode, "model": model_id, "batch": b, "iters": plan.fwd_iters[b], "warmup": plan.warmup}
                store.run(f"forward/main/{precision}/b{b}", params,
                          lambda b=b, p=precision: measure_forward(dets.get(checkpoint(), p), b, warmup=plan.warmup,
                                                                   iters=plan.fwd_iters[b], flops=f_main,
                                                                   roofline=gflops), _fmt_ips)
        # the large backbone, forward only: a plain detector on it, no fitted head needed
        f_large = spec_flops(plan.large)["total"]
        large_ckpt = scratch / "large"
        for precision in PRECISIONS:
            for b in plan.batches:
                params = {**mode, "spec": plan.large, "batch": b, "iters": plan.large_iters[b], "warmup": plan.warmup}
                key = f"forward/large/{precision}/b{b}"
                if store.cached(key, params) is None and not large_ckpt.exists():
                    dets.drop()  # two B/16 detectors and an L/14 need not share memory
                    build_checkpoint(plan.large, "linear", large_ckpt, nature[:2])
                store.run(key, params,
                          lambda b=b, p=precision: measure_forward(dets.get(large_ckpt, p), b, warmup=plan.warmup,
                                                                   iters=plan.large_iters[b], flops=f_large,
                                                                   roofline=gflops), _fmt_ips)
        dets.drop()

    if "e2e" in sections:
        print(f"\n[end to end: Detector.predict_iter, {args.workers} worker(s) unless noted]")
        for name, (paths, src, resize) in datasets.items():
            for precision in PRECISIONS:
                for b in plan.batches:
                    sweep = name == "nature" and precision == "fp32" and b == max(plan.batches)
                    for w in sorted({args.workers, 0, 2} if sweep else {args.workers}):
                        params = {**mode, "model": model_id, "source": src, "images": len(paths), "batch": b,
                                  "workers": w, "resize": resize}
                        store.run(f"e2e/{name}/{precision}/b{b}/w{w}", params,
                                  lambda paths=paths, b=b, w=w, p=precision, resize=resize: measure_e2e(
                                      dets.get(checkpoint(), p), paths, batch=b, workers=w, resize=resize),
                                  _fmt_ips)
        dets.drop()

    if "peer" in sections:
        print("\n[peer pipeline: PIL + numpy CLIP transform, transformers fp32, one image at a time]")
        for name, (paths, src, _) in datasets.items():
            params = {**mode, "spec": plan.backbone, "source": src, "images": plan.n_peer}
            store.run(f"peer/{name}", params, lambda paths=paths: measure_peer(plan.backbone, paths[: plan.n_peer]),
                      _fmt_ips)

    if "accuracy" in sections:
        print("\n[reduced precisions: agreement with fp32, AUC change]")
        for precision in REDUCED:
            params = {**mode, "model": model_id, "source": nature_src, "images": plan.n_agree}
            store.run(f"{precision}/agreement", params,
                      lambda p=precision: measure_agreement(dets.get(checkpoint(), "fp32"), dets.get(checkpoint(), p),
                                                            nature[: plan.n_agree]),
                      lambda r: f"max |dp| {r['max_abs_diff']:.5f} (mean {r['mean_abs_diff']:.5f}, p std "
                                f"{r['prob_std_fp32']:.3f}, {r['verdict_flips_at_0.5']} flips)")
            dets.drop()
            if args.model is not None and args.auc_data is not None:
                params = {**mode, "model": model_id, "data": str(args.auc_data), "limit": args.auc_limit}
                store.run(f"{precision}/auc", params,
                          lambda p=precision: measure_auc(args.model, args.auc_data, args.auc_limit, args.workers, p),
                          lambda r: f"AUC fp32 {r['auc_fp32']:.4f} reduced {r['auc_reduced']:.4f} (|diff| "
                                    f"{r['auc_diff']:.4f}, {r['images']} images)")
            else:
                print(f"  {precision}/auc: not measured (needs --model and --auc-data)")

    if "train" in sections:
        print(f"\n[training step: {plan.train_backbone}, batch {plan.train_batch}, TAM rho 0.5]")
        for strategy in ("last-k", "full"):
            for mask in ("none", "drop", "fill"):
                params = {**mode, "spec": plan.train_backbone, "batch": plan.train_batch,
                          "steps": plan.train_steps, "warmup": plan.warmup}

                def measure(strategy=strategy, mask=mask) -> dict:
                    step = train_step_fn(plan.train_backbone, strategy, mask, plan.train_batch)
                    t = time_calls(step, warmup=plan.warmup, iters=plan.train_steps)
                    return {**t, "step_s": t["median_s"]}

                store.run(f"train/{strategy}/{mask}", params, measure,
                          lambda r: f"{r['step_s']:8.3f} s/step (best {r['best_s']:.3f})")

    if "memory" in sections:
        print("\n[peak memory, in subprocesses]")
        folder = scratch / "mem-images"
        folder.mkdir(exist_ok=True)
        for i, p in enumerate(nature[: plan.mem_images]):
            (folder / f"{i:04d}{p.suffix}").symlink_to(p.resolve())
        jobs: list[tuple[str, dict, list[str]]] = []
        for precision in PRECISIONS:
            jobs.append((f"memory/predict/{precision}", {**mode, "model": model_id, "images": plan.mem_images},
                         ["-m", "mpft", "predict", str(folder), "--model", "CKPT", "--format", "jsonl",
                          "--device", "cpu", "--precision", precision]))
        jobs.append(("memory/train/last-k",
                     {**mode, "spec": plan.train_backbone, "batch": plan.train_batch, "steps": plan.mem_train_steps},
                     [str(Path(__file__).resolve()), "_train-child", plan.train_backbone, "last-k",
                      str(plan.train_batch), str(plan.mem_train_steps)]))
        todo = [(k, p, cmd) for k, p, cmd in jobs if store.cached(k, p) is None]
        if any("CKPT" in cmd for _, _, cmd in todo):
            ckpt = str(checkpoint())
            todo = [(k, p, [ckpt if a == "CKPT" else a for a in cmd]) for k, p, cmd in todo]
        # each child's peak is its own (ru_maxrss of its process tree), so they can run side by side
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=max(1, len(todo))) as pool:
            futures = {k: pool.submit(peak_rss, [sys.executable, *cmd]) for k, _, cmd in todo}
            for key, params, _ in jobs:
                store.run(key, params, lambda key=key: futures[key].result(),
                          lambda r: f"{r['peak_gb']:8.3f} GB peak RSS")

    if "paths" in sections:
        print(f"\n[optional speed paths: fp32 forward, batch {plan.paths_batch}]")
        names = ["baseline_inference_mode", "no_grad", "bf16_autocast", "channels_last", "threads_1",
                 f"threads_{os.cpu_count()}", "lora_merged", "torch_compile", "baseline_again"]
        names = list(dict.fromkeys(names))
        params = {**mode, "model": model_id, "batch": plan.paths_batch, "iters": plan.paths_iters}
        # speed-ups are only meaningful against a baseline timed in the same process: when any
        # path is missing, the whole table is measured again
        redo = any(store.cached(f"paths/{n}", params) is None for n in names)
        runs = (speed_paths(dets.get(checkpoint(), "fp32"), plan.paths_batch, plan.paths_iters,
                            try_compile=not (args.quick or args.no_compile)) if redo else {})
        for name in names:
            if redo and name not in runs:
                continue
            store.run(f"paths/{name}", params, lambda name=name: runs[name](), _fmt_path, force=redo)
        dets.drop()

    if "decode" in sections:
        print("\n[decode + preprocess (resize policy), ms per image, inline]")
        size = 32 if plan.mode == "quick" else 224
        big = scratch / "large-jpeg"
        big.mkdir(exist_ok=True)
        sets = {"nature": nature[: plan.n_decode]}
        big_paths = []
        for i, p in enumerate(nature[: max(2, plan.n_decode // 4)]):
            with Image.open(p) as im:
                q = big / f"{i:03d}.jpg"
                im.convert("RGB").resize((im.width * 4, im.height * 4), Image.Resampling.BILINEAR).save(q, quality=90)
                big_paths.append(q)
        sets["nature_x4"] = big_paths
        for set_name, paths in sets.items():
            for draft in (False, True):
                params = {**mode, "source": nature_src, "images": len(paths), "size": size, "policy": "resize"}
                store.run(f"decode/{set_name}/{'draft' if draft else 'plain'}", params,
                          lambda paths=paths, draft=draft: decode_times(paths, size, draft=draft),
                          lambda r: f"{r['ms_per_image']:8.2f} ms/image" + (
                              f"  input |diff| mean {r['input_mean_abs_diff']:.2f} max {r['input_max_abs_diff']}"
                              if "input_mean_abs_diff" in r else ""))


if __name__ == "__main__":
    sys.exit(main())
