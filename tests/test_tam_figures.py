"""benchmarks/tam_figures.py: renders its three figures and sane statistics on tiny images."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from tests.kit import load_script


@pytest.fixture(scope="module")
def tam_figures():
    return load_script("tam_figures")


def half_textured(seed: int, size: int = 48) -> Image.Image:
    """Left half noise, right half flat grey: TAM at rho=0.5 must hide exactly the left half."""
    rng = np.random.default_rng(seed)
    arr = np.full((size, size, 3), 128, np.uint8)
    arr[:, : size // 2] = rng.integers(0, 256, (size, size // 2, 3), dtype=np.uint8)
    return Image.fromarray(arr)


def test_main_writes_figures_and_stats(tam_figures, tmp_path, capsys):
    real, gen, out = tmp_path / "real", tmp_path / "gen", tmp_path / "out"
    real.mkdir()
    gen.mkdir()
    half_textured(0).save(real / "photo.jpg", quality=95)
    half_textured(1).save(gen / "fake.webp", quality=90)

    summary = tam_figures.main(
        ["--real", str(real), "--gen", str(gen), "--out", str(out), "--size", "64", "--patch", "16", "--dpi", "40"]
    )

    for name in ("tam_masks.png", "tam_measures.png", "tam_strategies.png"):
        path = out / name
        assert path.is_file(), name
        with Image.open(path) as im:
            assert im.format == "PNG" and min(im.size) > 50
        assert summary["figures"][name] == path.stat().st_size < tam_figures.MAX_PNG_BYTES
    assert summary["example"] == "photo.jpg"  # the default example is absent: falls back to a real image

    stats = summary["stats"]
    assert (stats["n_real"], stats["n_generated"], stats["num_patches"], stats["masked_per_image"]) == (1, 1, 16, 8)
    for block in stats["policies"].values():
        for side in ("real", "generated"):
            agr = block["agreement"][side]
            for a in agr:
                assert agr[a][a] == pytest.approx(1.0)
                for b in agr:
                    assert 0.0 <= agr[a][b] <= 1.0 and agr[a][b] == pytest.approx(agr[b][a])
            # every measure hides the noisy half, so they all agree exactly
            assert min(min(row.values()) for row in agr.values()) == pytest.approx(1.0)
            assert block["scores"][side]["variance"]["mean"] > 0
    # the printed JSON line is the returned summary
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert json.loads(last)["stats"]["n_real"] == 1


def test_tam_mask_hides_the_textured_half(tam_figures):
    pix = torch.from_numpy(np.array(half_textured(2, 64))).permute(2, 0, 1)[None].float() / 255
    mask = tam_figures.tam_mask(pix, 16, "gradient", 0.5).view(4, 4)
    assert mask[:, :2].all() and not mask[:, 2:].any()


def test_random_jaccard_exact(tam_figures):
    # N=4, M=2: overlap 0 (p=1/6), 1 (p=4/6, J=1/3), 2 (p=1/6, J=1)
    assert tam_figures.random_jaccard(4, 0.5) == pytest.approx(4 / 6 / 3 + 1 / 6)
    assert tam_figures.random_jaccard(196, 0.5) == pytest.approx(1 / 3, abs=0.01)
    assert math.isclose(tam_figures.random_jaccard(10, 0.0), 1.0)
