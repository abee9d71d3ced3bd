"""The feature cache of frozen-backbone runs (issue 17 item 5) and what feeds it: fixed training views,
`--exclude`, per-source balance, and `mpft train --config RUN` repeating a run (issue 18 item 3)."""

from __future__ import annotations

import json
import os
import shlex
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from mpft.cli import main
from mpft.data.dataset import ImageDataset, chosen_view
from mpft.data.layouts import discover
from mpft.data.transforms import Augment, PreprocessPolicy
from mpft.errors import ConfigError
from mpft.model import TuneConfig
from mpft.runtime import DistInfo
from mpft.tam import MaskConfig
from mpft.training import TrainConfig, train
from mpft.training.data import make_sampler, resolve_training_data
from tests.kit import fill_folder, genimage_tree

# augmentations with randomness in every step, so two views of an image differ
_AUGMENT = Augment(jpeg_prob=0.5, blur_prob=0.3, downscale_prob=0.5)


def _cfg(data, out, **kw) -> TrainConfig:
    data = [str(d) for d in data] if isinstance(data, list) else str(data)
    base = dict(data=data, out=str(out), backbone="random:tiny", epochs=2, batch_size=4, workers=0, device="cpu",
                tune=TuneConfig("linear", feature_blocks=(1, 2)), mask=MaskConfig(strategy="none"),
                augment=_AUGMENT, train_views=3, balance="generator", validate=False)
    base.update(kw)
    return TrainConfig(**base)


def _head(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run / "last" / "model.safetensors"))


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    # 40 px images on a 32 px input: the crop position is random too
    return genimage_tree(tmp_path_factory.mktemp("fc") / "data", n_per_class=6)


def test_cached_run_trains_the_same_head_as_the_pixel_loop(tree, tmp_path):
    pixel = train(_cfg(tree, tmp_path / "pixel", feature_cache="none"))
    cached = train(_cfg(tree, tmp_path / "cached"))
    assert (tmp_path / "cached" / "features").is_dir() and not (tmp_path / "pixel" / "features").exists()
    a, b = _head(tmp_path / "pixel"), _head(tmp_path / "cached")
    assert set(a) == {"head.weight", "head.bias"}
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6)
    assert [r["loss"] for r in pixel.history] == pytest.approx([r["loss"] for r in cached.history], abs=1e-6)
    # the head moved: equal heads are not two untrained ones
    assert not torch.equal(a["head.bias"], torch.zeros_like(a["head.bias"]))
    record = json.loads((tmp_path / "cached" / "last" / "config.json").read_text())["training"]
    assert record["feature_cache"]["extracted"] == 12 and record["feature_cache"]["reused"] == 0


def test_a_shared_cache_is_reused_and_keyed_by_the_settings(tree, tmp_path):
    shared = tmp_path / "shared"
    train(_cfg(tree, tmp_path / "a", feature_cache=str(shared)))
    train(_cfg(tree, tmp_path / "b", feature_cache=str(shared), epochs=3))  # epochs: not a feature setting
    record = json.loads((tmp_path / "b" / "last" / "config.json").read_text())["training"]["feature_cache"]
    assert (record["reused"], record["extracted"]) == (12, 0)
    assert len(list(shared.iterdir())) == 1
    # other feature blocks read the same stored CLS tokens (a depth comparison extracts once)
    train(_cfg(tree, tmp_path / "d", feature_cache=str(shared), tune=TuneConfig("linear", feature_blocks=(2,))))
    record = json.loads((tmp_path / "d" / "last" / "config.json").read_text())["training"]["feature_cache"]
    assert (record["reused"], record["extracted"]) == (12, 0)
    train(_cfg(tree, tmp_path / "c", feature_cache=str(shared), train_views=2))  # other views: other features
    assert len(list(shared.iterdir())) == 2
    train(_cfg(tree, tmp_path / "e", feature_cache=str(shared), tune=TuneConfig("linear")))  # the embedding
    assert len(list(shared.iterdir())) == 3


def test_the_views_are_fixed_per_seed_and_a_draw_takes_one_of_them(tree):
    samples = discover(tree, split="train")
    ds = ImageDataset(samples, PreprocessPolicy(size=32), train=True, augment=_AUGMENT, seed=5, train_views=3)
    views = ds.fixed_views(0)["pixels"]
    assert views.shape == (3, 3, 32, 32)
    assert not torch.equal(views[0], views[1]) and not torch.equal(views[1], views[2])
    for epoch in range(3):
        ds.set_epoch(epoch)
        for draw in (0, len(samples)):  # a repeat of image 0 in a balanced draw may pick another view
            got = ds[draw]["pixels"]
            assert torch.equal(got, views[chosen_view(5, epoch, draw, 3)])
    other_seed = ImageDataset(samples, PreprocessPolicy(size=32), train=True, augment=_AUGMENT, seed=6, train_views=3)
    assert not torch.equal(other_seed.fixed_views(0)["pixels"], views)


