"""The Python API with odd inputs and big images (issue 13, items 7 and 9)."""

from __future__ import annotations

import copy
import io
from pathlib import Path

import pytest
from PIL import Image

from tests.kit import noise_image, tiny_checkpoint


@pytest.fixture(scope="module")
def det(tmp_path_factory):
    from mpft import Detector

    return Detector.load(tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny", "lora", head_std=0.5))


def test_unsupported_input_gets_an_error_row_and_the_rest_are_scored(det, tmp_path):
    path = tmp_path / "a.png"
    noise_image(40, 40).save(path)
    buf = io.BytesIO()
    noise_image(40, 40, seed=1).save(buf, format="PNG")
    results = det.predict([path, 42, buf.getvalue(), None])
    assert len(results) == 4
    assert results[0].ok and results[2].ok
    for bad, name in ((results[1], "int"), (results[3], "NoneType")):
        assert bad.verdict == "error" and bad.probability is None
        assert f"unsupported input type {name}; pass a path, bytes or a PIL image" in bad.error


def test_max_pixels_attribute_is_the_one_limit(det, tmp_path, monkeypatch):
    path = tmp_path / "big.jpg"
    noise_image(300, 200).save(path, quality=90)  # 60000 pixels
    d = copy.copy(det)
    # Pillow's process-wide guard, made tiny here as a stand-in for its 89.5 / 179 MP defaults
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 20_000)
    (r,) = d.predict(path)
    assert r.ok, r.error
    d.max_pixels = 59_999
    (r,) = d.predict(path)
    assert r.verdict == "error" and "max_pixels=59999" in r.error


def test_over_limit_jpeg_scored_at_reduced_scale_when_the_policy_resizes(det, tmp_path):
    from mpft.data.transforms import PreprocessPolicy

    path = tmp_path / "photo.jpg"
    noise_image(800, 600).save(path, quality=90)  # 480000 pixels
    d = copy.copy(det)
    d.max_pixels = 100_000
    (r,) = d.predict(path)
    assert r.verdict == "error" and "max_pixels=100000" in r.error  # a cropping policy needs every pixel
    d.policy = PreprocessPolicy(size=32, resize=True)  # downscales anyway: decode at 1/4 (200x150)
    (r,) = d.predict(path)
    assert r.ok, r.error
    assert any("reduced scale 800x600 -> 200x150" in n for n in r.notes)


@pytest.mark.slow
def test_phone_photo_108_megapixels(det, tmp_path: Path):
    path = tmp_path / "phone.jpg"
    Image.new("RGB", (12000, 9000), (90, 140, 60)).save(path, quality=80)
    d = copy.copy(det)
    (r,) = d.predict(path)
    assert r.verdict == "error" and "max_pixels=64000000" in r.error and "--max-pixels" in r.error
    d.max_pixels = 200_000_000
    (r,) = d.predict(path)
    assert r.ok, r.error
