"""Train, calibrate and package mpft's shipped default detector with the recipe that won the field
benchmark (benchmarks/field_folds.py, docs/benchmarks.md section 0): ``linear``, a linear head on
the frozen CLIP ViT-B/16 final embedding (UnivFD), with a leave-one-real-source-out threshold.

A thin wrapper around ``mpft train`` (issue 17 item 5): the training is the one command the
detector's ``config.json`` records as ``training.command``; this script adds what a single training
run cannot do, the threshold.

Data: the committed manifest ``benchmarks/default_detector/train.csv`` (paths into ../shared/data,
written by this script from native.csv, wild.csv, comfyui_t2i and ``--imagenet`` seeded ImageNet
photos; the ``--holdout`` families are left out so that README command 1 shows images the detector
never saw). Its ``generator`` column is the field benchmark's family of a generated image and the
source of a photo, so ``--balance generator`` gives every family and every photo source an equal share
of its class; its ``source`` column is the benchmark's group.

Training: ``--train-views`` augmented views per image (``unseen_generators.TRAIN_AUGMENT``, the same
for both classes), frozen features computed once into the feature cache, ``--epochs`` balanced passes
at batch 32: the field benchmark's ``linear`` probe.

Threshold (leave one real source group out): for each of the 7 photo-source groups of the field
benchmark, ``mpft train`` the same recipe without that group (``--exclude``; the feature cache makes
these runs cost seconds) and score all its photos through ``Detector.predict`` after the
normalisation both classes get in every benchmark (shorter side 512, JPEG q95). The threshold is the
smallest whose false-positive rate, averaged over the groups (each counts once), is at most
``--target-fpr``. Every photo that sets it was scored by a model that never saw its source.

    python benchmarks/make_default_detector.py                 # the shipped detector (resumable)
    python benchmarks/make_default_detector.py --quick --out /tmp/det   # random:tiny, a few images (tests)
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
import field_folds as ff  # noqa: E402
import unseen_generators as ug  # noqa: E402
from machine import cpu_description  # noqa: E402
from mpft.checkpoint import update_config  # noqa: E402
from mpft.data.images import decode_image  # noqa: E402
from mpft.detector import Detector  # noqa: E402
from mpft.detectors import DEFAULT_DETECTOR_DIR  # noqa: E402
from mpft.evaluation.metrics import wilson_interval  # noqa: E402
from mpft.fsutil import atomic_write_text  # noqa: E402
from mpft.model import TuneConfig  # noqa: E402
from mpft.tam import MaskConfig  # noqa: E402
from mpft.views import parse_views  # noqa: E402

log = logging.getLogger("make_default_detector")
MANIFEST = REPO / "benchmarks" / "default_detector" / "train.csv"
# README command 1 shows these two camera photos as images the detector never saw
README_PHOTOS = (
    "camera_photos/nature/metadata_extractor_images__jpg__Apple_iPhone_5.jpg",
    "camera_photos/nature/metadata_extractor_images__jpg__Sony_DSC-H9.jpg",
)


def manifest_rows(items: list[ff.Item], folder: Path) -> list[list[str]]:
    """``path,label,generator,source`` rows, paths relative to ``folder`` (the manifest's)."""
    rows = []
    for it in items:
        rel = os.path.relpath(it.path, folder)
        rows.append([rel, "ai" if it.label else "nature", it.family, it.group])
    return rows


def _rel(path: str | Path) -> str:
    """``path`` relative to the repository root when it lies inside it, else as given."""
    p = Path(path).absolute()
    return str(p.relative_to(REPO)) if p.is_relative_to(REPO) else str(path)


def write_csv(path: Path, header: list[str], rows: list[list[str]]) -> bool:
    """Write ``path`` atomically unless it already holds exactly these rows; True when written."""
    import io

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    text = buf.getvalue()
    if path.is_file() and path.read_text() == text:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, text)
    return True


def s512_scores(det: Detector, paths: list[str], chunk: int = 16) -> np.ndarray:
    """P(generated) through ``Detector.predict`` after the benchmarks' normalisation (shorter side 512, JPEG
    q95, both classes alike); a chunk of decoded images in memory at a time."""
    out: list[float] = []
    for i in range(0, len(paths), chunk):
        imgs = [ff.normalise_s512(decode_image(p).image) for p in paths[i : i + chunk]]
        out += [p.probability if p.ok else np.nan for p in det.predict(imgs, batch_size=8)]
    return np.array(out, dtype=np.float64)


