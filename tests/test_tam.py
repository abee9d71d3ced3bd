import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mpft import tam
from mpft.errors import ConfigError

MEAN = (0.48145466, 0.4578275, 0.40821073)
STD = (0.26862954, 0.26130258, 0.27577711)


def textured_image(grid=4, patch=8, textured=(1, 6, 11), seed=0) -> torch.Tensor:
    """(1, 3, S, S) flat grey image whose listed patches hold noise."""
    g = torch.Generator().manual_seed(seed)
    x = torch.full((1, 3, grid * patch, grid * patch), 0.5)
    for k in textured:
        r, c = divmod(k, grid)
        x[:, :, r * patch : (r + 1) * patch, c * patch : (c + 1) * patch] = torch.rand(
            3, patch, patch, generator=g
        )
    return x


@pytest.mark.parametrize("method", tam.TEXTURE_METHODS)
def test_tam_picks_exactly_the_textured_patches(method):
    x = textured_image()
    scores = tam.texture_scores(x, 8, method)
    assert scores.shape == (1, 16)
    masked, keep = tam.select_masked(scores, 3 / 16, "tam")
    assert masked.tolist() == [[1, 6, 11]]
    assert keep.shape == (1, 13) and not set(keep[0].tolist()) & {1, 6, 11}


@pytest.mark.parametrize("method", tam.TEXTURE_METHODS)
def test_inverse_is_the_complement_of_tam(method):
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    scores = tam.texture_scores(x, 8, method)
    m_tam, _ = tam.select_masked(scores, 0.5, "tam")
    m_inv, _ = tam.select_masked(scores, 0.5, "inverse")
    for a, b in zip(m_tam.tolist(), m_inv.tolist(), strict=True):
        assert sorted(a + b) == list(range(16))


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(2, 400), ratio=st.floats(0, 0.99), strategy=st.sampled_from(["tam", "random", "inverse"])
)
def test_masked_count_is_round_rho_n(n, ratio, strategy):
    scores = torch.rand(3, n, generator=torch.Generator().manual_seed(n))
    masked, keep = tam.select_masked(scores, ratio, strategy, generator=torch.Generator().manual_seed(0))
    expected = min(round(ratio * n), n - 1)
    assert masked.shape == (3, expected) and keep.shape == (3, n - expected)
    for m, k in zip(masked.tolist(), keep.tolist(), strict=True):
        assert sorted(m + k) == list(range(n))


def test_none_masks_nothing():
    masked, keep = tam.select_masked(torch.rand(2, 16), 0.5, "none")
    assert masked.shape == (2, 0) and keep.shape == (2, 16)


