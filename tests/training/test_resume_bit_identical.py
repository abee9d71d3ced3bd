"""A killed training run, resumed, ends with exactly the weights of a run that was never killed (CPU).

docs/train.md states this. It holds because the resume state (RUN_DIR/resume/) carries the
trainable tensors, optimizer and scheduler state at the last finished epoch, and everything
random in an epoch (shuffle, augmentation, masks) is a function of (seed, epoch, index): the
redone epoch sees the same batches.
"""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from mpft.model import TuneConfig
from mpft.tam import MaskConfig
from mpft.training import TrainConfig, train
from mpft.training.state import read_resume_state


def _cfg(data, out, **kw) -> TrainConfig:
    return TrainConfig(data=str(data), out=str(out), backbone="random:tiny", epochs=3, batch_size=4, workers=0,
                       device="cpu", **kw)


def test_killed_mid_epoch_resumes_bit_identical(train_tree, tmp_path, monkeypatch) -> None:
    settings = dict(tune=TuneConfig("lora", layers=2), mask=MaskConfig("random"))  # random masks: the hard case
    full = train(_cfg(train_tree, tmp_path / "full", **settings))

    real_step, calls = torch.optim.AdamW.step, {"n": 0}

    def killed_in_epoch_two(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 6:  # epoch 1 has 4 steps (16 images, batch 4): the 2nd step of epoch 2
            raise KeyboardInterrupt
        return real_step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.AdamW, "step", killed_in_epoch_two)
    with pytest.raises(KeyboardInterrupt):
        train(_cfg(train_tree, tmp_path / "cut", **settings))
    monkeypatch.setattr(torch.optim.AdamW, "step", real_step)
    cut = _cfg(train_tree, tmp_path / "cut", resume=True, **settings)
    assert read_resume_state(tmp_path / "cut", cut.identity()).progress.epoch == 0  # epoch 2 is redone from its start

    resumed = train(cut)
    a = load_file(str(full.last / "model.safetensors"))
    b = load_file(str(resumed.last / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert [h["loss"] for h in resumed.history] == [h["loss"] for h in full.history]
