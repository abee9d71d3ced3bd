"""Evaluation orchestration: checkpoint + datasets in, :class:`EvalReport` (and report files) out.

The figures come from :mod:`mpft.evaluate.metrics`, the files from :mod:`mpft.evaluate.outputs`;
this module only finds the data, scores it under each condition (clean, perturbations, format
normalisation) and hands labelled score arrays to those two.

Determinism: nothing here draws random numbers except the seeded ``limit`` subset and the seeded
bootstrap, so two runs with the same inputs give the same ``metrics.json`` (apart from
``meta.created``). Under ``torchrun`` each process scores indices ``rank::world`` and rank 0
gathers the scores, computes the metrics and writes the report; other ranks write nothing.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from mpft.checkpoint import CONFIG_NAME, DEFAULT_THRESHOLD, DetectorConfig
from mpft.data.dataset import ImageDataset
from mpft.data.layouts import (
    FAKE,
    REAL,
    Sample,
    dataset_splits,
    detect_layout,
    discover,
    limit_per_class,
    single_class,
    summarize,
)
from mpft.data.transforms import Perturbation, PreprocessPolicy, parse_perturbations, parse_reencode
from mpft.errors import CheckpointError, ConfigError, DataError
from mpft.evaluate.metrics import group_metrics, resolve_real_pool, threshold_at_fpr
from mpft.evaluate.outputs import write_all
from mpft.evaluate.schema import CLEAN, Condition, EvalReport, ReportMeta, ScoreRow, SkippedFile
from mpft.inference import score_dataset
from mpft.model import DetectorModel
from mpft.precision import check_precision, precision_device, resolve_precision
from mpft.runtime import DistInfo, init_distributed, local_device, resolve_device, seed_everything
from mpft.tam import MASK_STRATEGIES, MaskConfig

log = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_SWEEP_N_BOOT",
    "EVAL_SPLITS",
    "EvalData",
    "EvalInterrupted",
    "evaluate",
    "eval_split",
    "parse_mask",
    "resolve_checkpoint_dir",
    "resolve_eval_data",
]

#: Bootstrap resamples for perturbed / format-normalised conditions unless ``sweep_n_boot`` is given.
DEFAULT_SWEEP_N_BOOT = 200
#: Split folders an evaluation uses, in order of preference (GenImage's test split is ``val``).
EVAL_SPLITS = ("val", "test")
NORMALIZE_PREFIX = "normalize:"


class EvalInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped :func:`evaluate`; ``report`` holds what was scored (``report.meta.partial`` says how far).

    A KeyboardInterrupt, so code that stops on Ctrl-C still stops (``mpft eval`` exits 130); the
    partial report has already been written to ``out`` when one was given.
    """

    def __init__(self, report: EvalReport) -> None:
        super().__init__(report.meta.partial)
        self.report = report


# --------------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------------


def resolve_checkpoint_dir(path: str | os.PathLike[str]) -> Path:
    """The checkpoint directory of ``path``: itself, or ``path/best`` for a training run directory.

    Raises:
        CheckpointError: ``path`` is missing or neither is a checkpoint (no ``config.json``).
    """
    p = Path(path)
    if not p.exists():
        raise CheckpointError(f"checkpoint not found: {p} (pass a checkpoint dir or a run dir with best/)")
    if (p / CONFIG_NAME).is_file():
        return p
    if (p / "best" / CONFIG_NAME).is_file():
        return p / "best"
    raise CheckpointError(
        f"{p} is not an mpft checkpoint: no {CONFIG_NAME} in it or in {p / 'best'} "
        "(pass RUN_DIR/best, RUN_DIR/last or a run directory written by `mpft train`)"
    )


def eval_split(root: str | os.PathLike[str]) -> str | None:
    """Split folder to evaluate in ``root``: "val" (GenImage's test split), else "test", or None.

    Split folders are found by :func:`mpft.data.layouts.dataset_splits` (``root`` and its
    generator folders; an object-class folder named ``train`` is no split).

    Raises:
        DataError: the dataset has split folders but only a training split.
    """
    found = dataset_splits(root)
    if not found:
        return None
    for split in EVAL_SPLITS:
        if split in found:
            return split
    raise DataError(
        f"{root}: has only {found} split folders; evaluation needs a val/ or test/ split "
        "(or pass the split folder itself)"
    )


