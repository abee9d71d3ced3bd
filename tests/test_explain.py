"""mpft explain: occlusion evidence, TAM texture map, rendering and the CLI (random:tiny detector)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mpft.backbones import load_backbone
from mpft.cli import main
from mpft.detector import Detector
from mpft.errors import ConfigError
from mpft.explain import (
    FIGSIZE,
    default_group,
    explain_image,
    group_index,
    occlusion_evidence,
    render,
)
from mpft.model import TuneConfig, create_model
from tests.kit import noise_array, require

GRID = 4  # random:tiny: 32x32 input, 8 px patches


@pytest.fixture(scope="module")
def det(tiny_ckpt) -> Detector:
    """The session's tiny LoRA detector (head std 1: token removals move the logit)."""
    return Detector.load(tiny_ckpt, device="cpu")


def _pixels(seed: int = 0) -> torch.Tensor:
    return torch.from_numpy(noise_array(32, 32, seed).transpose(2, 0, 1).copy()).unsqueeze(0)


def _png(path: Path, arr: np.ndarray) -> Path:
    Image.fromarray(arr).save(path, format="PNG")
    return path


# ---- pure functions -------------------------------------------------------------------------------
def test_default_group_matches_grids():
    assert default_group(14) == 2  # B/16: 49 groups
    assert default_group(4) == 1  # tiny: every patch its own group
    assert default_group(16) == 2


def test_group_index_blocks_and_ragged_edges():
    gi = group_index(4, 2)
    assert gi.tolist() == [[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 3, 3], [2, 2, 3, 3]]
    gi3 = group_index(4, 3)  # ragged: 2x2 groups of sizes 9, 3, 3, 1
    assert np.bincount(gi3.reshape(-1)).tolist() == [9, 3, 3, 1]
    with pytest.raises(ConfigError, match="--group"):
        group_index(4, 5)


def test_evidence_shape_and_not_trivial(det):
    ev = occlusion_evidence(det.model, _pixels(), GRID, 1)
    assert ev.shape == (GRID, GRID)
    assert np.isfinite(ev).all()
    assert np.abs(ev).max() > 1e-4  # removals do move the logit
    assert len(np.unique(np.round(ev, 8))) == GRID * GRID  # one value per patch at g=1


@pytest.mark.parametrize("group,row,col", [(1, 2, 1), (2, 3, 0)])
def test_evidence_equals_hand_computed_drop(det, group, row, col):
    pixels = _pixels(1)
    ev = occlusion_evidence(det.model, pixels, GRID, group)
    gi = group_index(GRID, group).reshape(-1)
    k = gi[row * GRID + col]
    keep = torch.tensor([i for i in range(GRID * GRID) if gi[i] != k]).unsqueeze(0)
    with torch.inference_mode():
        full = float(det.model(pixels)[0])
        without = float(det.model(pixels, keep=keep)[0])
    # every patch of the group carries the group's drop
    members = np.argwhere(group_index(GRID, group) == k)
    for r, c in members:
        assert ev[r, c] == pytest.approx(full - without, abs=1e-5)


@pytest.mark.parametrize("group", [1, 3])
def test_batched_equals_unbatched(det, group):
    pixels = _pixels(2)
    one = occlusion_evidence(det.model, pixels, GRID, group, chunk=1)
    many = occlusion_evidence(det.model, pixels, GRID, group, chunk=16)
    np.testing.assert_allclose(many, one, atol=1e-5)


def test_whole_grid_group_is_rejected(det):
    with pytest.raises(ConfigError, match="whole"):
        occlusion_evidence(det.model, _pixels(), GRID, GRID)


# ---- explain_image ------------------------------------------------------------------------------
def test_texture_max_on_textured_patch(det):
    arr = np.full((32, 32, 3), 128, dtype=np.uint8)
    r, c = 2, 1
    arr[r * 8 : (r + 1) * 8, c * 8 : (c + 1) * 8] = noise_array(8, 8, 3)
    expl = explain_image(det, Image.fromarray(arr))
    assert expl.texture.shape == (GRID, GRID)
    assert np.unravel_index(np.argmax(expl.texture), expl.texture.shape) == (r, c)
    assert expl.tam_masked[r, c]
    assert int(expl.tam_masked.sum()) == round(expl.mask_ratio * 16)  # the checkpoint ratio of 16 patches
    np.testing.assert_array_equal(expl.image, arr)  # 32 px input: preprocessing is the identity


