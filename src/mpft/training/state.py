"""Resume state: what ``--resume`` needs to continue a run after its last finished epoch.

``RUN_DIR/resume/`` holds two files, written together atomically (a run killed while writing
leaves the previous state whole):

- ``tensors.safetensors``: the trainable tensors (``trainable/<name>``), the optimizer's per-tensor
  state (``optimizer/<param index>/<key>``, e.g. AdamW's ``exp_avg``, ``exp_avg_sq``, ``step``) and
  the torch RNG states (``rng/torch``, ``rng/cuda`` on a GPU);
- ``state.json``: format and version, the settings identity, the progress (last finished epoch,
  history, skipped files, best-epoch key, seconds, images), the optimizer's param groups and
  non-tensor state, the scheduler state, and the Python and numpy RNG states as lists.

Nothing is unpickled on load. Python floats survive JSON exactly (``repr`` round-trips), so a
resumed run continues bit for bit.
"""

from __future__ import annotations

import json
import logging
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from mpft import __version__
from mpft.errors import CheckpointError, ConfigError
from mpft.fsutil import atomic_directory
from mpft.model import DetectorModel

log = logging.getLogger(__name__)

RESUME_NAME = "resume"
#: The pickle earlier versions wrote; recognised only to say why it is not loaded.
LEGACY_RESUME_NAME = "resume.pt"
STATE_FILE = "state.json"
TENSORS_FILE = "tensors.safetensors"
FORMAT = "mpft-resume"
VERSION = 1

_START_OVER = "start over without --resume (best/ and last/ keep the finished epochs' checkpoints)"


@dataclass
class Progress:
    """What a run has done so far; it carries on across ``--resume``."""

    epoch: int = -1  # index of the last finished epoch; -1: none yet
    history: list[dict] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # {path: reason}
    best_key: list | None = None  # (val AP, val acc) of best/, or (epoch,) without validation
    seconds: float = 0.0  # training time, validation excluded
    images: int = 0  # images trained on, all processes


@dataclass
class ResumeState:
    """A resume state read from disk, checked against the run that continues it."""

    progress: Progress
    trainable: dict[str, torch.Tensor]
    optimizer: dict[str, Any]  # a torch optimizer state_dict
    scheduler: dict[str, Any]
    rng: dict[str, Any]

    def restore(
        self, model: DetectorModel, optim: torch.optim.Optimizer, sched: torch.optim.lr_scheduler.LRScheduler
    ) -> None:
        """Load the tensors, optimizer and scheduler state into a freshly built run."""
        expected = set(model.trainable_names())
        if set(self.trainable) != expected:
            missing, extra = sorted(expected - set(self.trainable)), sorted(set(self.trainable) - expected)
            raise CheckpointError(
                f"--resume: the resume state's trained tensors do not fit the model (missing {missing[:3]}, "
                f"unexpected {extra[:3]}); {_START_OVER}"
            )
        try:
            model.load_state_dict(self.trainable, strict=False)
            optim.load_state_dict(_with_live_tuples(self.optimizer, optim))
            sched.load_state_dict(self.scheduler)
        except (RuntimeError, ValueError, KeyError, TypeError) as exc:
            raise CheckpointError(f"--resume: the resume state does not fit this run ({exc}); {_START_OVER}") from exc


# ---- writing -------------------------------------------------------------------------------------
def save_resume_state(
    out: Path,
    identity: dict,
    progress: Progress,
    model: DetectorModel,
    optim: torch.optim.Optimizer,
    sched: torch.optim.lr_scheduler.LRScheduler,
    device: torch.device,
) -> Path:
    """Write ``out/resume/`` (both files, atomically); returns its path."""
    tensors = {f"trainable/{k}": v for k, v in model.trainable_state_dict().items()}
    opt = optim.state_dict()
    opt_state: dict[str, dict] = {}
    for idx, entries in opt["state"].items():
        names = sorted(k for k, v in entries.items() if isinstance(v, torch.Tensor))
        tensors.update({f"optimizer/{idx}/{k}": entries[k] for k in names})
        values = {k: v for k, v in entries.items() if not isinstance(v, torch.Tensor)}
        opt_state[str(idx)] = {"tensors": names, "values": values}
    rng_tensors, rng_lists = _capture_rng(device)
    tensors.update(rng_tensors)
    doc = {
        "format": FORMAT,
        "version": VERSION,
        "mpft": __version__,
        "torch": torch.__version__,
        "identity": identity,
        "progress": asdict(progress),
        "optimizer": {"param_groups": opt["param_groups"], "state": opt_state},
        "scheduler": sched.state_dict(),
        "rng": rng_lists,
    }
    final = out / RESUME_NAME
    with atomic_directory(final) as tmp:
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp / TENSORS_FILE))
        (tmp / STATE_FILE).write_text(json.dumps(doc, indent=1) + "\n")
    return final