def parse_mask(spec: str | None, base: dict[str, Any]) -> MaskConfig | None:
    """Analysis-only masking at inference: ``"tam:0.5"``, ``"random:0.3"``, ``"tam"`` or ``"none"``.

    Args:
        spec: ``STRATEGY[:RATIO]``; None or "none" gives None (no masking).
        base: the checkpoint's mask settings; texture measure, temperature and application
            (and the ratio when ``spec`` names none) come from it.

    Raises:
        ConfigError: unknown strategy or bad ratio.
    """
    if spec is None:
        return None
    text = spec.strip().lower()
    strategy, sep, ratio_s = text.partition(":")
    if strategy not in MASK_STRATEGIES:
        raise ConfigError(
            f"bad --mask spec {spec!r}: strategy must be one of {', '.join(MASK_STRATEGIES)} (e.g. 'tam:0.5')"
        )
    if strategy == "none":
        return None
    cfg = dict(base)
    cfg["strategy"] = strategy
    if sep:
        try:
            cfg["ratio"] = float(ratio_s)
        except ValueError:
            raise ConfigError(f"bad --mask spec {spec!r}: {ratio_s!r} is not a ratio in [0, 1)") from None
    try:
        return MaskConfig.from_dict(cfg)
    except ConfigError as exc:
        raise ConfigError(f"bad --mask spec {spec!r}: {exc}") from None


@dataclass
class EvalData:
    """The labelled images of an evaluation, in a fixed order (sorted per dataset root)."""

    samples: list[Sample]
    real_pool: str
    splits: dict[str, str | None] = field(default_factory=dict)
    layouts: dict[str, str] = field(default_factory=dict)


def _discover_eval(root: str, layout: str) -> tuple[list[Sample], str | None, str]:
    p = Path(root)
    if not p.exists():
        raise DataError(f"evaluation data not found: {p}")
    used_layout = detect_layout(p) if layout == "auto" else layout
    split = eval_split(p) if used_layout != "csv" else None
    return discover(p, layout=used_layout, split=split), split, used_layout


def _dedupe_generators(per_root: list[tuple[str, list[Sample]]]) -> list[Sample]:
    """Rename generators that appear under several roots to ``<root folder name>/<generator>``."""
    owners: dict[str, set[str]] = {}
    for root, samples in per_root:
        for s in samples:
            owners.setdefault(s.generator, set()).add(root)
    clash = sorted(g for g, roots in owners.items() if len(roots) > 1)
    if not clash:
        return [s for _, samples in per_root for s in samples]
    log.warning("generator names %s appear in several datasets; prefixed with the dataset folder name", clash)
    renamed: dict[tuple[str, str], str] = {}
    out: list[Sample] = []
    for root, samples in per_root:
        for s in samples:
            gen = f"{Path(root).name}/{s.generator}" if s.generator in clash else s.generator
            renamed[(root, s.generator)] = gen
            out.append(Sample(s.path, s.label, gen))
    if len(set(renamed.values())) != len(renamed):
        raise DataError(
            f"generators {clash} appear in several datasets whose folders have the same name; "
            "rename the folders so that every generator gets a unique name"
        )
    return out


def resolve_eval_data(
    data: Sequence[str | os.PathLike[str]],
    *,
    layout: str = "auto",
    real: str | os.PathLike[str] | None = None,
) -> EvalData:
    """Find the labelled images of the evaluation datasets.

    Without ``real``: each root is any supported layout; a root with split folders is evaluated on
    its ``val`` split (GenImage's test split), else ``test``. Real images count per generator.
    With ``real``: each root is a folder of generated images (generator = folder name) and the
    images under ``real`` form one real pool shared by every generator row (UniversalFakeDetect
    style).

    Raises:
        DataError: a missing root, no images, or a fake folder that holds real images.
    """
    if not data:
        raise DataError("no evaluation data given: pass one or more dataset folders")
    roots = [str(d) for d in data]
    if real is None:
        per_root, splits, layouts = [], {}, {}
        for root in roots:
            samples, split, used = _discover_eval(root, layout)
            per_root.append((root, samples))
            splits[root], layouts[root] = split, used
        samples = _dedupe_generators(per_root)
        labels = np.array([s.label for s in samples])
        pool = resolve_real_pool(labels, [s.generator for s in samples], "auto")
        return EvalData(samples, pool, splits, layouts)

    real_root = Path(real)
    if not real_root.exists():
        raise DataError(f"--real folder not found: {real_root}")
    per_root = []
    for root in roots:
        p = Path(root)
        if not p.exists():
            raise DataError(f"evaluation data not found: {p}")
        _reject_labelled(p, layout)
        per_root.append((root, single_class(p, FAKE, generator=p.name)))
    fakes = _dedupe_generators(per_root)
    reals = single_class(real_root, REAL, generator=real_root.name)
    return EvalData(sorted(fakes + reals), "shared", {}, {r: "fake folder" for r in roots})


