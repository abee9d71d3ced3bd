"""End-to-end throughput of ``mpft predict`` on large JPEG photos against the model alone (issue 19, item 3).

The shipped detector with its default views (grid:2+whole: five 224 px views per image), on
``--n`` JPEG photos of ~``--megapixels`` MP (made once under ``--photo-dir`` by upscaling the shared
camera photos). Prints images/s of:

- model only: the forward passes of exactly those views (decoded beforehand), same batches;
- plain predict: ``Detector.predict_iter`` with 0, 1 and 2 decoding worker processes;
- Ray: ``mpft.engines.ray_data.predict_iter`` with 1 and 2 actors (local Ray, started once).

Each end-to-end figure is a rate after start-up, and its ratio to the model-only rate. Plain
predict: from the first batch's rows to the last. Ray: (n - batch) / (T(n) - T(batch)), two runs
of n images and of one batch, because Ray hands rows over in bursts (in input order, after actors
that import torch and load the detector: that start-up is printed separately). Every engine's
probabilities are checked against plain predict's.

    python benchmarks/throughput.py                   # ~10 min on 2 cores
    python benchmarks/throughput.py --n 4 --no-ray    # smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from PIL import Image

HERE = Path(__file__).resolve().parent
SOURCES = HERE.parent.parent / "shared" / "data" / "camera_photos" / "nature"


def make_photos(n: int, folder: Path, megapixels: float, sources: Path = SOURCES) -> list[Path]:
    """``n`` JPEG photos (q90) of about ``megapixels`` MP, upscaled from the shared camera photos (kept)."""
    folder.mkdir(parents=True, exist_ok=True)
    srcs = sorted(p for p in sources.iterdir() if p.suffix.lower() in (".jpg", ".jpeg"))
    out = []
    for i in range(n):
        dst = folder / f"large_{i:03d}.jpg"
        if not dst.is_file():
            with Image.open(srcs[i % len(srcs)]) as im:
                im = im.convert("RGB")
                scale = (megapixels * 1e6 / (im.width * im.height)) ** 0.5
                im = im.resize((round(im.width * scale), round(im.height * scale)), Image.Resampling.BICUBIC)
                im.save(dst, "JPEG", quality=90)
        out.append(dst)
    return out


def timed(preds) -> tuple[list, list[float]]:
    rows, stamps = [], []
    for p in preds:
        rows.append(p)
        stamps.append(time.perf_counter())
    return rows, stamps


def rates(t0: float, stamps: list[float], batch: int) -> dict:
    """Total rate from ``t0``, and the steady rate from the first batch's last row to the last row."""
    n = len(stamps)
    first = stamps[min(batch, n) - 1]
    steady = (n - min(batch, n)) / (stamps[-1] - first) if n > batch and stamps[-1] > first else None
    return {"images": n, "seconds": stamps[-1] - t0, "images_per_s": n / (stamps[-1] - t0),
            "steady_images_per_s": steady, "first_batch_s": first - t0}