@pytest.mark.parametrize(
    "kw",
    [dict(tune=TuneConfig("lora")), dict(mask=MaskConfig(strategy="tam")), dict(train_views=0)],
    ids=["lora", "tam", "fresh-views"],
)
def test_only_a_frozen_backbone_on_fixed_views_is_cached(tree, tmp_path, kw):
    assert _cfg(tree, tmp_path, **kw).feature_cache_dir() is None  # auto: the pixel loop
    with pytest.raises(ConfigError, match="--feature-cache"):
        _cfg(tree, tmp_path, feature_cache=str(tmp_path / "cache"), **kw)


def test_exclude_takes_paths_and_csv_lists(tree, tmp_path):
    samples = discover(tree, split="train")
    listed = tmp_path / "fold.csv"
    listed.write_text("path,label\n" + "".join(f"{s.path},x\n" for s in samples[:3]))
    train_s, val_s, _ = resolve_training_data(_cfg(tree, tmp_path, exclude=(str(listed), str(samples[3].path))))
    assert set(train_s) == set(samples[4:])
    val_all = discover(tree, split="val")
    with pytest.raises(Exception, match="path"):
        bad = tmp_path / "bad.csv"
        bad.write_text("file\nx.png\n")
        resolve_training_data(_cfg(tree, tmp_path, exclude=(str(bad),)))
    # validation loses excluded images too
    _, val_s, _ = resolve_training_data(_cfg(tree, tmp_path, validate=True, exclude=(str(val_all[0].path),)))
    assert val_all[0] not in val_s and len(val_s) == len(val_all) - 1


def test_exclude_matches_paths_spelled_through_other_folders(tree, tmp_path):
    # a manifest elsewhere names the same file as "../<tree>/..."; an exclusion list in a third folder
    # names it relative to itself: the "." / ".." differences must not let the image back in
    samples = discover(tree, split="train")
    lists = tmp_path / "lists" / "deeper"
    lists.mkdir(parents=True)
    listed = lists / "out.csv"
    listed.write_text("path\n" + "".join(f"{os.path.relpath(s.path, lists)}\n" for s in samples[:2]))
    spelled = str(tmp_path / "lists" / ".." / os.path.relpath(samples[2].path, tmp_path))
    train_s, _, _ = resolve_training_data(_cfg(tree, tmp_path, exclude=(str(listed), spelled)))
    assert set(train_s) == set(samples[3:])


def test_balance_generator_groups_real_photos_by_their_source(tmp_path):
    # a CSV with a source column (like wild.csv) plus a folder of real photos (a folder is a source)
    fill_folder(tmp_path / "imgs", 9, smooth=True)
    fill_folder(tmp_path / "gen", 4)
    imgs = sorted((tmp_path / "imgs").iterdir())
    rows = [f"imgs/{p.name},nature,photo,{'flickr' if k < 6 else 'scans'}" for k, p in enumerate(imgs[:8])]
    gens = sorted((tmp_path / "gen").iterdir())
    rows += [f"gen/{p.name},ai,{'sdxl' if k < 3 else 'flux'},web" for k, p in enumerate(gens)]
    (tmp_path / "list.csv").write_text("path,label,generator,source\n" + "\n".join(rows) + "\n")
    fill_folder(tmp_path / "cam" / "nature", 2, smooth=True, seed=9)
    cfg = _cfg([tmp_path / "list.csv", tmp_path / "cam"], tmp_path / "run")
    samples, _, sources = resolve_training_data(cfg)
    sampler = make_sampler(cfg, ImageDataset(samples, PreprocessPolicy(size=32), train=True), samples, sources,
                           DistInfo(rank=0, world_size=1, local_rank=0))
    share: dict[str, float] = {}
    for s, w in zip(samples, sampler.weights, strict=True):
        share[s.group] = share.get(s.group, 0.0) + w
    # 3 real sources (6, 2 and 2 photos) and 2 generators (3 and 1 images): equal shares within each class
    assert share == pytest.approx({"flickr": 1 / 6, "scans": 1 / 6, "cam": 1 / 6, "sdxl": 1 / 4, "flux": 1 / 4})