def _reject_labelled(folder: Path, layout: str) -> None:
    """With --real every DATA folder must hold generated images only; refuse one with real images."""
    try:
        used = detect_layout(folder) if layout == "auto" else layout
        samples = discover(folder, layout=used, split=eval_split(folder))
    except DataError:
        return  # not a labelled layout: a plain folder of generated images, as expected
    n_real = sum(s.label == REAL for s in samples)
    if n_real:
        raise DataError(
            f"{folder}: with --real each DATA must be a folder of generated images, but this is a {used} "
            f"dataset with {n_real} real images; drop --real to evaluate it with its own real images"
        )


def _calibration_reals(path: str | os.PathLike[str], layout: str) -> list[Sample]:
    p = Path(path)
    if not p.exists():
        raise DataError(f"--calibrate-on data not found: {p}")
    if layout == "auto" and p.is_dir():
        try:
            detect_layout(p)
        except DataError:
            # No class folders: a plain folder of real photos is the simplest calibration set.
            return single_class(p, REAL)
    samples, _, _ = _discover_eval(str(p), layout)
    reals = [s for s in samples if s.label == REAL]
    if not reals:
        raise DataError(f"--calibrate-on {p}: no real images found; calibration needs real images")
    return reals


# --------------------------------------------------------------------------------------------------
# Scoring (single process or torchrun)
# --------------------------------------------------------------------------------------------------


def _strip_source(path: str, reason: str) -> str:
    # ImageDecodeError messages start with the path; dropping it lets skipped files group by cause.
    return reason[len(path) + 2 :] if reason.startswith(f"{path}: ") else reason


#: Seconds of scoring per chunk: what a Ctrl-C can lose at most, and the spacing of fresh DataLoaders.
CHUNK_SECONDS = 30.0
#: Batches in the first chunk, before the scoring speed is known.
FIRST_CHUNK_BATCHES = 1


@dataclass
class _Scored:
    """Scores (n,) with NaN where not scored, failure reasons by index, and whether Ctrl-C cut it short."""

    scores: np.ndarray
    errors: dict[int, str]
    interrupted: bool = False

    def attempted(self) -> int:
        return int((~np.isnan(self.scores)).sum()) + len(self.errors)


def _mask_is_random(mask: MaskConfig | None) -> bool:
    # score_dataset seeds one generator per call: chunks would draw different random masks than one
    # call, so random masks are scored in one piece (as before chunking) to keep results unchanged.
    return mask is not None and mask.active and (mask.strategy == "random" or mask.temperature > 0)


