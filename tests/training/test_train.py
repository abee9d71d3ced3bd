"""The training loop on the tiny random backbone: every strategy and mask mode, resume, bad files."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from mpft import tam
from mpft.backbones import load_backbone
from mpft.checkpoint import load_checkpoint
from mpft.errors import ConfigError, DataError
from mpft.model import TuneConfig
from mpft.tam import MaskConfig
from mpft.training import TrainConfig, train
from tests.kit import genimage_tree


def _cfg(data, out, **kw) -> TrainConfig:
    base = dict(
        data=str(data),
        out=str(out),
        backbone="random:tiny",
        epochs=1,
        batch_size=4,
        workers=0,
        device="cpu",
        tune=TuneConfig("last-k", layers=2),
    )
    base.update(kw)
    return TrainConfig(**base)


class _Spy:
    """What train() did inside: its model(s), their initial heads, the tensors each save wrote,
    and the pixels and kept-token indices of every training forward pass."""

    def __init__(self) -> None:
        self.models: list = []
        self.initial_heads: list[torch.Tensor] = []
        self.saved: dict[str, dict[str, torch.Tensor]] = {}
        self.steps: list[tuple[torch.Tensor, torch.Tensor | None]] = []


@pytest.fixture
def spy(monkeypatch) -> _Spy:
    import mpft.model
    import mpft.training.outputs as outputs_mod  # where the loop's checkpoints are saved

    rec = _Spy()

    class RecordingModel(mpft.model.DetectorModel):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            rec.models.append(self)
            rec.initial_heads.append(self.head.weight.detach().clone())

        def forward(self, pixels01, keep=None):
            self._pixels = pixels01.detach().clone()
            return super().forward(pixels01, keep)

        def features(self, x, keep=None):
            if self.training:
                rec.steps.append((self._pixels, None if keep is None else keep.detach().clone()))
            return super().features(x, keep)

    real_save = outputs_mod.save_checkpoint

    def recording_save(directory, model, config, **kwargs):
        rec.saved[Path(directory).name] = {k: v.detach().clone() for k, v in model.trainable_state_dict().items()}
        return real_save(directory, model, config, **kwargs)

    monkeypatch.setattr(mpft.model, "DetectorModel", RecordingModel)  # what create_model builds
    monkeypatch.setattr(outputs_mod, "save_checkpoint", recording_save)
    return rec


@pytest.mark.parametrize("strategy", ["linear", "last-k", "lora", "full"])
def test_every_tuning_strategy_trains_and_saves_only_trained_tensors(train_tree, tmp_path, strategy, spy):
    result = train(_cfg(train_tree, tmp_path / "run", tune=TuneConfig(strategy, layers=2)))
    (trained,) = spy.models  # the one model training built (before load_checkpoint builds another)
    assert result.history[0]["val"]["n"] == 16
    stored = load_file(str(result.best / "model.safetensors"))
    model, cfg = load_checkpoint(result.best)
    assert set(stored) == set(model.trainable_names())
    if strategy == "linear":
        assert set(stored) == {"head.weight", "head.bias"}
    elif strategy == "last-k":
        assert any(".layers.3." in k for k in stored) and not any(".layers.1." in k for k in stored)
    elif strategy == "lora":
        assert all("lora_" in k or k.startswith("head.") for k in stored)
    else:
        assert len(stored) == len(list(model.parameters()))
    # the checkpoint holds the trained model's tensors, exactly, and reloads to the same scores
    want, got = spy.saved["best"], model.trainable_state_dict()
    assert set(got) == set(want)
    for name, tensor in want.items():
        torch.testing.assert_close(got[name], tensor, rtol=0, atol=0, msg=name)
    assert not torch.equal(got["head.weight"], spy.initial_heads[0])  # and training moved the head
    x = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(x), trained.eval()(x))


@pytest.mark.parametrize(
    "mask",
    [
        MaskConfig("tam"),
        MaskConfig("random"),
        MaskConfig("inverse"),
        MaskConfig("none"),
        MaskConfig("tam", apply="fill"),
        MaskConfig("tam", temperature=0.5, texture="diff"),
    ],
    ids=["tam", "random", "inverse", "none", "tam-fill", "tam-T-diff"],
)
def test_every_mask_mode_trains(train_tree, tmp_path, mask, spy):
    result = train(_cfg(train_tree, tmp_path / "run", mask=mask))
    cfg = json.loads((result.best / "config.json").read_text())
    assert cfg["mask"] == mask.to_dict()
    loss = result.history[0]["loss"]
    assert math.isfinite(loss) and loss > 0, result.history
    head = load_file(str(result.best / "model.safetensors"))["head.weight"]
    assert not torch.equal(head, spy.initial_heads[0])  # the head was trained
    # the mask reached the model: "drop" removes round(ratio * N) tokens, "fill" and "none" keep all
    n = spy.models[0].encoder.num_patches
    assert spy.steps
    for _, keep in spy.steps:
        if mask.strategy == "none" or mask.apply == "fill":
            assert keep is None
        else:
            assert keep is not None and keep.shape[1] == n - tam.num_masked(n, mask.ratio)


def test_training_learns_an_easy_task(tmp_path):
    data = genimage_tree(tmp_path / "data", n_per_class=16)
    result = train(_cfg(data, tmp_path / "run", epochs=4, lr_head=1e-2, lr_backbone=1e-3, batch_size=8))
    losses = [h["loss"] for h in result.history]
    assert all(math.isfinite(v) for v in losses) and losses[-1] < losses[0], losses
    assert result.history[-1]["val"]["acc"] >= 0.9, result.history


def test_masking_changes_what_the_model_sees(train_tree, tmp_path, spy):
    a = train(_cfg(train_tree, tmp_path / "a", mask=MaskConfig("none")))
    unmasked_steps, spy.steps = spy.steps, []
    b = train(_cfg(train_tree, tmp_path / "b", mask=MaskConfig("tam", ratio=0.5)))
    assert unmasked_steps and all(keep is None for _, keep in unmasked_steps)
    # TAM at rho 0.5 drops exactly the more textured half of each image's patches
    patch = spy.models[-1].encoder.patch_size
    assert spy.steps
    for pixels, keep in spy.steps:
        scores = tam.texture_scores(pixels, patch, "gradient")
        n = scores.shape[1]
        assert keep is not None and keep.shape == (pixels.shape[0], n // 2)
        dropped = torch.ones_like(scores, dtype=torch.bool).scatter_(1, keep, False)
        for s, d in zip(scores, dropped, strict=True):
            assert s[~d].max() <= s[d].min()
    wa = load_file(str(a.last / "model.safetensors"))["head.weight"]
    wb = load_file(str(b.last / "model.safetensors"))["head.weight"]
    assert not torch.allclose(wa, wb)


def test_same_seed_same_result(train_tree, tmp_path):
    a = train(_cfg(train_tree, tmp_path / "a", mask=MaskConfig("random")))
    b = train(_cfg(train_tree, tmp_path / "b", mask=MaskConfig("random")))
    sa, sb = load_file(str(a.last / "model.safetensors")), load_file(str(b.last / "model.safetensors"))
    for k in sa:
        torch.testing.assert_close(sa[k], sb[k], rtol=0, atol=0)


def test_interrupted_run_resumes_to_the_same_weights(train_tree, tmp_path, monkeypatch):
    full = train(_cfg(train_tree, tmp_path / "full", epochs=3))
    import mpft.training.loop as loop_mod  # the loop calls validate by this name

    real_validate, calls = loop_mod.validate, {"n": 0}

    def crash_on_second_epoch(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real_validate(*args, **kwargs)

    monkeypatch.setattr(loop_mod, "validate", crash_on_second_epoch)
    with pytest.raises(KeyboardInterrupt):
        train(_cfg(train_tree, tmp_path / "cut", epochs=3))
    monkeypatch.setattr(loop_mod, "validate", real_validate)
    resumed = train(_cfg(train_tree, tmp_path / "cut", epochs=3, resume=True))
    assert [h["epoch"] for h in resumed.history] == [1, 2, 3]
    sa = load_file(str(full.last / "model.safetensors"))
    sb = load_file(str(resumed.last / "model.safetensors"))
    for k in sa:
        torch.testing.assert_close(sa[k], sb[k], atol=1e-6, rtol=1e-5)


def test_resume_refuses_different_settings(train_tree, tmp_path):
    train(_cfg(train_tree, tmp_path / "run"))
    with pytest.raises(ConfigError, match="mask"):
        train(_cfg(train_tree, tmp_path / "run", mask=MaskConfig("random"), resume=True))
    with pytest.raises(ConfigError, match="nothing to resume"):
        train(_cfg(train_tree, tmp_path / "other", resume=True))


def test_bad_files_are_skipped_and_listed(train_tree, tmp_path):
    (train_tree / "train" / "ai" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)
    (train_tree / "train" / "nature" / "empty.jpg").write_bytes(b"")
    result = train(_cfg(train_tree, tmp_path / "run", epochs=2))
    assert any("broken.png" in p for p in result.skipped)
    cfg = json.loads((result.last / "config.json").read_text())
    assert any("broken.png" in p for p in cfg["training"]["skipped_files"])


def test_shots_takes_a_balanced_subset(tmp_path):
    data = genimage_tree(tmp_path / "data", n_per_class=10)
    result = train(_cfg(data, tmp_path / "run", shots=6))
    counts = json.loads((result.last / "config.json").read_text())["training"]["n_train"]
    assert (counts["total"], counts["real"], counts["fake"]) == (6, 3, 3)


def test_clear_errors_before_training(tmp_path):
    with pytest.raises(DataError):
        train(_cfg(tmp_path / "missing", tmp_path / "run"))
    one = genimage_tree(tmp_path / "one", splits=("train",))
    for f in (one / "train" / "ai").iterdir():
        f.unlink()
    with pytest.raises(DataError):
        train(_cfg(one, tmp_path / "run"))
    with pytest.raises(ConfigError):
        _cfg(one, tmp_path / "run", epochs=0)
    with pytest.raises(ConfigError):
        train(
            _cfg(genimage_tree(tmp_path / "ok"), tmp_path / "run", tune=TuneConfig("last-k", layers=9))
        )


def test_caller_encoder_is_not_modified(train_tree, tmp_path):
    enc = load_backbone("random:tiny")
    before = {k: v.clone() for k, v in enc.state_dict().items()}
    train(_cfg(train_tree, tmp_path / "run", tune=TuneConfig("full")), encoder=enc)
    train(_cfg(train_tree, tmp_path / "run2", tune=TuneConfig("lora")), encoder=enc)
    after = enc.state_dict()
    assert set(after) == set(before)
    for k in before:
        assert torch.equal(before[k], after[k])


def test_learning_rate_defaults_depend_on_what_trains(tmp_path):
    from mpft.training import BLOCK_LR, LORA_LR

    assert _cfg(tmp_path, tmp_path).lr_backbone == BLOCK_LR
    assert _cfg(tmp_path, tmp_path, tune=TuneConfig("lora")).lr_backbone == LORA_LR
    assert _cfg(tmp_path, tmp_path, tune=TuneConfig("lora"), lr_backbone=1e-3).lr_backbone == 1e-3
