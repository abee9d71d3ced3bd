"""Checkpoints: trained tensors only, identity checks, clear errors, atomic writes."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from mpft.checkpoint import load_checkpoint, read_config, update_config
from mpft.errors import CheckpointError
from tests.kit import tiny_checkpoint, tiny_config


@pytest.fixture
def ckpt(tmp_path):
    return tiny_checkpoint(tmp_path / "ck", strategy="last-k")


@pytest.mark.parametrize("strategy", ["last-k", "lora"])
def test_saved_checkpoint_reloads_the_in_memory_model(tmp_path, strategy):
    """The loaded tensors and scores are those of the model that was saved, not of another load."""
    from mpft.backbones import load_backbone
    from mpft.checkpoint import save_checkpoint
    from mpft.model import TuneConfig, create_model

    enc = load_backbone("random:tiny")
    torch.manual_seed(1)
    model = create_model(enc, TuneConfig(strategy, layers=2))
    with torch.no_grad():  # move every trained tensor away from its initial value (LoRA B starts at zero)
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.1)
    ckpt = save_checkpoint(tmp_path / "ck", model, tiny_config(model))

    loaded, loaded_cfg = load_checkpoint(ckpt)
    want, got = model.trainable_state_dict(), loaded.trainable_state_dict()
    assert set(got) == set(want)
    for name, tensor in want.items():
        torch.testing.assert_close(got[name], tensor, rtol=0, atol=0, msg=name)
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    model.eval()
    with torch.no_grad():
        expected = model(x)
        torch.testing.assert_close(loaded(x), expected)
        # the comparison can fail: a fresh model of the same config scores differently
        fresh = create_model("random:tiny", TuneConfig(strategy, layers=2)).eval()
        assert not torch.allclose(fresh(x), expected)
    assert loaded_cfg.backbone == "random:tiny" and loaded_cfg.tune["strategy"] == strategy
    for key in ("mpft_version", "backbone_sha256", "mask", "preprocess", "threshold", "training"):
        assert key in json.loads((ckpt / "config.json").read_text())


def test_only_trained_tensors_are_stored(ckpt):
    stored = load_file(str(ckpt / "model.safetensors"))
    assert "head.weight" in stored
    assert not any("embeddings" in k for k in stored)  # frozen backbone parts never stored
    assert any(".layers.3." in k for k in stored) and not any(".layers.0." in k for k in stored)


def test_wrong_backbone_identity_is_named(ckpt):
    cfg = json.loads((ckpt / "config.json").read_text())
    cfg["backbone_sha256"] = "0" * 64
    (ckpt / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="different model hides behind the same name"):
        load_checkpoint(ckpt)


def test_tensor_name_and_shape_mismatches_are_named(ckpt):
    state = load_file(str(ckpt / "model.safetensors"))
    state["head.weight"] = torch.zeros(1, 7)
    del state["head.bias"]
    state["extra.tensor"] = torch.zeros(1)
    save_file(state, str(ckpt / "model.safetensors"))
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(ckpt)
    msg = str(err.value)
    assert "head.bias" in msg and "extra.tensor" in msg and "head.weight: file (1, 7)" in msg


def test_config_that_disagrees_with_weights(ckpt):
    cfg = json.loads((ckpt / "config.json").read_text())
    cfg["tune"]["strategy"] = "lora"
    (ckpt / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="missing tensors"):
        load_checkpoint(ckpt)


@pytest.mark.parametrize(
    "breakage,match",
    [
        (lambda d: (d / "config.json").unlink(), "no config.json"),
        (lambda d: (d / "config.json").write_text("{not json"), "not valid JSON"),
        (lambda d: (d / "config.json").write_text(json.dumps({"backbone": "random:tiny"})), "lacks required"),
        (lambda d: (d / "model.safetensors").write_bytes(b"garbage"), "not a readable safetensors"),
        (lambda d: (d / "model.safetensors").unlink(), "has no model.safetensors"),
    ],
)
def test_broken_checkpoints_fail_clearly(ckpt, breakage, match):
    breakage(ckpt)
    with pytest.raises(CheckpointError, match=match):
        load_checkpoint(ckpt)


def test_newer_format_is_refused(ckpt):
    cfg = json.loads((ckpt / "config.json").read_text())
    cfg["format_version"] = 99
    (ckpt / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="Upgrade mpft"):
        read_config(ckpt)


def _edit_config(ckpt, **changes):
    cfg = json.loads((ckpt / "config.json").read_text())
    for key, value in changes.items():
        if key == "preprocess":
            cfg["preprocess"].update(value)
        else:
            cfg[key] = value
    (ckpt / "config.json").write_text(json.dumps(cfg))


def test_unknown_config_fields_are_refused_not_dropped(ckpt):
    _edit_config(ckpt, thresholds_v2={"x": 1})
    with pytest.raises(CheckpointError, match=r"unknown fields \['thresholds_v2'\]"):
        read_config(ckpt)


def test_old_checkpoints_with_mean_and_std_load_when_they_match_the_backbone(ckpt):
    from mpft.backbones import CLIP_MEAN, CLIP_STD

    _edit_config(ckpt, preprocess={"size": 32, "mean": list(CLIP_MEAN), "std": list(CLIP_STD)})
    _, cfg = load_checkpoint(ckpt)
    assert cfg.preprocess == {"size": 32, "resize": False}  # the backbone's values are the ones used

    _edit_config(ckpt, preprocess={"mean": [0.5, 0.5, 0.5], "std": list(CLIP_STD)})
    with pytest.raises(CheckpointError, match=r"normalises with mean \[0.5, 0.5, 0.5\]"):
        load_checkpoint(ckpt)


def test_a_preprocess_size_other_than_the_backbones_is_a_checkpoint_error(ckpt):
    _edit_config(ckpt, preprocess={"size": 224})  # random:tiny takes 32 px
    with pytest.raises(CheckpointError, match="does not match the backbone's input size 32"):
        load_checkpoint(ckpt)


def test_missing_directory(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "nope")


def test_fp16_storage_and_update_config(tmp_path):
    from mpft.checkpoint import save_checkpoint

    src = tiny_checkpoint(tmp_path / "a", strategy="lora")
    model, cfg = load_checkpoint(src)
    save_checkpoint(tmp_path / "b", model, cfg, dtype=torch.float16)
    assert all(v.dtype == torch.float16 for v in load_file(str(tmp_path / "b" / "model.safetensors")).values())
    half, cfg16 = load_checkpoint(tmp_path / "b")
    assert cfg16.weights_dtype == "float16"
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(x), half(x), atol=1e-2, rtol=1e-2)
    update_config(tmp_path / "b", threshold=0.7)
    assert read_config(tmp_path / "b").threshold == 0.7
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b"]  # no temp dirs left


def test_save_over_existing_checkpoint_is_atomic(tmp_path, monkeypatch):
    from mpft import checkpoint as ck

    src = tiny_checkpoint(tmp_path / "a")
    model, cfg = load_checkpoint(src)
    before = (src / "model.safetensors").read_bytes()

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(ck, "save_file", boom)
    with pytest.raises(OSError):
        ck.save_checkpoint(src, model, cfg)
    assert (src / "model.safetensors").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a"]