def _score(
    model: DetectorModel,
    dataset: ImageDataset,
    *,
    dist_info: DistInfo,
    desc: str,
    progress: bool,
    **kw: Any,
) -> _Scored | None:
    """Score ``dataset`` in chunks; None on ranks other than 0 (under torchrun rank 0 gathers).

    Each chunk is a whole number of batches, so batches (and the float bits of the scores) are
    those of one pass over the data. Chunks grow to about :data:`CHUNK_SECONDS` of work: a Ctrl-C
    in a single-process run loses at most the chunk in flight, and everything scored before it
    is returned with ``interrupted=True``. Under torchrun an interrupt is raised as it is (the
    other ranks cannot be gathered any more).
    """
    n = len(dataset)
    mine = list(range(dist_info.rank, n, dist_info.world_size)) if dist_info.enabled else list(range(n))
    batch_size = int(kw.get("batch_size", 32))
    result = _Scored(np.full(n, np.nan, dtype=np.float64), {})
    chunk = len(mine) if _mask_is_random(kw.get("mask")) else batch_size * FIRST_CHUNK_BATCHES
    bar = tqdm(total=len(mine), desc=desc, unit="img", disable=not (progress and dist_info.is_main),
               leave=False, dynamic_ncols=True)
    start = 0
    try:
        while start < len(mine):
            idx = mine[start : start + max(chunk, 1)]
            t0 = time.perf_counter()
            scores, errors = score_dataset(model, dataset, indices=idx, desc=desc, progress=False, **kw)
            result.scores[idx] = scores[idx]
            result.errors.update(errors)
            start += len(idx)
            bar.update(len(idx))
            rate = len(idx) / max(time.perf_counter() - t0, 1e-9)
            chunk = batch_size * max(1, math.ceil(rate * CHUNK_SECONDS / batch_size))
    except KeyboardInterrupt:
        if dist_info.enabled:
            raise
        result.interrupted = True
    finally:
        bar.close()
    if not dist_info.enabled:
        return result
    import torch.distributed as dist

    part = (mine, result.scores[mine].tolist(), result.errors)
    gathered: list[Any] | None = [None] * dist_info.world_size if dist_info.is_main else None
    dist.gather_object(part, gathered, dst=0)
    if not dist_info.is_main:
        return None
    full = _Scored(np.full(n, np.nan, dtype=np.float64), {})
    for idx, vals, errs in gathered or []:
        full.scores[np.asarray(idx, dtype=np.int64)] = np.asarray(vals, dtype=np.float64)
        full.errors.update(errs)
    return full


# --------------------------------------------------------------------------------------------------
# evaluate()
# --------------------------------------------------------------------------------------------------


@dataclass
class _Plan:
    name: str
    perturbation: Perturbation | None
    normalize_format: str | None
    n_boot: int


def _plan(
    perturbs: list[Perturbation], normalize_format: str | None, n_boot: int, sweep_n_boot: int
) -> list[_Plan]:
    plans = [_Plan(CLEAN, None, None, n_boot)]
    plans += [_Plan(p.name, p, None, sweep_n_boot) for p in perturbs]
    if normalize_format is not None:
        plans.append(_Plan(f"{NORMALIZE_PREFIX}{normalize_format}", None, normalize_format, sweep_n_boot))
    return plans


def _stored_threshold_note(config: DetectorConfig) -> str:
    how = None
    for entry in (config.thresholds or {}).values():
        if isinstance(entry, dict) and entry.get("value") == config.threshold:
            how = entry.get("how")
            break
    return f"stored in the checkpoint ({how})" if how else "stored in the checkpoint"