def model_only(det, paths: list[Path], batch: int) -> dict:
    """The forward passes alone, over the very views predict scores (decoded first, not timed)."""
    pre, scorer = det.preprocessor, det.batch_scorer(batch)
    views = [pre(p).pixels for p in paths]
    scorer.score(views[:1])  # warm kernels
    probs = []
    t0 = time.perf_counter()
    for i in range(0, len(views), batch):
        probs.extend(float(p) for p in scorer.score(views[i:i + batch]))
    dt = time.perf_counter() - t0
    # the batches predict_iter makes: these are the probabilities every engine must reproduce
    return {"images": len(views), "seconds": dt, "images_per_s": len(views) / dt,
            "views_per_image": sum(int(v.shape[0]) for v in views) / len(views), "probabilities": probs}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=32, help="photos")
    ap.add_argument("--megapixels", type=float, default=12.0)
    ap.add_argument("--batch", type=int, default=8, help="images per batch (--batch-size)")
    ap.add_argument("--photo-dir", type=Path, default=Path("/tmp/mpft-throughput-photos"))
    ap.add_argument("--workers", type=int, nargs="*", default=[0, 1, 2], help="plain predict's --workers")
    ap.add_argument("--actors", type=int, nargs="*", default=[1, 2], help="Ray actors")
    ap.add_argument("--no-ray", action="store_true")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args(argv)

    import torch

    from mpft.engines import DetectorSpec

    paths = make_photos(args.n, args.photo_dir, args.megapixels)
    with Image.open(paths[0]) as im:
        size = im.size
    spec = DetectorSpec()
    det = spec.load()
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from machine import cpu_description

    print("machine:", cpu_description())
    out: dict = {"machine": {"cpu": cpu_description(), "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                             "load_average_before": os.getloadavg()[0]},
                 "photos": {"n": len(paths), "size": list(size), "views": det.views.spec}, "runs": {}}
    print(f"{len(paths)} JPEG photos {size[0]}x{size[1]}, views {det.views.spec}, batch {args.batch}, "
          f"{os.cpu_count()} cores, torch {torch.get_num_threads()} threads")

    base = out["model_only"] = model_only(det, paths, args.batch)
    print(f"model only (forward passes of the same views): {base['images_per_s']:.3f} images/s")
    reference = base["probabilities"]

    def report(name: str, preds_fn, start_fn=None) -> None:
        start = None
        if start_fn is not None:  # one batch alone: the start-up and one batch's work
            t0 = time.perf_counter()
            list(start_fn())
            start = time.perf_counter() - t0
        t0 = time.perf_counter()
        rows, stamps = timed(preds_fn())
        r = rates(t0, stamps, args.batch)
        if start is not None:
            r["one_batch_run_s"] = start
            r["steady_images_per_s"] = (len(rows) - args.batch) / (r["seconds"] - start)
        r["identical_to_plain"] = [p.probability for p in rows] == reference
        r["ratio_to_model_only"] = (r["steady_images_per_s"] or r["images_per_s"]) / base["images_per_s"]
        out["runs"][name] = r
        steady = f"{r['steady_images_per_s']:.3f}" if r["steady_images_per_s"] else "-"
        start = (f"{r['one_batch_run_s']:.1f} s for a one-batch run" if "one_batch_run_s" in r
                 else f"{r['first_batch_s']:.1f} s to the first batch")
        print(f"{name:<28} after start-up {steady} images/s ({r['ratio_to_model_only']:.2f} of model only); "
              f"total {r['images_per_s']:.3f} images/s incl. {start}; rows identical to plain: "
              f"{r['identical_to_plain']}")

    for w in args.workers:
        report(f"plain predict, {w} workers", lambda w=w: det.predict_iter(paths, batch_size=args.batch, workers=w))

    if not args.no_ray:
        from mpft.engines import ray_data

        t0 = time.perf_counter()
        ray_data.start_ray(None, max(args.actors))
        out["ray_start_s"] = time.perf_counter() - t0
        print(f"local Ray started in {out['ray_start_s']:.1f} s")
        try:
            for a in args.actors:
                def run(items, a=a):
                    return ray_data.predict_iter(spec, det.preprocessor, items, batch_size=args.batch, actors=a)

                report(f"ray, {a} actor{'s' if a > 1 else ''}", lambda run=run: run(paths),
                       lambda run=run: run(paths[:args.batch]))
        finally:
            import ray

            ray.shutdown()
    # the model alone again: on a shared machine the two figures bracket the drift during the runs
    end = out["model_only_end"] = model_only(det, paths, args.batch)
    print(f"model only again, at the end: {end['images_per_s']:.3f} images/s")
    out["machine"]["load_average_after"] = os.getloadavg()[0]
    print(f"load average (1 min) before/after: {out['machine']['load_average_before']:.2f} / "
          f"{out['machine']['load_average_after']:.2f}")
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