@pytest.mark.parametrize("method", tam.TEXTURE_METHODS)
def test_scores_are_invariant_to_normalisation_constants(method):
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    raw = tam.texture_scores(x, 8, method)
    for mean, std in [(MEAN, STD), ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))]:
        m = torch.tensor(mean).view(1, 3, 1, 1)
        s = torch.tensor(std).view(1, 3, 1, 1)
        normed = tam.texture_scores((x - m) / s, 8, method, mean=mean, std=std)
        torch.testing.assert_close(normed, raw, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("method", tam.TEXTURE_METHODS)
def test_batch_equals_per_image(method):
    x = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    batched = tam.texture_scores(x, 8, method)
    single = torch.cat([tam.texture_scores(x[i : i + 1], 8, method) for i in range(4)])
    torch.testing.assert_close(batched, single)
    mb, _ = tam.select_masked(batched, 0.25, "tam")
    ms = torch.cat([tam.select_masked(single[i : i + 1], 0.25, "tam")[0] for i in range(4)])
    assert torch.equal(mb, ms)


def test_temperature_varies_masks_but_prefers_texture():
    x = textured_image(textured=(0, 5, 10, 15))
    scores = tam.texture_scores(x, 8, "gradient").expand(200, -1)
    g = torch.Generator().manual_seed(0)
    masked, _ = tam.select_masked(scores, 4 / 16, "tam", temperature=1.0, generator=g)
    distinct = {tuple(m) for m in masked.tolist()}
    assert len(distinct) > 1  # masks vary between draws
    hits = torch.isin(masked, torch.tensor([0, 5, 10, 15])).float().mean().item()
    assert hits > 0.5  # textured patches are still favoured (uniform would give 0.25)
    # deterministic given the generator
    again, _ = tam.select_masked(
        scores, 4 / 16, "tam", temperature=1.0, generator=torch.Generator().manual_seed(0)
    )
    assert torch.equal(masked, again)


def test_random_is_seeded_and_uniformish():
    s = torch.zeros(500, 16)
    a, _ = tam.select_masked(s, 0.5, "random", generator=torch.Generator().manual_seed(1))
    b, _ = tam.select_masked(s, 0.5, "random", generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b)
    freq = torch.bincount(a.flatten(), minlength=16).float() / 500
    assert freq.min() > 0.35 and freq.max() < 0.65


def test_fill_patches_zeroes_exactly_the_masked_patches():
    x = torch.ones(1, 3, 32, 32)
    out = tam.fill_patches(x, torch.tensor([[0, 5]]), 8)
    assert out[0, :, :8, :8].abs().sum() == 0 and out[0, :, 8:16, 8:16].abs().sum() == 0
    assert out.sum() == 3 * (32 * 32 - 2 * 64)


def test_apply_mask_drop_keeps_the_smooth_patches_and_fill_paints_the_mean():
    x = textured_image()  # 4x4 grid of 8 px patches; patches 1, 6, 11 textured
    cfg = tam.MaskConfig("tam", ratio=3 / 16)
    pixels, keep = tam.apply_mask(x, cfg, 8, fill=MEAN)
    assert torch.equal(pixels, x)
    assert keep.tolist() == [[k for k in range(16) if k not in (1, 6, 11)]]

    filled, keep = tam.apply_mask(x, tam.MaskConfig("tam", ratio=3 / 16, apply="fill"), 8, fill=MEAN)
    assert keep is None
    normalised = (filled - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
    grid = tam.mask_to_grid(torch.tensor([[1, 6, 11]]), 16).view(4, 4)
    for k in range(16):
        r, c = divmod(k, 4)
        patch = normalised[0, :, r * 8 : (r + 1) * 8, c * 8 : (c + 1) * 8]
        if grid[r, c]:
            assert patch.abs().max() == 0  # exactly the normalised mean: the token carries no content
        else:
            assert torch.equal(filled[0, :, r * 8 : (r + 1) * 8, c * 8 : (c + 1) * 8],
                               x[0, :, r * 8 : (r + 1) * 8, c * 8 : (c + 1) * 8])


def test_apply_mask_without_an_active_mask_only_converts_uint8():
    u8 = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    for cfg in (None, tam.MaskConfig("none"), tam.MaskConfig("tam", ratio=0.0)):
        pixels, keep = tam.apply_mask(u8, cfg, 8, fill=MEAN)
        assert keep is None and pixels.dtype == torch.float32
        assert torch.equal(pixels, u8.float() / 255)


def test_mask_grid_and_config_validation():
    grid = tam.mask_to_grid(torch.tensor([[1, 3]]), 4)
    assert grid.tolist() == [[False, True, False, True]]
    with pytest.raises(ConfigError):
        tam.MaskConfig(strategy="center")
    with pytest.raises(ConfigError):
        tam.MaskConfig(ratio=1.0)
    with pytest.raises(ConfigError):
        tam.MaskConfig(texture="fft")
    with pytest.raises(ConfigError):
        tam.texture_scores(torch.rand(1, 3, 30, 30), 8)
    assert tam.MaskConfig.from_dict(tam.MaskConfig(ratio=0.25).to_dict()).ratio == 0.25
