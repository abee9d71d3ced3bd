"""Multi-view scoring: view geometry covers the image, combination rules, batching, one path for all callers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from mpft.data.transforms import PreprocessPolicy, prepare
from mpft.errors import ConfigError
from mpft.pipeline import Preprocessor, Scorer, view_pixels
from mpft.views import ViewConfig, combine_logits, make_views, parse_views, view_boxes


@pytest.mark.parametrize(
    ("spec", "grid", "whole", "rule"),
    [("center", 1, False, "mean"), ("grid:3", 3, False, "mean"), ("whole", 0, True, "mean"),
     ("grid:2+whole@max", 2, True, "max"), ("GRID:2 + whole", 2, True, "mean")],
)
def test_parse_views_round_trips(spec, grid, whole, rule):
    cfg = parse_views(spec)
    assert (cfg.grid, cfg.whole, cfg.combine) == (grid, whole, rule)
    assert parse_views(cfg.spec) == cfg
    assert ViewConfig.from_dict(cfg.to_dict()) == cfg


@pytest.mark.parametrize("spec", ["", "grid", "grid:x", "tiles:2", "center@median", "grid:99", "@max"])
def test_bad_view_specs_name_the_accepted_forms(spec):
    with pytest.raises(ConfigError, match="views"):
        parse_views(spec)


@pytest.mark.parametrize(("w", "h", "grid"), [(512, 512, 3), (4032, 3024, 4), (300, 1000, 2), (224, 224, 3)])
def test_grid_views_cover_the_whole_image_when_the_grid_is_dense_enough(w, h, grid):
    size = 224
    boxes = view_boxes(w, h, size, grid)
    covered = np.zeros((h, w), bool)
    for left, top, right, bottom in boxes:
        assert left >= 0 and right <= w and top >= 0 and bottom <= h
        assert (right - left, bottom - top) == (size, size)
        covered[top:bottom, left:right] = True
    if grid * size >= max(w, h):
        assert covered.all()
    assert len(set(boxes)) == len(boxes)  # duplicates removed (a 224 image has one crop)
    assert len(boxes) <= grid * grid


def test_grid_of_one_is_exactly_the_old_centre_crop():
    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 256, (300, 451, 3), dtype=np.uint8))
    policy = PreprocessPolicy(size=64)
    old = prepare(img, policy, train=False)
    new = view_pixels(img, policy, ViewConfig())
    assert new.shape == (1, 3, 64, 64)
    assert np.array_equal(new[0].permute(1, 2, 0).numpy(), old)
    # and for a resizing policy too
    rp = PreprocessPolicy(size=64, resize=True)
    assert np.array_equal(view_pixels(img, rp, ViewConfig())[0].permute(1, 2, 0).numpy(), prepare(img, rp, train=False))


def test_make_views_cuts_the_pixels_of_each_box_and_the_whole_view_last():
    rng = np.random.default_rng(1)
    arr = rng.integers(0, 256, (100, 150, 3), dtype=np.uint8)
    views = make_views(Image.fromarray(arr), 32, ViewConfig(grid=2, whole=True))
    boxes = view_boxes(150, 100, 32, 2)
    assert views.shape == (len(boxes) + 1, 32, 32, 3)
    for v, (left, top, right, bottom) in zip(views, boxes, strict=False):
        assert np.array_equal(v, arr[top:bottom, left:right])
    assert not any(np.array_equal(views[-1], v) for v in views[:-1])  # the whole view is a downscale


def test_small_images_are_upscaled_once_then_cut():
    img = Image.new("RGB", (20, 30), (10, 20, 30))
    # 32x48 after upscaling: one column (the width is the crop size), three distinct rows
    assert make_views(img, 32, ViewConfig(grid=3)).shape == (3, 32, 32, 3)


def test_combine_rules():
    logits = torch.tensor([0.0, 2.0, -1.0, 5.0, 1.0, 3.0])
    assert combine_logits(logits, [2, 1, 3], "mean").tolist() == pytest.approx([1.0, -1.0, 3.0])
    assert combine_logits(logits, [2, 1, 3], "max").tolist() == pytest.approx([2.0, -1.0, 5.0])
    with pytest.raises(ConfigError):
        combine_logits(logits, [2, 2], "mean")
    with pytest.raises(ConfigError):
        combine_logits(logits, [6], "median")


class _MeanModel(torch.nn.Module):
    """logit = mean pixel value - 0.5: lets a test know every view's logit."""

    def __init__(self):
        super().__init__()
        self.p = torch.nn.Parameter(torch.zeros(1))

    def forward(self, pixels, keep=None):
        x = pixels.float() / 255 if pixels.dtype == torch.uint8 else pixels
        return x.mean(dim=(1, 2, 3)) - 0.5 + self.p