def evaluate(
    checkpoint: str | os.PathLike[str],
    data: Sequence[str | os.PathLike[str]],
    *,
    out: str | os.PathLike[str] | None,
    layout: str = "auto",
    real: str | os.PathLike[str] | None = None,
    calibrate_on: str | os.PathLike[str] | None = None,
    target_fpr: float = 0.05,
    oracle: bool = False,
    perturb: Sequence[str] = (),
    normalize_format: str | None = None,
    mask: str | None = None,
    limit: int | None = None,
    batch_size: int = 32,
    workers: int = 0,
    device: str = "auto",
    precision: str = "fp32",
    seed: int = 0,
    n_boot: int = 1000,
    sweep_n_boot: int | None = None,
    encoder: Any = None,
    progress: bool | None = None,
    views: str | None = None,
) -> EvalReport | None:
    """Evaluate a detector checkpoint on one or more labelled datasets.

    Args:
        checkpoint: checkpoint directory, or a training run directory holding ``best/``.
        data: dataset roots (any layout), or with ``real`` folders of generated images.
        out: directory for metrics.json, metrics.csv, report.md, scores.csv and the PNG plots;
            None writes nothing.
        layout: "auto" or a layout of :mod:`mpft.data.layouts`.
        real: a folder of real images shared by every generator row (UniversalFakeDetect style).
        calibrate_on: data whose real images choose the threshold giving ``target_fpr`` false
            positives (``threshold_at_fpr``); without it the checkpoint's stored threshold is used
            (figures at 0.5 are always reported beside it).
        oracle: also report the best threshold on the test labels (labelled as not a result).
        perturb: perturbation specs, e.g. ``["jpeg:95,75,50", "blur:1,2,3"]`` or a preset name.
        normalize_format: "jpeg:Q" or "png": an extra condition with every image re-encoded.
        mask: analysis-only masking at inference, e.g. "tam:0.5" (see :func:`parse_mask`).
        limit: at most this many images per class per generator (seeded pick).
        n_boot: bootstrap resamples of the clean condition's AP/AUC intervals (0 skips them).
        sweep_n_boot: resamples for the perturbed and normalised conditions; default
            ``min(n_boot, DEFAULT_SWEEP_N_BOOT)``.
        precision: "fp32", "bf16" (autocast), "int8" (CPU only) or "auto" (bf16 on CPUs with
            native bf16, else fp32); see :mod:`mpft.precision`. metrics.json records the one used.
        encoder: an already-loaded backbone (skips loading it again).
        progress: progress bar on stderr; default when stderr is a terminal.
        views: which crops are scored and how they combine (``"grid:2"``, see :mod:`mpft.views`);
            None uses the checkpoint's setting. metrics.json records the one used.

    Returns:
        The report; None on torchrun ranks other than 0 (they only score their share).

    Interrupts: Ctrl-C in a single-process run stops scoring, writes what was scored (at most the
    last ~30 s of work is lost; ``meta.partial`` says where it stopped; the interrupted condition
    has no bootstrap intervals) and raises :class:`EvalInterrupted`, a KeyboardInterrupt carrying
    the report. Under torchrun, or before any test image was scored, a plain KeyboardInterrupt.

    Raises:
        ConfigError: bad option values or specs. DataError: missing or unusable data.
        CheckpointError: missing or unreadable checkpoint.
    """
    # Cheap checks first, so a typo fails before any model or data is loaded.
    perturbs = parse_perturbations(list(perturb)) if perturb else []
    if normalize_format is not None:
        parse_reencode(normalize_format)
    if not (math.isfinite(target_fpr) and 0.0 <= target_fpr <= 1.0):
        raise ConfigError(f"--target-fpr must be in [0, 1], got {target_fpr}")
    if limit is not None and limit < 1:
        raise ConfigError(f"--limit must be >= 1, got {limit}")
    if n_boot < 0:
        raise ConfigError(f"--n-boot must be >= 0, got {n_boot}")
    if sweep_n_boot is None:
        sweep_n_boot = min(n_boot, DEFAULT_SWEEP_N_BOOT)
    elif sweep_n_boot < 0:
        raise ConfigError(f"--sweep-n-boot must be >= 0, got {sweep_n_boot}")
    if batch_size < 1:
        raise ConfigError(f"--batch-size must be >= 1, got {batch_size}")
    parse_mask(mask, MaskConfig().to_dict())  # the spec's syntax; the checkpoint's settings come later
    device = precision_device(precision, device)
    ckpt_dir = resolve_checkpoint_dir(checkpoint)
    progress = sys.stderr.isatty() if progress is None else progress

    eval_data = resolve_eval_data(data, layout=layout, real=real)
    samples = eval_data.samples
    if limit is not None:
        samples = limit_per_class(samples, limit, seed)
    cal_samples = _calibration_reals(calibrate_on, layout) if calibrate_on is not None else None

    device0 = resolve_device(device)
    precision_requested = precision
    precision = resolve_precision(precision, device0)
    was_initialised = torch.distributed.is_available() and torch.distributed.is_initialized()
    dist_info = init_distributed(device0)
    try:
        return _run(
            ckpt_dir=ckpt_dir,
            data=[str(d) for d in data],
            eval_data=eval_data,
            samples=samples,
            cal_samples=cal_samples,
            device=local_device(device0, dist_info),
            dist_info=dist_info,
            out=out,
            real=real,
            calibrate_on=calibrate_on,
            target_fpr=target_fpr,
            oracle=oracle,
            plans=_plan(perturbs, normalize_format, n_boot, sweep_n_boot),
            perturbs=perturbs,
            normalize_format=normalize_format,
            mask=mask,
            limit=limit,
            layout=layout,
            batch_size=batch_size,
            workers=workers,
            seed=seed,
            n_boot=n_boot,
            sweep_n_boot=sweep_n_boot,
            encoder=encoder,
            progress=progress,
            precision=precision,
            precision_requested=check_precision(precision_requested),
            views=views,
        )
    finally:
        if dist_info.enabled and not was_initialised:
            torch.distributed.destroy_process_group()


