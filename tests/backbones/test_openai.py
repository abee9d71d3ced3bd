import pytest
import torch
from torch import nn

from mpft.backbones import load_backbone
from mpft.backbones.encoder import build_model
from mpft.backbones.openai import config_from_openai, hf_to_openai, openai_to_hf
from mpft.backbones.presets import preset_config
from mpft.errors import BackboneError


def _openai_state(width=64, layers=2, patch=8, grid=4, proj=16, seed=0) -> dict[str, torch.Tensor]:
    """A random state dict in OpenAI clip's layout (ViT visual tower + a few text-tower keys)."""
    g = torch.Generator().manual_seed(seed)

    def r(*shape):
        return torch.randn(*shape, generator=g)

    s = {
        "visual.class_embedding": r(width),
        "visual.positional_embedding": r(grid * grid + 1, width),
        "visual.proj": r(width, proj),
        "visual.conv1.weight": r(width, 3, patch, patch),
        "visual.ln_pre.weight": r(width),
        "visual.ln_pre.bias": r(width),
        "visual.ln_post.weight": r(width),
        "visual.ln_post.bias": r(width),
        "token_embedding.weight": r(10, width),
        "logit_scale": r(()),
    }
    for i in range(layers):
        p = f"visual.transformer.resblocks.{i}."
        s |= {
            p + "attn.in_proj_weight": r(3 * width, width),
            p + "attn.in_proj_bias": r(3 * width),
            p + "attn.out_proj.weight": r(width, width),
            p + "attn.out_proj.bias": r(width),
            p + "ln_1.weight": r(width),
            p + "ln_1.bias": r(width),
            p + "ln_2.weight": r(width),
            p + "ln_2.bias": r(width),
            p + "mlp.c_fc.weight": r(4 * width, width),
            p + "mlp.c_fc.bias": r(4 * width),
            p + "mlp.c_proj.weight": r(width, 4 * width),
            p + "mlp.c_proj.bias": r(width),
        }
    return s


def test_round_trip_is_exact():
    s = _openai_state()
    visual = {k: v for k, v in s.items() if k.startswith("visual.")}
    back = hf_to_openai(openai_to_hf(s))
    assert set(back) == set(visual)
    for k in visual:
        torch.testing.assert_close(back[k], visual[k], rtol=0, atol=0)


def test_mapping_fills_every_transformers_tensor():
    s = _openai_state()
    cfg = config_from_openai(s)
    assert (cfg.hidden_size, cfg.num_hidden_layers, cfg.patch_size, cfg.image_size, cfg.projection_dim) == (
        64,
        2,
        8,
        32,
        16,
    )
    model = build_model(cfg)
    hf = openai_to_hf(s)
    expected = {k for k in model.state_dict() if not k.endswith("position_ids")}
    assert set(hf) == expected
    for k, v in hf.items():
        assert tuple(v.shape) == tuple(model.state_dict()[k].shape), k


def test_qkv_split_matches_openai_attention():
    # OpenAI's packed in_proj computes [q;k;v] = W x; the split must put rows in that order
    s = _openai_state()
    hf = openai_to_hf(s)
    w = s["visual.transformer.resblocks.0.attn.in_proj_weight"]
    torch.testing.assert_close(hf["vision_model.encoder.layers.0.self_attn.k_proj.weight"], w[64:128])
    torch.testing.assert_close(hf["visual_projection.weight"], s["visual.proj"].t())


class _Node(nn.Module):
    pass


def _as_module(state: dict[str, torch.Tensor]) -> nn.Module:
    root = _Node()
    for key, value in state.items():
        *path, leaf = key.split(".")
        mod = root
        for part in path:
            if not hasattr(mod, part):
                mod.add_module(part, _Node())
            mod = getattr(mod, part)
        mod.register_buffer(leaf, value.clone())
    return root


@pytest.mark.parametrize("kind", ["state_dict", "torchscript", "ddp_prefixed"])
def test_openai_spec_loads_checkpoint_files(tmp_path, kind):
    s = _openai_state()
    path = tmp_path / "clip.pt"
    if kind == "state_dict":
        torch.save(s, path)
    elif kind == "ddp_prefixed":
        torch.save({"state_dict": {f"module.{k}": v for k, v in s.items()}}, path)
    else:
        torch.jit.save(torch.jit.script(_as_module(s)), str(path))
    enc = load_backbone(f"openai:{path}")
    # same weights through transformers' own loader path must give the same embedding
    ref = build_model(config_from_openai(s))
    ref.load_state_dict(openai_to_hf(s), strict=False)
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(enc(x).embedding, ref(pixel_values=x).image_embeds, atol=1e-5, rtol=1e-5)


def test_bad_openai_checkpoints(tmp_path):
    with pytest.raises(BackboneError, match="not found"):
        load_backbone(f"openai:{tmp_path / 'missing.pt'}")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(BackboneError, match="cannot read"):
        load_backbone(f"openai:{bad}")
    resnet = tmp_path / "rn50.pt"
    torch.save({"visual.layer1.0.conv1.weight": torch.zeros(1)}, resnet)
    with pytest.raises(BackboneError, match="not an OpenAI CLIP ViT"):
        load_backbone(f"openai:{resnet}")


def test_preset_config_roundtrips_through_openai_layout():
    model = build_model(preset_config("tiny"))
    sd = {k: v for k, v in model.state_dict().items() if not k.endswith("position_ids")}
    back = openai_to_hf(hf_to_openai(sd))
    assert set(back) == set(sd)