def test_scorer_combines_each_images_views_and_batch_size_does_not_change_scores():
    rng = np.random.default_rng(2)
    stacks = [torch.from_numpy(rng.integers(0, 256, (v, 3, 8, 8), dtype=np.uint8)) for v in (1, 4, 2, 5)]
    expect_mean = [float((s.float() / 255).mean(dim=(1, 2, 3)).sub(0.5).mean()) for s in stacks]
    expect_max = [float((s.float() / 255).mean(dim=(1, 2, 3)).sub(0.5).max()) for s in stacks]
    model = _MeanModel()
    for bs in (1, 3, 64):
        mean = Scorer(model, batch_size=bs, combine="mean").combined_logits(stacks)
        mx = Scorer(model, batch_size=bs, combine="max").combined_logits(stacks)
        assert mean.tolist() == pytest.approx(expect_mean, abs=1e-6)
        assert mx.tolist() == pytest.approx(expect_max, abs=1e-6)


def test_preprocessor_gives_views_and_errors(tmp_path):
    from mpft.errors import ImageDecodeError

    p = tmp_path / "a.png"
    Image.new("RGB", (200, 100), (1, 2, 3)).save(p)
    pre = Preprocessor(PreprocessPolicy(size=64), parse_views("grid:2+whole"))
    out = pre(p)
    assert out.pixels.shape == (5, 3, 64, 64) and out.pixels.dtype == torch.uint8
    (tmp_path / "bad.png").write_bytes(b"not an image")
    with pytest.raises(ImageDecodeError):
        pre(tmp_path / "bad.png")


def test_detector_views_option_and_checkpoint_setting(tiny_ckpt, tmp_path):
    """predict with views scores every view; the checkpoint's setting is the default; --views overrides it."""
    import json

    from mpft.detector import Detector

    img = tmp_path / "big.png"
    Image.fromarray(np.random.default_rng(3).integers(0, 256, (90, 130, 3), dtype=np.uint8)).save(img)
    det1 = Detector.load(tiny_ckpt)
    assert det1.views == ViewConfig()
    det4 = Detector.load(tiny_ckpt, views="grid:2@max")
    _, views = det4.prepare(img)
    assert views.shape[0] == 4
    with torch.inference_mode():
        per_view = torch.sigmoid(det4.model(views).float())
    assert det4.predict(img)[0].probability == pytest.approx(float(per_view.max()), abs=1e-6)
    # recorded in the checkpoint: a copy whose config asks for grid:2@max scores the same without the option
    ck = tmp_path / "ck"
    import shutil

    shutil.copytree(tiny_ckpt, ck)
    cfg = json.loads((ck / "config.json").read_text())
    cfg["views"] = parse_views("grid:2@max").to_dict()
    (ck / "config.json").write_text(json.dumps(cfg))
    det = Detector.load(ck)
    assert det.views.spec == "grid:2@max"
    assert det.predict(img)[0].probability == pytest.approx(det4.predict(img)[0].probability, abs=1e-7)
    assert det.info()["views"] == "grid:2@max"


def test_explain_reports_the_view_that_drove_the_score(tiny_ckpt, tmp_path):
    from mpft.detector import Detector
    from mpft.explain import explain_image

    img = tmp_path / "big.png"
    Image.fromarray(np.random.default_rng(4).integers(0, 256, (70, 110, 3), dtype=np.uint8)).save(img)
    det = Detector.load(tiny_ckpt, views="grid:2+whole")
    ex = explain_image(det, img)
    assert len(ex.view_logits) == 5
    assert ex.view_index == int(np.argmax(ex.view_logits))
    assert ex.probability == pytest.approx(det.predict(img)[0].probability, abs=1e-6)
    _, views = det.prepare(img)
    assert np.array_equal(ex.image, views[ex.view_index].permute(1, 2, 0).numpy())
    assert ex.to_dict()["views"] == "grid:2+whole"