def test_explanation_consistent_with_predict(det, tmp_path):
    path = _png(tmp_path / "a.png", noise_array(32, 32, 4))
    expl = explain_image(det, path)
    pred = det.predict(path)[0]
    assert expl.probability == pytest.approx(pred.probability, abs=1e-6)
    assert expl.verdict == pred.verdict
    assert expl.group == 1 and expl.evidence.shape == (GRID, GRID)
    np.testing.assert_allclose(expl.evidence, occlusion_evidence(det.model, _pixels(4), GRID, 1), atol=1e-6)
    d = json.loads(json.dumps(expl.to_dict()))
    assert d["grid"] == GRID and len(d["masked_indices"]) == round(d["mask_ratio"] * GRID * GRID) > 0


def test_render_to_bytesio_is_png_of_expected_size(det):
    expl = explain_image(det, Image.fromarray(noise_array(32, 32, 5)), group=2)
    buf = io.BytesIO()
    render(expl, buf, dpi=40)
    buf.seek(0)
    with Image.open(buf) as im:
        assert im.format == "PNG"
        assert im.size == (round(FIGSIZE[0] * 40), round(FIGSIZE[1] * 40))


# ---- CLI ----------------------------------------------------------------------------------------
def test_cli_writes_png_and_json(tiny_ckpt, tmp_path, capsys):
    img = _png(tmp_path / "in.png", noise_array(32, 32, 6))
    out = tmp_path / "sub" / "explained.png"
    rc = main(
        [
            "explain",
            str(img),
            "--model",
            str(tiny_ckpt),
            "--out",
            str(out),
            "--dpi",
            "50",
            "--json",
            "--device",
            "cpu",
        ]
    )
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert out.stat().st_size > 1000
    with Image.open(out) as im:
        assert im.size == (round(FIGSIZE[0] * 50), round(FIGSIZE[1] * 50))
    d = json.loads(captured.out)
    assert set(d) >= {"probability", "grid", "texture", "evidence", "masked_indices", "verdict", "threshold"}
    assert 0.0 <= d["probability"] <= 1.0
    assert np.asarray(d["evidence"]).shape == (GRID, GRID)
    assert np.asarray(d["texture"]).shape == (GRID, GRID)


def test_cli_non_image_is_data_error(tiny_ckpt, tmp_path, capsys):
    bad = tmp_path / "notes.png"
    bad.write_text("this is not an image\n")
    rc = main(["explain", str(bad), "--model", str(tiny_ckpt), "--out", str(tmp_path / "x.png")])
    err = capsys.readouterr().err
    assert rc == 3
    assert "notes.png" in err
    assert not (tmp_path / "x.png").exists()


def test_cli_missing_model_is_checkpoint_error(tmp_path, capsys):
    img = _png(tmp_path / "in.png", noise_array(32, 32, 7))
    rc = main(["explain", str(img), "--model", str(tmp_path / "nope"), "--out", str(tmp_path / "x.png")])
    assert rc == 5
    assert "nope" in capsys.readouterr().err


def test_cli_bad_method_and_nothing_to_do(tiny_ckpt, tmp_path, capsys):
    img = _png(tmp_path / "in.png", noise_array(32, 32, 8))
    assert main(["explain", str(img), "--model", str(tiny_ckpt), "--method", "gradcam", "--json"]) == 2
    assert main(["explain", str(img), "--model", str(tiny_ckpt)]) == 2
    assert "--out" in capsys.readouterr().err


@pytest.mark.slow
def test_b16_grid_and_default_groups():
    """Real CLIP ViT-B/16: 14x14 grid, default g=2; g=7 (4 groups, cheap) gives 4 constant blocks."""
    from mpft.errors import BackboneNotAvailableError

    try:
        enc = load_backbone("clip-vit-b16")
    except BackboneNotAvailableError as exc:
        require(False, "the CLIP ViT-B/16 weights", f"run `mpft backbone fetch clip-vit-b16` ({exc})")
    model = create_model(enc, TuneConfig("linear")).eval()
    assert enc.grid == 14 and default_group(enc.grid) == 2
    rng = np.random.default_rng(9)
    pixels = torch.from_numpy(rng.integers(0, 256, (1, 3, 224, 224), dtype=np.uint8))
    ev = occlusion_evidence(model, pixels, enc.grid, 7)
    assert ev.shape == (14, 14)
    blocks = ev.reshape(2, 7, 2, 7).transpose(0, 2, 1, 3).reshape(4, -1)
    assert np.all(blocks == blocks[:, :1])  # each 7x7 group carries one value
    assert len(np.unique(blocks[:, 0])) == 4