def rate(k: int, n: int) -> dict:
    lo, hi = wilson_interval(k, n)
    return {"k": k, "n": n, "rate": k / n if n else None, "ci95": [lo, hi]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=DEFAULT_DETECTOR_DIR)
    ap.add_argument("--cache", type=Path, default=REPO / "runs" / "default-detector",
                    help="run folder: the mpft train runs (final and leave-one-source-out), their shared feature "
                         "cache, the held-out photo scores")
    ap.add_argument("--manifest", type=Path, default=MANIFEST,
                    help="the training manifest this script writes and `mpft train` reads (committed)")
    ap.add_argument("--views", default="grid:2+whole", help="the shipped views (docs/benchmarks.md)")
    ap.add_argument("--holdout", nargs="*", default=["sd3"], help="families kept out of training (README command 1)")
    ap.add_argument("--holdout-photos", nargs="*", default=list(README_PHOTOS),
                    help="photos (paths under ../shared/data) kept out of training and calibration (README command 1)")
    ap.add_argument("--imagenet", type=int, default=200, help="seeded ImageNet photos (as the field benchmark)")
    ap.add_argument("--train-views", type=int, default=2)
    # 24 balanced passes at batch 32 over 2 views: the field benchmark's probe (train_probe: 3 x 4 x N x V / 32 steps)
    ap.add_argument("--epochs", type=int, default=24)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--target-fpr", type=float, default=0.05)
    ap.add_argument("--band", type=float, default=0.05)
    ap.add_argument("--precision", choices=("fp32", "bf16"), default="bf16",
                    help="of the cached training features (inference and calibration run fp32)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="random:tiny backbone and a few images (tests)")
    args = ap.parse_args(argv)
    cwd = os.getcwd()
    try:
        return make(args, argv)
    finally:
        os.chdir(cwd)


def make(args: argparse.Namespace, argv: list[str] | None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    t_start = time.perf_counter()
    from mpft.cli.train import train_command
    from mpft.training import TrainConfig, train

    spec = "random:tiny" if args.quick else "clip-vit-b16"
    # paths inside the repository are used relative to its root, so that config.json records commands
    # and paths that work in any clone (run `mpft train` from the repository root)
    os.chdir(REPO)
    args.cache, args.manifest, args.out = (Path(_rel(p)) for p in (args.cache, args.manifest, args.out))
    manifest = args.cache / "train.csv" if args.quick else args.manifest
    # wild.csv lists one photo twice (an ianare HEIC sample): once is enough
    seen: set[str] = set()
    items = [it for it in ff.load_items(n_imagenet=args.imagenet, quick=args.quick)
             if not (it.path in seen or seen.add(it.path))]
    held_gen = [it for it in items if it.label == 1 and it.family in args.holdout]
    held_photos = {str(ug.DATA / p) for p in args.holdout_photos}
    missing = held_photos - {it.path for it in items}
    if missing and not args.quick:
        raise SystemExit(f"--holdout-photos not among the data: {sorted(missing)}")
    train_items = [it for it in items if it not in held_gen and it.path not in held_photos]
    if write_csv(manifest, ["path", "label", "generator", "source"], manifest_rows(train_items, manifest.parent)):
        log.info("wrote %s (%d images)", manifest, len(train_items))
    log.info("%d training images (%d generated); %d held-out generated", len(train_items),
             sum(it.label for it in train_items), len(held_gen))

    def config(out: Path, exclude: tuple[str, ...] = ()) -> TrainConfig:
        cfg = TrainConfig(
            data=[str(manifest)], out=str(out), exclude=exclude, validate=False, backbone=spec,
            tune=TuneConfig(strategy="linear"), mask=MaskConfig(strategy="none"), augment=ug.TRAIN_AUGMENT,
            balance="generator", views=parse_views(args.views), train_views=args.train_views,
            feature_cache=str(args.cache / "features"), feature_precision=args.precision, epochs=args.epochs,
            batch_size=args.batch_size, seed=args.seed, workers=args.workers, device="cpu",
        )
        cfg.command = train_command(cfg)
        return cfg

    cfg = config(args.cache / "run")
    log.info("training: %s", cfg.command)
    result = train(cfg)
    t_train = time.perf_counter() - t_start

    # leave one real source group out: each group's photos scored by a model that never saw that group
    groups: dict[str, list[ff.Item]] = {}
    for it in train_items:
        if it.label == 0:
            groups.setdefault(it.group, []).append(it)
    loso: dict[str, np.ndarray] = {}
    sources: dict[str, np.ndarray] = {}
    for g, members in groups.items():
        folder = args.cache / "loso" / g
        done = folder / "scores.json"
        paths = [it.path for it in members]
        exclude = folder / "exclude.csv"
        inner_cfg = config(folder / "run", (str(exclude),))
        # a finished group is reused only for the same photos and the same training command
        key = {"paths": paths, "command": inner_cfg.command}
        stored = json.loads(done.read_text()) if done.is_file() else {}
        if {k: stored.get(k) for k in key} == key:
            loso[g] = np.array(stored["scores"], dtype=np.float64)
        else:
            write_csv(exclude, ["path"], [[os.path.relpath(p, folder)] for p in paths])
            inner = train(inner_cfg)
            loso[g] = s512_scores(Detector.load(inner.last), paths)
            atomic_write_text(done, json.dumps({**key, "scores": loso[g].tolist()}))
        sources[g] = np.array([it.family for it in members])
        log.info("loso %s: %d photos, %.1f%% at p >= 0.5", g, len(paths), 100 * float((loso[g] >= 0.5).mean()))
    bad = {g: int(np.isnan(s).sum()) for g, s in loso.items() if np.isnan(s).any()}
    if bad:
        raise SystemExit(f"unreadable calibration photos: {bad}")
    t = ff.balanced_threshold(loso, args.target_fpr)

    tmp = args.out.with_name(args.out.name + ".new")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(result.last, tmp)
    views = parse_views(args.views)
    wrapper = "python benchmarks/make_default_detector.py " + " ".join(argv if argv is not None else sys.argv[1:])
    training = json.loads((tmp / "config.json").read_text())["training"]
    training.update({
        "wrapper": wrapper.strip(),
        "holdout_families": args.holdout,
        "holdout_photos": list(args.holdout_photos),
        "machine": {"cpu": cpu_description(), "threads": torch.get_num_threads(), "torch": torch.__version__},
    })
    det = Detector.load(tmp)
    s_held = s512_scores(det, [it.path for it in held_gen])
    by_source = {}
    for g, s in loso.items():
        for src in sorted(set(sources[g])):
            sel = s[sources[g] == src]
            by_source[src] = {"group": g, **rate(int((sel >= t).sum()), len(sel))}
    metrics = {
        "normalisation": "shorter side 512 + JPEG q95 for every photo and generated image, views " + views.spec,
        "loso_fpr_by_group": {g: rate(int((s >= t).sum()), len(s)) for g, s in loso.items()},
        "loso_fpr_by_source": by_source,
        "heldout_family_recall": rate(int((s_held >= t).sum()), len(s_held)),
    }
    training["metrics_at_calibrated_threshold"] = metrics
    training["wall_seconds"] = round(time.perf_counter() - t_start, 1)
    training["train_seconds"] = round(t_train, 1)
    n_photos = sum(len(s) for s in loso.values())
    thresholds = {
        "calibrated": {"value": t, "target_fpr": args.target_fpr,
                       "how": f"leave one real source group out: {args.target_fpr:.0%} false positives averaged "
                              f"over {len(loso)} photo-source groups ({n_photos} photos), each group scored by "
                              f"a model trained without it; shorter side 512 + JPEG q95, views {views.spec}"},
        "uncalibrated": {"value": 0.5},
    }
    update_config(tmp, threshold=t, thresholds=thresholds, uncertain_band=args.band, training=training)
    Detector.load(tmp)  # it must load before it replaces anything
    if args.out.exists():
        shutil.rmtree(args.out)
    tmp.rename(args.out)
    print(json.dumps({"threshold": t, "metrics": metrics, "command": cfg.command,
                      "wall_seconds": training["wall_seconds"]}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