def test_config_repeats_a_run_from_its_checkpoint(tree, tmp_path):
    first = tmp_path / "first"
    args = ["train", str(tree), "--out", str(first), "--backbone", "random:tiny", "--tune", "linear",
            "--feature-blocks", "1,2", "--mask", "none", "--train-views", "2", "--jpeg-prob", "0.5",
            "--jpeg-quality", "40,90", "--epochs", "2", "--batch-size", "4", "--workers", "0", "--device", "cpu",
            "--no-validate", "--balance", "generator", "--views", "grid:2+whole", "--seed", "3"]
    assert main(args) == 0
    recorded = json.loads((first / "last" / "config.json").read_text())["training"]
    # the recorded command is the run's settings as options (defaults left out), and it repeats the run
    command = shlex.split(recorded["command"])
    assert command[:3] == ["mpft", "train", str(tree)] and "--no-validate" in command and "--layout" not in command
    by_command = tmp_path / "by-command"
    assert main([*command[1:], "--out", str(by_command)]) == 0
    for k, v in _head(first).items():
        assert torch.equal(v, _head(by_command)[k])
    again = tmp_path / "again"
    assert main(["train", "--config", str(first), "--out", str(again)]) == 0
    repeated = json.loads((again / "last" / "config.json").read_text())["training"]["settings"]
    want = dict(recorded["settings"], out=str(again), command=repeated["command"])
    assert repeated == want
    for k, v in _head(first).items():
        assert torch.equal(v, _head(again)[k])
    # an option on the command line still wins over the recorded one
    third = tmp_path / "third"
    assert main(["train", "--config", str(first / "best" / "config.json"), "--out", str(third), "--seed", "4"]) == 0
    assert json.loads((third / "last" / "config.json").read_text())["training"]["settings"]["seed"] == 4


def test_train_config_from_dict_round_trips_and_names_unknown_keys(tmp_path):
    cfg = _cfg(["a", "b"], tmp_path, exclude=("x.csv",), lr_backbone=1e-4, shots=8)
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ConfigError, match="unknown keys \\['nope'\\]"):
        TrainConfig.from_dict(dict(cfg.to_dict(), nope=1))


def test_cached_features_equal_the_models_head_inputs(tree, tmp_path):
    from mpft.model import create_model
    from mpft.training.features import cached_features

    samples = discover(tree, split="train")[:3]
    ds = ImageDataset(samples, PreprocessPolicy(size=32), train=True, augment=_AUGMENT, seed=0, train_views=2)
    model = create_model("random:tiny", TuneConfig("linear", feature_blocks=(2,)))
    feats, errors, report = cached_features(ds, model, tmp_path, backbone="random:tiny", device=torch.device("cpu"))
    assert not errors and feats.shape == (3, 2, model.head.in_features)
    with torch.no_grad():
        want = model.features(model.encoder.normalize(ds.fixed_views(1)["pixels"].float() / 255))
    torch.testing.assert_close(feats[1], want, rtol=0, atol=1e-6)
    stored = np.load(next(Path(report.folder).glob("*.npy")))
    enc = model.encoder
    assert stored.shape == (2, enc.num_layers, enc.width) and stored.dtype == np.float32  # every block's CLS


def test_a_resumed_cached_run_ends_where_an_uninterrupted_one_does(tree, tmp_path, monkeypatch):
    import mpft.training.loop as loop

    whole = train(_cfg(tree, tmp_path / "whole", epochs=3))
    real_save = loop.save_resume_state

    def save_then_stop(*args, **kwargs):  # the run is killed right after its first epoch is saved
        real_save(*args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(loop, "save_resume_state", save_then_stop)
    with pytest.raises(KeyboardInterrupt):
        train(_cfg(tree, tmp_path / "parts", epochs=3))
    monkeypatch.setattr(loop, "save_resume_state", real_save)
    resumed = train(_cfg(tree, tmp_path / "parts", epochs=3, resume=True))
    for k, v in _head(tmp_path / "whole").items():
        assert torch.equal(v, _head(tmp_path / "parts")[k])
    assert [r["loss"] for r in resumed.history] == [r["loss"] for r in whole.history]
    record = json.loads((tmp_path / "parts" / "last" / "config.json").read_text())["training"]["feature_cache"]
    assert record["extracted"] == 0  # the resumed run read the features the first part computed


def test_every_recorded_setting_has_an_option_that_repeats_it():
    """A new TrainConfig field needs an `mpft train` option (cli.train._FIELDS), or --config CHECKPOINT
    would silently repeat the run with its default."""
    import dataclasses

    from mpft.cli import train as cli_train

    covered = {(cli_train._SECTIONS[cls], name) for cls, name, _ in cli_train._FIELDS.values()}
    covered |= set(cli_train._FIXED)
    # size and interpolation come from the backbone's input contract, not from the user
    not_settings = {(None, "resume"), (None, "command"), ("preprocess", "size"), ("preprocess", "interpolation"),
                    ("tune", "lora_alpha")}
    for cls, section in cli_train._SECTIONS.items():
        for f in dataclasses.fields(cls):
            if cls is TrainConfig and f.name in ("tune", "mask", "preprocess", "augment"):
                continue
            key = (section, f.name)
            assert key in covered or key in not_settings, f"setting {key} has no `mpft train` option"


def test_config_of_a_checkpoint_without_training_settings_says_so(tmp_path, tiny_ckpt, capsys):
    assert main(["train", "--config", str(tiny_ckpt), "--out", str(tmp_path / "x")]) == 2
    assert "records no training settings" in capsys.readouterr().err
