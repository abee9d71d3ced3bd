"""Preprocessing policy, augmentation, perturbations and their parsers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from mpft.data.transforms import (
    Augment,
    Perturbation,
    PreprocessPolicy,
    parse_perturbations,
    prepare,
    reencode,
    to_tensor,
)
from mpft.errors import ConfigError
from tests.kit import noise_image


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def test_small_image_upscaled_to_size() -> None:
    out = prepare(noise_image(32, 48), PreprocessPolicy(size=64), train=False)
    assert out.shape == (64, 64, 3) and out.dtype == np.uint8
    # 32 -> 64 on the short side: the long side became 96 and the centre 64 rows were kept.
    expected = np.asarray(noise_image(32, 48).resize((64, 96), Image.Resampling.BICUBIC))[16:80]
    assert np.array_equal(out, expected)


def test_large_image_cropped_not_resized() -> None:
    img = noise_image(100, 80)
    out = prepare(img, PreprocessPolicy(size=32), train=False)
    assert np.array_equal(out, np.asarray(img)[24:56, 34:66])  # exact native pixels, centre
    train_out = prepare(img, PreprocessPolicy(size=32), train=True, rng=_rng(1))
    src = np.asarray(img)
    hits = [
        (y, x)
        for y in range(80 - 31)
        for x in range(100 - 31)
        if np.array_equal(src[y : y + 32, x : x + 32], train_out)
    ]
    assert len(hits) == 1  # a native-resolution crop somewhere in the image


def test_resize_option_downscales_shorter_side() -> None:
    img = noise_image(120, 60)
    out = prepare(img, PreprocessPolicy(size=30, resize=True), train=False)
    expected = np.asarray(img.resize((60, 30), Image.Resampling.BICUBIC, reducing_gap=3.0))[:, 15:45]
    assert np.array_equal(out, expected)
    assert not np.array_equal(out, prepare(img, PreprocessPolicy(size=30), train=False))


def test_train_deterministic_given_rng_and_varies_with_seed() -> None:
    img = noise_image(90, 70)
    policy = PreprocessPolicy(size=32)
    aug = Augment(flip=True, blur_prob=0.5, jpeg_prob=0.5)
    a = prepare(img, policy, train=True, rng=_rng(7), augment=aug)
    b = prepare(img, policy, train=True, rng=_rng(7), augment=aug)
    assert np.array_equal(a, b)
    outs = {prepare(img, policy, train=True, rng=_rng(s), augment=aug).tobytes() for s in range(6)}
    assert len(outs) > 1


def test_augment_applied_only_in_training() -> None:
    img = noise_image(40, 40)
    policy = PreprocessPolicy(size=40)
    heavy = Augment(flip=False, blur_prob=1.0, blur_sigma=(2.0, 2.0), jpeg_prob=1.0, jpeg_quality=(30, 30))
    assert np.array_equal(prepare(img, policy, train=False, augment=heavy), np.asarray(img))
    blurred = prepare(img, policy, train=True, rng=_rng(), augment=heavy)
    assert blurred.std() < np.asarray(img).std() / 2  # blur + JPEG flatten the noise


def test_policy_and_augment_dict_roundtrip() -> None:
    policy = PreprocessPolicy(size=128, resize=True)
    assert PreprocessPolicy.from_dict(policy.to_dict()) == policy
    assert PreprocessPolicy().to_dict() == {"resize": False}  # the backbone sets the size
    with pytest.raises(ConfigError, match="unknown keys"):
        PreprocessPolicy.from_dict({"resize": False, "mean": [0.5, 0.5, 0.5]})  # normalisation is the backbone's
    aug = Augment(blur_prob=0.1, jpeg_quality=(60, 90))
    assert Augment.from_dict(aug.to_dict()) == aug
    with pytest.raises(ConfigError, match="unknown keys"):
        PreprocessPolicy.from_dict({"size": 224, "crop": "center"})
    with pytest.raises(ConfigError, match="unknown keys"):
        Augment.from_dict({"rotate": 1})
    with pytest.raises(ConfigError):
        Augment(jpeg_quality=(90, 30))
    with pytest.raises(ConfigError):
        PreprocessPolicy(size=0)


def test_policy_takes_its_size_from_the_backbone() -> None:
    unset = PreprocessPolicy(resize=True)
    with pytest.raises(ConfigError, match="for_backbone"):
        _ = unset.side
    resolved = unset.for_backbone(224)
    assert (resolved.size, resolved.resize, unset.size) == (224, True, None)  # a copy: the caller's stays unset
    assert PreprocessPolicy(size=224).for_backbone(224).size == 224
    with pytest.raises(ConfigError, match="does not match the backbone's input size 32"):
        PreprocessPolicy(size=224).for_backbone(32)
    with pytest.raises(ConfigError, match="true or false"):
        PreprocessPolicy(resize="yes")


def test_to_tensor() -> None:
    arr = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    t = to_tensor(arr)
    assert t.dtype == torch.uint8 and t.shape == (3, 2, 3)
    assert t[1, 0, 2].item() == arr[0, 2, 1]
    with pytest.raises(ValueError):
        to_tensor(arr.astype(np.float32))


@pytest.mark.parametrize("spec", ["jpeg:50", "webp:60", "blur:1.5", "resize:0.5", "lowres:16", "crop:20"])
def test_perturbations_change_image_deterministically(spec: str) -> None:
    img = noise_image(48, 40)
    (p,) = parse_perturbations([spec])
    assert p.name == spec
    a, b = p.apply(img), p.apply(img)
    assert a.mode == "RGB" and np.array_equal(np.asarray(a), np.asarray(b))
    expected_size = {"lowres": (16, 16), "crop": (20, 20)}.get(p.kind, (48, 40))
    assert a.size == expected_size
    if p.kind == "crop":
        assert np.array_equal(np.asarray(a), np.asarray(img)[10:30, 14:34])
    elif p.kind == "lowres":
        assert np.array_equal(np.asarray(a), np.asarray(img.resize((16, 16), Image.Resampling.BICUBIC)))
    else:
        assert np.abs(np.asarray(a).astype(int) - np.asarray(img).astype(int)).mean() > 1


def test_parse_multiple_values_and_preset() -> None:
    assert [p.name for p in parse_perturbations(["jpeg:95,75,50", "blur:1"])] == [
        "jpeg:95",
        "jpeg:75",
        "jpeg:50",
        "blur:1",
    ]
    preset = [p.name for p in parse_perturbations(["genimage-degraded"])]
    assert preset == ["lowres:112", "lowres:64", "jpeg:65", "jpeg:30", "blur:3", "blur:5"]
    assert parse_perturbations(["jpeg:30", "genimage-degraded"])[0] == Perturbation("jpeg", 30)


@pytest.mark.parametrize(
    "spec", ["gamma:2", "jpeg", "jpeg:", "jpeg:abc", "jpeg:0", "jpeg:75.5", "resize:2", "blur:-1", "crop:0"]
)
def test_parse_errors(spec: str) -> None:
    with pytest.raises(ConfigError, match="jpeg, webp, blur, resize, lowres, crop") as info:
        parse_perturbations([spec])
    assert repr(spec) in str(info.value)


def test_reencode() -> None:
    img = noise_image(24, 24)
    assert np.array_equal(np.asarray(reencode(img, "png")), np.asarray(img))
    jpg = reencode(img, "jpeg:95")
    assert jpg.mode == "RGB" and not np.array_equal(np.asarray(jpg), np.asarray(img))
    for bad in ("webp:90", "jpeg", "jpeg:101", "gif"):
        with pytest.raises(ConfigError, match="jpeg:Q"):
            reencode(img, bad)


def test_policy_interpolation_comes_from_the_backbone():
    from mpft.data.transforms import PreprocessPolicy

    resolved = PreprocessPolicy().for_backbone(32, "bilinear")
    assert resolved.interpolation == "bilinear" and resolved.resample.name == "BILINEAR"
    assert PreprocessPolicy().to_dict() == {"resize": False}  # checkpoints leave it to the backbone
    assert PreprocessPolicy.from_dict(resolved.to_dict()) == resolved
    with pytest.raises(ConfigError, match="does not match the backbone's 'bicubic'"):
        PreprocessPolicy(interpolation="bilinear").for_backbone(32, "bicubic")
    with pytest.raises(ConfigError, match="unknown interpolation"):
        PreprocessPolicy(interpolation="cubic")