# ---- reading -------------------------------------------------------------------------------------
def existing_state(out: Path) -> Path | None:
    """The resume state (current or legacy) in ``out``, if any."""
    for name in (RESUME_NAME, LEGACY_RESUME_NAME):
        if (out / name).exists():
            return out / name
    return None


def read_resume_state(out: Path, identity: dict) -> ResumeState:
    """Read and check ``out/resume/``.

    Raises:
        ConfigError: nothing to resume, only an old pickled ``resume.pt``, or settings that differ
            from the interrupted run's (named).
        CheckpointError: the state is damaged or not an mpft resume state.
    """
    where = out / RESUME_NAME
    if not where.is_dir():
        if (out / LEGACY_RESUME_NAME).is_file():
            raise ConfigError(
                f"--resume: {out / LEGACY_RESUME_NAME} was written by an earlier mpft as a pickle, which this "
                f"version does not load; continue it with the mpft version that wrote it, or {_START_OVER}"
            )
        raise ConfigError(f"--resume given but {where} does not exist (nothing to resume)")
    doc = _read_json(where / STATE_FILE)
    want = json.loads(json.dumps(identity))  # tuples become lists, as they were stored
    if doc["identity"] != want:
        diff = sorted(k for k in want.keys() | doc["identity"].keys() if doc["identity"].get(k) != want.get(k))
        raise ConfigError(f"--resume: settings differ from the interrupted run in {diff}")
    try:
        tensors = load_file(str(where / TENSORS_FILE), device="cpu")
    except (OSError, SafetensorError, ValueError) as exc:
        raise _damaged(where / TENSORS_FILE, str(exc)) from exc
    try:
        progress = Progress(**doc["progress"])
        optimizer = _optimizer_state(doc["optimizer"], tensors)
        rng = {"torch": tensors["rng/torch"], "cuda": tensors.get("rng/cuda"), **doc["rng"]}
        scheduler = doc["scheduler"]
    except (KeyError, TypeError, AttributeError) as exc:
        raise _damaged(where, f"missing or malformed entry {exc}") from exc
    trainable = {k.removeprefix("trainable/"): v for k, v in tensors.items() if k.startswith("trainable/")}
    return ResumeState(progress, trainable, optimizer, scheduler, rng)


def _damaged(path: Path, why: str) -> CheckpointError:
    return CheckpointError(f"--resume: {path} is damaged or not an mpft resume state ({why}); {_START_OVER}")


def _read_json(path: Path) -> dict:
    try:
        doc = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _damaged(path, str(exc)) from exc
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise _damaged(path, f"format is not {FORMAT!r}")
    if doc.get("version") != VERSION:
        raise _damaged(path, f"version {doc.get('version')!r}, this mpft reads version {VERSION}")
    if not isinstance(doc.get("identity"), dict):
        raise _damaged(path, "no settings identity")
    return doc


def _optimizer_state(doc: dict, tensors: dict[str, torch.Tensor]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for idx, entry in doc["state"].items():
        state[int(idx)] = {k: tensors[f"optimizer/{idx}/{k}"] for k in entry["tensors"]} | entry["values"]
    return {"state": state, "param_groups": doc["param_groups"]}


def _with_live_tuples(saved: dict[str, Any], optim: torch.optim.Optimizer) -> dict[str, Any]:
    """JSON turned tuples (AdamW's ``betas``) into lists; give them back the live optimizer's types."""
    groups = []
    for group, live in zip(saved["param_groups"], optim.param_groups, strict=False):
        groups.append({k: tuple(v) if isinstance(live.get(k), tuple) else v for k, v in group.items()})
    return {"state": saved["state"], "param_groups": groups + saved["param_groups"][len(groups) :]}


# ---- random number generators --------------------------------------------------------------------
def _capture_rng(device: torch.device) -> tuple[dict[str, torch.Tensor], dict[str, list]]:
    tensors = {"rng/torch": torch.get_rng_state()}
    if device.type == "cuda":
        tensors["rng/cuda"] = torch.cuda.get_rng_state(device)
    name, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    version, internal, gauss_next = random.getstate()
    lists = {
        "numpy": [name, keys.tolist(), int(pos), int(has_gauss), float(cached)],
        "python": [version, list(internal), gauss_next],
    }
    return tensors, lists


def restore_rng(rng: dict[str, Any], device: torch.device) -> None:
    """Set the global torch / CUDA / numpy / Python generators to the states saved with the epoch.

    Training draws its randomness from seeded generators (sampler, dataset, masks); restoring the
    global states as well makes any other draw repeat too.
    """
    try:
        torch.set_rng_state(rng["torch"])
        if device.type == "cuda" and rng.get("cuda") is not None:
            torch.cuda.set_rng_state(rng["cuda"], device)
        name, keys, pos, has_gauss, cached = rng["numpy"]
        np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
        version, internal, gauss_next = rng["python"]
        random.setstate((version, tuple(internal), gauss_next))
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"--resume: the resume state's random generator states are malformed ({exc}); "
                              f"{_START_OVER}") from exc
