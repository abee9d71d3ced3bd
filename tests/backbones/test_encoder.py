import pytest
import torch

from mpft.backbones import gather_tokens, load_backbone
from mpft.errors import ConfigError


@pytest.fixture(scope="module")
def tiny():
    return load_backbone("random:tiny")


def _pixels(b=2, s=32, seed=0):
    return torch.randn(b, 3, s, s, generator=torch.Generator().manual_seed(seed))


def test_plain_forward_equals_transformers(tiny):
    x = _pixels()
    with torch.no_grad():
        ours = tiny(x, return_tokens=True)
        ref = tiny.model(pixel_values=x)
    torch.testing.assert_close(ours.embedding, ref.image_embeds, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ours.tokens, ref.last_hidden_state, atol=1e-5, rtol=1e-5)


def test_keep_all_tokens_equals_plain_forward(tiny):
    x = _pixels()
    keep = torch.arange(tiny.num_patches).expand(2, -1)
    with torch.no_grad():
        a = tiny(x, return_tokens=True)
        b = tiny(x, keep, return_tokens=True)
    torch.testing.assert_close(a.embedding, b.embedding)
    torch.testing.assert_close(a.tokens, b.tokens)


def test_keep_subset_equals_encoder_on_gathered_embeddings(tiny):
    x = _pixels()
    keep = torch.tensor([[0, 3, 5, 9, 15], [1, 2, 4, 8, 12]])
    vm = tiny.model.vision_model
    with torch.no_grad():
        ours = tiny(x, keep, return_tokens=True)
        emb = vm.embeddings(x)  # positions already added
        gathered = torch.cat([emb[:, :1], torch.stack([emb[i, 1:][keep[i]] for i in range(2)])], dim=1)
        hidden = vm.encoder(inputs_embeds=vm.pre_layrnorm(gathered)).last_hidden_state
        ref = tiny.model.visual_projection(vm.post_layernorm(hidden[:, 0]))
    assert ours.tokens.shape == (2, 6, tiny.width)
    torch.testing.assert_close(ours.tokens, hidden, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ours.embedding, ref, atol=1e-5, rtol=1e-5)
    # dropping tokens really changes the result (so the test above is not vacuous)
    with torch.no_grad():
        full = tiny(x).embedding
    assert not torch.allclose(full, ours.embedding, atol=1e-4)


def test_gather_tokens_shape_and_cls():
    emb = torch.arange(2 * 5 * 3, dtype=torch.float32).view(2, 5, 3)
    out = gather_tokens(emb, torch.tensor([[3, 0], [1, 2]]))
    assert out.shape == (2, 3, 3)
    torch.testing.assert_close(out[:, 0], emb[:, 0])
    torch.testing.assert_close(out[0, 1], emb[0, 4])
    torch.testing.assert_close(out[1, 2], emb[1, 3])
    with pytest.raises(ConfigError):
        gather_tokens(emb, torch.tensor([1, 2]))


def test_wrong_input_size_is_a_clear_error(tiny):
    with pytest.raises(ConfigError, match="expects pixels of shape"):
        tiny(torch.zeros(1, 3, 48, 48))


def test_sdpa_attention_is_used(tiny):
    assert tiny.config._attn_implementation == "sdpa"


def test_random_presets_are_reproducible_and_seedable():
    a, b = load_backbone("random:tiny"), load_backbone("random:tiny")
    c = load_backbone("random:tiny@1")
    assert a.weights_sha256 == b.weights_sha256 != c.weights_sha256


def test_geometry(tiny):
    assert (tiny.image_size, tiny.patch_size, tiny.grid, tiny.num_patches, tiny.num_layers) == (
        32,
        8,
        4,
        16,
        4,
    )
    assert tiny.embed_dim == 16
    # the input contract the preprocessing, TAM's grid and normalisation read
    from mpft.backbones import CLIP_MEAN, CLIP_STD, InputContract

    assert tiny.input_contract == InputContract(32, 8, CLIP_MEAN, CLIP_STD)


@pytest.mark.slow
def test_b16_preset_geometry():
    enc = load_backbone("random:b16")
    assert (enc.grid, enc.num_layers, enc.embed_dim, enc.width) == (14, 12, 512, 768)
    l14 = load_backbone("random:l14")
    assert (l14.grid, l14.num_layers, l14.embed_dim, l14.width) == (16, 24, 768, 1024)
