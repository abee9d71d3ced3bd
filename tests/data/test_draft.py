"""Reduced-scale JPEG decoding (PIL draft mode) for resizing policies: where it applies, and that
the model input barely changes."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mpft.data.dataset import ImageDataset
from mpft.data.images import decode_image
from mpft.data.samples import Sample
from mpft.data.transforms import Perturbation, PreprocessPolicy, draft_side, prepare


def _photo(w: int, h: int, seed: int = 0) -> Image.Image:
    """Smooth shapes plus mild noise: photo-like content whose downscales are comparable."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w] / max(w, h)
    arr = np.stack([np.sin(9 * x + 3 * y), np.cos(7 * y - 2 * x), np.sin(5 * x * y + 1)], -1) * 100 + 128
    arr = arr + rng.normal(0, 6, arr.shape)
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def _jpeg(img: Image.Image, path: Path | None = None) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=92)
    if path is not None:
        path.write_bytes(buf.getvalue())
    return buf.getvalue()


def test_draft_side_only_for_resizing_policies():
    assert draft_side(PreprocessPolicy(size=224, resize=False)) is None
    assert draft_side(PreprocessPolicy(size=224, resize=True)) == 672


@pytest.mark.parametrize(("size", "min_side", "expected"), [
    ((2400, 1800), 672, (1200, 900)),   # 1/2: 1/4 would be 450 px < 672
    ((4000, 3000), 672, (1000, 750)),   # 1/4
    ((1800, 2400), 672, (900, 1200)),   # portrait: the shorter side decides
    ((1200, 900), 672, (1200, 900)),    # below 2x the bound: decoded at full size
])
def test_draft_picks_the_largest_reduction_that_keeps_the_bound(size, min_side, expected):
    data = _jpeg(_photo(*size))
    dec = decode_image(data, draft_min_side=min_side)
    assert dec.image.size == expected and dec.image.mode == "RGB"
    assert dec.original_size == size
    assert any("draft" in n for n in dec.notes) == (expected != size)
    assert decode_image(data).image.size == size  # off unless asked


def test_draft_ignores_non_jpeg():
    buf = io.BytesIO()
    _photo(1600, 1400).save(buf, format="PNG")
    assert decode_image(buf.getvalue(), draft_min_side=224).image.size == (1600, 1400)


def test_draft_barely_changes_the_model_input():
    policy = PreprocessPolicy(size=224, resize=True)
    data = _jpeg(_photo(3000, 2000, seed=3))
    full = prepare(decode_image(data).image, policy, train=False).astype(np.float64)
    fast = prepare(decode_image(data, draft_min_side=draft_side(policy)).image, policy, train=False).astype(np.float64)
    assert full.shape == fast.shape
    diff = np.abs(full - fast)
    # measured: mean 0.15, max 1 grey level (asking for 1/8 scale instead: mean 0.48, max 3);
    # a wrong scale, crop or orientation would be tens of levels off
    assert diff.mean() < 0.3 and diff.max() <= 2


def test_dataset_uses_draft_only_for_plain_eval(tmp_path):
    path = tmp_path / "big.jpg"
    _jpeg(_photo(2400, 1800), path)
    samples = [Sample(path=path, label=0, generator="g")]
    resize = PreprocessPolicy(size=224, resize=True)
    assert ImageDataset(samples, resize, train=False)._draft == 672
    assert ImageDataset(samples, resize, train=True)._draft is None
    assert ImageDataset(samples, resize, train=False, perturbation=Perturbation("blur", 1.0))._draft is None
    assert ImageDataset(samples, PreprocessPolicy(size=224), train=False)._draft is None
    item = ImageDataset(samples, resize, train=False)[0]
    assert item["pixels"] is not None and tuple(item["pixels"].shape) == (3, 224, 224)