def _run(
    *,
    ckpt_dir: Path,
    data: list[str],
    eval_data: EvalData,
    samples: list[Sample],
    cal_samples: list[Sample] | None,
    device: torch.device,
    dist_info: DistInfo,
    out: str | os.PathLike[str] | None,
    real: str | os.PathLike[str] | None,
    calibrate_on: str | os.PathLike[str] | None,
    target_fpr: float,
    oracle: bool,
    plans: list[_Plan],
    perturbs: list[Perturbation],
    normalize_format: str | None,
    mask: str | None,
    limit: int | None,
    layout: str,
    batch_size: int,
    workers: int,
    seed: int,
    n_boot: int,
    sweep_n_boot: int,
    encoder: Any,
    progress: bool,
    precision: str = "fp32",
    precision_requested: str = "fp32",
    views: str | None = None,
) -> EvalReport | None:
    from mpft.detector import Detector

    seed_everything(seed)
    # the one loader: eval scores the graph predict and serve run (LoRA merged, same precision, views)
    detector = Detector.load(ckpt_dir, device=str(device), encoder=encoder, precision=precision, views=views)
    model, config = detector.model, detector.config
    policy = PreprocessPolicy.from_dict(config.preprocess)
    mask_cfg = parse_mask(mask, config.mask)
    score_kw: dict[str, Any] = {
        "batch_size": batch_size, "workers": workers, "device": device, "mask": mask_cfg,
        "combine": detector.views.combine,
    }
    main = dist_info.is_main

    skipped: dict[str, str] = {}
    threshold_cal: float | None = None
    calibration: str | None = None
    if cal_samples is not None:
        ds = ImageDataset(cal_samples, policy, train=False, seed=seed, views=detector.views)
        got = _score(model, ds, dist_info=dist_info, desc="calibrating", progress=progress, **score_kw)
        if got is not None:
            if got.interrupted:
                # no test image scored yet: nothing worth a report
                log.warning("interrupted while calibrating: nothing written")
                raise KeyboardInterrupt
            for i, reason in sorted(got.errors.items()):
                path = str(cal_samples[i].path)
                skipped[path] = f"calibration: {_strip_source(path, reason)}"
            ok = got.scores[~np.isnan(got.scores)]
            if ok.size == 0:
                raise DataError(f"--calibrate-on {calibrate_on}: none of its real images could be read")
            threshold_cal = threshold_at_fpr(ok, target_fpr)
            calibration = (
                f"threshold_at_fpr on {ok.size} real images of {calibrate_on} "
                f"at target FPR {100 * target_fpr:g}%"
            )
    elif detector.threshold != DEFAULT_THRESHOLD:
        threshold_cal = detector.threshold
        calibration = _stored_threshold_note(config)

    labels = np.array([s.label for s in samples], dtype=np.int64)
    generators = np.array([s.generator for s in samples], dtype=object)
    paths = [str(s.path) for s in samples]
    conditions: list[Condition] = []
    score_rows: list[ScoreRow] = []
    n_scored: dict[str, int] = {}
    n_failed: dict[str, int] = {}
    seconds = 0.0
    # Set when Ctrl-C stops a single-process run: what was scored is still reported, marked partial.
    partial: str | None = None
    pending: tuple[_Plan, _Scored] | None = None  # scored, metrics not computed yet

    def add_condition(plan: _Plan, got: _Scored, n_boot: int) -> None:
        ok = ~np.isnan(got.scores)
        if not ok.any():
            if got.interrupted:
                return
            raise DataError(f"no image could be scored under condition {plan.name!r} ({len(got.errors)} failed)")
        rows = group_metrics(
            labels[ok], got.scores[ok], generators[ok], real_pool=eval_data.real_pool,
            threshold=DEFAULT_THRESHOLD, calibrated_threshold=threshold_cal, oracle=oracle, n_boot=n_boot, seed=seed,
        )
        conditions.append(Condition(plan.name, plan.perturbation.name if plan.perturbation else None, rows))
        score_rows.extend(
            ScoreRow(paths[i], str(generators[i]), int(labels[i]), float(got.scores[i]), plan.name)
            for i in np.flatnonzero(ok)
        )

    try:
        for plan in plans:
            ds = ImageDataset(
                samples, policy, train=False, perturbation=plan.perturbation,
                normalize_format=plan.normalize_format, seed=seed, views=detector.views,
            )
            t0 = time.perf_counter()
            got = _score(model, ds, dist_info=dist_info, desc=plan.name, progress=progress, **score_kw)
            seconds += time.perf_counter() - t0
            if got is None:
                continue
            for i, reason in sorted(got.errors.items()):
                if paths[i] in skipped:
                    continue
                why = _strip_source(paths[i], reason)
                skipped[paths[i]] = why if plan.name == CLEAN else f"{plan.name}: {why}"
            n_scored[plan.name] = int((~np.isnan(got.scores)).sum())
            n_failed[plan.name] = len(got.errors)
            if got.interrupted:
                partial = (f"interrupted during condition {plan.name!r} after {got.attempted()} of "
                           f"{len(samples)} images")
                pending = (plan, got)
                break
            pending = (plan, got)
            add_condition(plan, got, plan.n_boot)
            pending = None
    except KeyboardInterrupt:
        if dist_info.enabled:
            raise
        # Ctrl-C while computing a finished condition's intervals: report its scores without them
        partial = partial or (f"interrupted while computing the metrics of {pending[0].name!r}"
                              if pending else "interrupted")
    if partial is not None:
        if pending is not None:
            # intervals skipped: the user asked to stop, and 1000 resamples cost ~2 s per row
            add_condition(pending[0], pending[1], 0)
        if not conditions:
            log.warning("%s: no image was scored, nothing written", partial)
            raise KeyboardInterrupt
    if not main:
        return None

    n_attempted = sum(n_scored.values()) + sum(n_failed.values())
    log.info(
        "scored %d of %d images (%d could not be read) in %.1f s (%.1f images/s)",
        sum(n_scored.values()), n_attempted, sum(n_failed.values()), seconds,
        sum(n_scored.values()) / max(seconds, 1e-9),
    )
    thresholds: dict[str, float | None] = {"fixed": DEFAULT_THRESHOLD}
    if threshold_cal is not None:
        thresholds["calibrated" if cal_samples is not None else "stored"] = threshold_cal
    meta = ReportMeta(
        checkpoint=str(ckpt_dir),
        model_id=detector.model_id,
        data_paths=data + ([str(real)] if real is not None else []),
        thresholds=thresholds,
        calibration=calibration,
        seed=seed,
        limit=limit,
        real_pool=eval_data.real_pool,
        normalize_format_condition=plans[-1].name if normalize_format is not None else None,
        skipped=[SkippedFile(p, r) for p, r in sorted(skipped.items())],
        partial=partial,
        extra={
            "layout": layout if real is None else "fake folders + shared real pool",
            "splits": {k: v for k, v in eval_data.splits.items() if v is not None} or None,
            "real_folder": str(real) if real is not None else None,
            "calibrate_on": str(calibrate_on) if calibrate_on is not None else None,
            "target_fpr": target_fpr if calibrate_on is not None else None,
            "perturbations": [p.name for p in perturbs],
            "normalize_format": normalize_format,
            "mask_at_inference": mask_cfg.to_dict() if mask_cfg is not None else None,
            "precision": precision,
            "views": detector.views.spec,
            "precision_requested": precision_requested if precision_requested != precision else None,
            "n_boot": n_boot,
            "sweep_n_boot": sweep_n_boot if len(plans) > 1 else None,
            "counts": summarize(samples),
            "n_scored": n_scored,
            "n_failed": n_failed,
            "conditions_planned": [p.name for p in plans] if partial is not None else None,
        },
    )
    meta.extra = {k: v for k, v in meta.extra.items() if v is not None}
    report = EvalReport(meta=meta, conditions=conditions, scores=score_rows)
    if out is not None:
        write_all(report, out, real_pool=eval_data.real_pool)
    if skipped:
        log.warning("%d files were skipped (listed in metrics.json under meta.skipped)", len(skipped))
    if partial is not None:
        where = f" to {out}" if out is not None else ""
        log.warning("%s; partial report (marked partial) written%s", partial, where)
        raise EvalInterrupted(report)
    return report
