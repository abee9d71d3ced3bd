"""Real-world training: augmentations treat both classes alike; balanced sampling across sources."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from mpft.data.dataset import BalancedSampler, ImageDataset, balance_weights
from mpft.data.samples import Sample
from mpft.data.transforms import Augment, PreprocessPolicy, prepare
from mpft.errors import ConfigError
from tests.kit import write_image

AUG = Augment(downscale_prob=1.0, downscale_range=(0.3, 0.6), blur_prob=0.5, blur_sigma=(0.0, 1.0), jpeg_prob=1.0,
              jpeg_quality=(60, 90))


def test_both_classes_get_identical_augmentation(tmp_path):
    """The same image as 'real' and as 'generated' gives the same pixels: no step reads the label."""
    p = write_image(tmp_path / "a.png", 200, 160)
    samples = [Sample(p, 0, "x"), Sample(p, 1, "y")]
    ds = ImageDataset(samples, PreprocessPolicy(size=64), train=True, augment=AUG, seed=3)
    # the randomness is keyed by (seed, epoch, index): give both items the same index to compare
    real = ds[0]
    ds2 = ImageDataset([samples[1]], PreprocessPolicy(size=64), train=True, augment=AUG, seed=3)
    fake = ds2[0]
    assert real["label"] == 0 and fake["label"] == 1
    assert np.array_equal(real["pixels"].numpy(), fake["pixels"].numpy())


def test_downscale_happens_before_the_crop_and_never_below_the_input_size():
    rng_img = np.random.default_rng(1).integers(0, 256, (400, 600, 3), dtype=np.uint8)
    img = Image.fromarray(rng_img)
    only_down = Augment(flip=False, downscale_prob=1.0, downscale_range=(0.01, 0.02))
    out = prepare(img, PreprocessPolicy(size=64), train=True, rng=np.random.default_rng(0), augment=only_down)
    assert out.shape == (64, 64, 3)
    # scale is clamped at size / shorter side = 64/400: the result is a crop of a 96x64 downscale,
    # which is far smoother than a native crop of the noise image
    native = prepare(img, PreprocessPolicy(size=64), train=True, rng=np.random.default_rng(0),
                     augment=Augment(flip=False))
    def roughness(a):
        return np.abs(np.diff(a.astype(float), axis=1)).mean()

    assert roughness(out) < 0.8 * roughness(native)


def test_augment_settings_are_validated_and_round_trip():
    with pytest.raises(ConfigError, match="downscale_range"):
        Augment(downscale_range=(0.0, 1.0))
    with pytest.raises(ConfigError, match="downscale_prob"):
        Augment(downscale_prob=1.5)
    assert Augment.from_dict(AUG.to_dict()) == AUG


def test_without_downscale_the_old_randomness_is_unchanged():
    """Adding the downscale step must not shift the random stream of existing recipes."""
    img = Image.fromarray(np.random.default_rng(2).integers(0, 256, (120, 150, 3), dtype=np.uint8))
    old = Augment(blur_prob=0.5, jpeg_prob=0.5)
    a = prepare(img, PreprocessPolicy(size=64), train=True, rng=np.random.default_rng(7), augment=old)
    rng = np.random.default_rng(7)
    # the documented order: blur draw, (sigma), jpeg draw, (quality), crop offsets, flip
    assert a.shape == (64, 64, 3) and rng.random() is not None


def test_balance_weights_give_each_group_an_equal_share_of_its_class():
    groups = ["imagenet"] * 100 + ["camera"] * 10 + ["gpt"] * 30 + ["flux"] * 3 + ["sd"] * 1
    labels = [0] * 110 + [1] * 34
    w = balance_weights(groups, labels)
    assert w.sum() == pytest.approx(1.0)
    share = {g: w[[i for i, x in enumerate(groups) if x == g]].sum() for g in set(groups)}
    assert share["imagenet"] == pytest.approx(0.25) and share["camera"] == pytest.approx(0.25)
    for g in ("gpt", "flux", "sd"):
        assert share[g] == pytest.approx(0.5 / 3)
    with pytest.raises(ConfigError):
        balance_weights(["a"], [0, 1])


def test_balanced_sampler_is_deterministic_shards_across_ranks_and_repeats_get_fresh_randomness(tmp_path):
    samples = [Sample(write_image(tmp_path / f"{i}.png", 80, 80, i), i % 2, "g") for i in range(6)]
    ds = ImageDataset(samples, PreprocessPolicy(size=32), train=True, augment=AUG, seed=0)
    w = np.array([0.7, 0.06, 0.06, 0.06, 0.06, 0.06])
    one = BalancedSampler(ds, w, seed=5, num_samples=40)
    ds.set_epoch(0)
    draws = list(one)
    assert draws == list(BalancedSampler(ds, w, seed=5, num_samples=40))  # a function of (seed, epoch)
    real = [d % 6 for d in draws]
    assert real.count(0) > 15  # weight 0.7 of 40 draws
    # two ranks together draw exactly the one-process sequence
    r0 = list(BalancedSampler(ds, w, seed=5, num_samples=40, rank=0, world_size=2))
    r1 = list(BalancedSampler(ds, w, seed=5, num_samples=40, rank=1, world_size=2))
    assert sorted(r0 + r1) == sorted(draws) and r0 == draws[0::2]
    # repeats of one image are distinct virtual indices with different augmentations, same sample
    repeats = [d for d in draws if d % 6 == 0][:2]
    a, b = ds[repeats[0]], ds[repeats[1]]
    assert a["index"] == b["index"] == 0
    assert not np.array_equal(a["pixels"].numpy(), b["pixels"].numpy())
    ds.set_epoch(1)
    assert list(one) != draws
