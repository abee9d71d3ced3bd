"""The resume state on disk (safetensors + JSON, no pickle), its errors, and validation's metrics."""

from __future__ import annotations

import json
import math
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from mpft.data.samples import Sample
from mpft.errors import CheckpointError, ConfigError
from mpft.evaluation.metrics import compute_metrics
from mpft.model import TuneConfig, create_model
from mpft.training import TrainConfig, train
from mpft.training.optim import make_optimizer
from mpft.training.state import (
    LEGACY_RESUME_NAME,
    RESUME_NAME,
    STATE_FILE,
    TENSORS_FILE,
    Progress,
    read_resume_state,
    restore_rng,
    save_resume_state,
)


def _cfg(data, out, **kw) -> TrainConfig:
    base = dict(data=str(data), out=str(out), backbone="random:tiny", epochs=1, batch_size=4, workers=0,
                device="cpu", tune=TuneConfig("lora", layers=2))
    return TrainConfig(**(base | kw))


def _stepped_run(tmp_path: Path):
    """A tiny model, optimizer and scheduler after two steps: state worth saving."""
    cfg = _cfg(tmp_path, tmp_path / "run")
    torch.manual_seed(0)
    model = create_model("random:tiny", cfg.tune)
    optim, sched = make_optimizer(model, cfg, total_steps=10)
    for _ in range(2):
        model(torch.rand(2, 3, 32, 32)).sum().backward()
        optim.step()
        sched.step()
    return cfg, model, optim, sched


def test_state_round_trips_exactly_without_pickle(tmp_path):
    cfg, model, optim, sched = _stepped_run(tmp_path)
    done = Progress(epoch=3, history=[{"epoch": 4, "loss": float("nan")}], skipped={"a.png": "truncated"},
                    best_key=[0.75, 0.5], seconds=12.5, images=64)
    where = save_resume_state(tmp_path, cfg.identity(), done, model, optim, sched, torch.device("cpu"))
    assert sorted(p.name for p in where.iterdir()) == [STATE_FILE, TENSORS_FILE]
    assert not list(tmp_path.glob("*.pt"))
    doc = json.loads((where / STATE_FILE).read_text())
    assert doc["format"] == "mpft-resume" and doc["progress"]["epoch"] == 3
    assert all(k.split("/")[0] in {"trainable", "optimizer", "rng"} for k in load_file(str(where / TENSORS_FILE)))

    # what the state holds is drawn next, after restore_rng, from every global generator
    draws = torch.rand(3), np.random.rand(3), random.random()
    state = read_resume_state(tmp_path, cfg.identity())
    assert state.progress.best_key == [0.75, 0.5] and state.progress.skipped == {"a.png": "truncated"}
    assert math.isnan(state.progress.history[0]["loss"])
    restore_rng(state.rng, torch.device("cpu"))
    assert torch.equal(torch.rand(3), draws[0]) and np.array_equal(np.random.rand(3), draws[1])
    assert random.random() == draws[2]

    # a fresh model, optimizer and scheduler continue exactly where the saved ones were
    torch.manual_seed(1)
    model2 = create_model("random:tiny", cfg.tune)
    optim2, sched2 = make_optimizer(model2, cfg, total_steps=10)
    state.restore(model2, optim2, sched2)
    want, got = model.trainable_state_dict(), model2.trainable_state_dict()
    assert want.keys() == got.keys() and all(torch.equal(want[k], got[k]) for k in want)
    a, b = optim.state_dict(), optim2.state_dict()
    assert a["param_groups"] == b["param_groups"]  # betas a tuple again, lr and initial_lr exact
    for idx in a["state"]:
        assert all(torch.equal(a["state"][idx][k], b["state"][idx][k]) for k in a["state"][idx])
    assert sched.state_dict() == sched2.state_dict()


def test_damaged_or_foreign_states_are_refused_with_a_way_out(train_tree, tmp_path):
    cfg = _cfg(train_tree, tmp_path / "run")
    train(cfg)
    good = tmp_path / "good"
    shutil.copytree(tmp_path / "run" / RESUME_NAME, good)
    where = tmp_path / "run" / RESUME_NAME

    def damaged(match: str, error=CheckpointError) -> None:
        with pytest.raises(error, match=match) as info:
            train(_cfg(train_tree, tmp_path / "run", resume=True))
        assert "without --resume" in str(info.value)
        shutil.rmtree(where, ignore_errors=True)
        shutil.copytree(good, where)

    (where / STATE_FILE).write_text('{"format": "mpft-resume", "version": 1, "identity": {')
    damaged("damaged")
    doc = json.loads((good / STATE_FILE).read_text())
    (where / STATE_FILE).write_text(json.dumps(doc | {"version": 99}))
    damaged("version 99")
    (where / STATE_FILE).write_text(json.dumps({k: v for k, v in doc.items() if k != "optimizer"}))
    damaged("optimizer")
    data = (good / TENSORS_FILE).read_bytes()
    (where / TENSORS_FILE).write_bytes(data[: len(data) // 2])  # a copy cut short
    damaged(TENSORS_FILE)
    tensors = load_file(str(good / TENSORS_FILE))
    save_file({k: v for k, v in tensors.items() if k != "trainable/head.weight"}, str(where / TENSORS_FILE))
    damaged("head.weight")

    # an earlier version's pickle is named, never unpickled
    shutil.rmtree(where)
    (tmp_path / "run" / LEGACY_RESUME_NAME).write_bytes(b"not a pickle anyone should load")
    damaged("earlier mpft", ConfigError)


def test_validation_figures_are_evaluates_metrics(monkeypatch):
    import mpft.training.validate as validate_mod

    model = create_model("random:tiny", TuneConfig("linear"))
    samples = [Sample(Path(f"{i}.png"), i % 2, "g") for i in range(8)]
    scores = np.array([0.1, 0.9, 0.6, 0.4, np.nan, 0.7, 0.2, 0.55])
    monkeypatch.setattr(validate_mod, "score_dataset", lambda *a, **k: (scores, {4: "broken"}))
    cfg = TrainConfig(data="d", out="o", workers=0)
    got = validate_mod.validate(model, samples, cfg, torch.device("cpu"))
    ok = ~np.isnan(scores)
    m = compute_metrics(np.arange(8)[ok] % 2, scores[ok], n_boot=0)
    assert got == {"acc": m.acc, "ap": m.ap, "real_acc": m.real_acc, "fake_acc": m.fake_acc, "n": 7, "skipped": 1}

    # nothing decoded: NaN figures, as the history records an undefined figure
    monkeypatch.setattr(validate_mod, "score_dataset", lambda *a, **k: (np.full(8, np.nan), {}))
    got = validate_mod.validate(model, samples, cfg, torch.device("cpu"))
    assert got["n"] == 0 and all(math.isnan(got[k]) for k in ("acc", "ap", "real_acc", "fake_acc"))
