"""mpft's plain-torch CLIP tower (offline ``clip-vit-b16`` / ``openai:``) computes what transformers'
CLIP tower computes, under the same adapter, and a cold ``mpft predict`` never imports transformers."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from mpft.backbones.clip_vit import ClipVisionTower, ClipVitConfig, build_clip_vit
from mpft.backbones.encoder import CLIP_MEAN, CLIP_STD, ClipEncoder, build_model
from mpft.backbones.presets import RANDOM_PRESETS
from mpft.errors import BackboneError


def _pair(with_projection: bool = True, act: str = "quick_gelu") -> tuple[ClipEncoder, ClipEncoder]:
    cfg = ClipVitConfig.from_dict({**RANDOM_PRESETS["tiny"], "hidden_act": act})
    torch.manual_seed(3)
    ref = build_model(cfg, with_projection=with_projection)
    with torch.no_grad():  # transformers initialises LayerNorms to 1/0 and biases to 0: perturb them all
        for p in ref.parameters():
            p.add_(0.05 * torch.randn_like(p))
    state = {k: v.clone() for k, v in ref.state_dict().items()}
    lean = build_clip_vit(cfg, state, spec="test")
    kw = dict(spec="test", mean=CLIP_MEAN, std=CLIP_STD)
    return ClipEncoder(ref, **kw), ClipEncoder(lean, **kw)


@pytest.mark.parametrize("with_projection", [True, False])
@pytest.mark.parametrize("act", ["quick_gelu", "gelu"])
def test_same_tokens_embedding_and_masked_forward_as_transformers(with_projection, act):
    ref, lean = _pair(with_projection, act)
    assert isinstance(lean.model, ClipVisionTower) and not isinstance(ref.model, ClipVisionTower)
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    keep = torch.tensor([[0, 3, 5, 9], [1, 2, 14, 15], [4, 6, 7, 8]])
    with torch.no_grad():
        for k in (None, keep):
            a, b = ref(x, k, return_tokens=True), lean(x, k, return_tokens=True)
            torch.testing.assert_close(b.embedding, a.embedding, atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(b.tokens, a.tokens, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(lean.block_tokens(x, (1, 3)), ref.block_tokens(x, (1, 3)), atol=1e-5, rtol=1e-5)
    assert lean.embed_dim == ref.embed_dim and lean.num_layers == ref.num_layers and lean.width == ref.width
    if with_projection:  # same names, same tensors: the same identity
        assert lean.weights_sha256 == ref.weights_sha256
    assert lean.info()["attn_implementation"] == "sdpa"


def test_parameter_groups_and_lora_targets_match():
    ref, lean = _pair()
    for enc in (ref, lean):
        names = {n for n, _ in enc.blocks[0].named_modules()}
        assert all(t in {n.rsplit(".", 1)[-1] for n in names} for t in enc.lora_target_modules())
    assert [p.shape for p in lean.head_side_parameters()] == [p.shape for p in ref.head_side_parameters()]
    assert [p.shape for p in lean.block_parameters(-1)] == [p.shape for p in ref.block_parameters(-1)]


def test_gradients_flow_through_the_lean_tower():
    _, lean = _pair()
    x = torch.randn(2, 3, 32, 32)
    lean(x).embedding.sum().backward()
    assert lean.blocks[0].self_attn.q_proj.weight.grad is not None


def test_weights_that_do_not_fit_are_refused_with_the_names():
    cfg = ClipVitConfig.from_dict(RANDOM_PRESETS["tiny"])
    ref = build_model(cfg)
    state = dict(ref.state_dict())
    state.pop("vision_model.post_layernorm.weight")
    with pytest.raises(BackboneError, match="missing .*post_layernorm"):
        build_clip_vit(cfg, state, spec="x")
    state = dict(ref.state_dict())
    state["vision_model.extra"] = torch.zeros(1)
    with pytest.raises(BackboneError, match="unexpected .*extra"):
        build_clip_vit(cfg, state, spec="x")
    state = dict(ref.state_dict())
    state["visual_projection.weight"] = torch.zeros(7, 32)
    with pytest.raises(BackboneError, match="wrong shape .*visual_projection"):
        build_clip_vit(cfg, state, spec="x")
    with pytest.raises(BackboneError, match="activation"):
        ClipVitConfig.from_dict({**RANDOM_PRESETS["tiny"], "hidden_act": "swish"})


def test_half_precision_weights_become_float32():
    cfg = ClipVitConfig.from_dict(RANDOM_PRESETS["tiny"])
    state = {k: v.half() for k, v in build_model(cfg).state_dict().items()}
    model = build_clip_vit(cfg, state, spec="x")
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    assert not any(p.is_meta for p in model.parameters())


def test_importing_the_predict_path_does_not_import_transformers():
    # what a cold `mpft predict` with the default detector imports before its first image
    code = ("import sys; import mpft.cli.predict, mpft.detector, mpft.backbones.registry; "
            "print(any(m == 'transformers' or m.startswith('transformers.') for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
