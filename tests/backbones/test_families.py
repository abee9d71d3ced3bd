"""Every backbone family behind the one interface, on tiny random transformers instances (no download).

Each family's masked forward must equal the transformers model run on the kept tokens (prefix
tokens always kept), its pooled embedding must equal the model's own pooling, LoRA must land in
the blocks only, and ``hf:DIR`` must read the contract its image processor states.
"""

from __future__ import annotations

import json

import pytest
import torch

from mpft.backbones import FAMILIES, load_backbone
from mpft.backbones.hf import processor_contract
from mpft.errors import BackboneError
from mpft.model import create_model
from tests.kit import TINY_FAMILIES, tiny_family_dir

# kit family -> (adapter family, prefix tokens, embedding size)
EXPECTED = {
    "clip": ("clip", 1, 16),
    "metaclip2": ("metaclip2", 1, 16),
    "siglip": ("siglip", 0, 32),
    "siglip2": ("siglip2", 0, 32),
    "dinov2": ("dinov2", 1, 32),
    "dinov2-reg": ("dinov2", 3, 32),
    "dinov3": ("dinov3", 3, 32),
}
KEEP = torch.tensor([[0, 3, 5, 9, 15], [1, 2, 4, 8, 12]])


@pytest.fixture(scope="module", params=sorted(TINY_FAMILIES))
def tiny(request, tmp_path_factory):
    name = request.param
    return name, load_backbone(f"hf:{tiny_family_dir(tmp_path_factory.mktemp(name) / name, name)}")


def _pixels(b=2, seed=0):
    return torch.randn(b, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def _reference(enc, x, keep):
    """The transformers modules run by hand on the kept tokens: (last hidden states, pooled embedding)."""
    m, p, family = enc.model, enc.num_prefix_tokens, enc.family
    vm = getattr(m, "vision_model", m)  # CLIP towers with a projection nest the vision model
    if family == "siglip2":  # NaFlex: the processor's patch layout, (B, N, P*P*3) channels-last
        g = x.shape[-1] // 8
        patches = x.reshape(len(x), 3, g, 8, g, 8).permute(0, 2, 4, 3, 5, 1).reshape(len(x), g * g, -1)
        emb = m.embeddings(patches, torch.tensor([[g, g]] * len(x)))
    else:
        emb = vm.embeddings(x)
    if keep is not None:
        emb = torch.cat([emb[:, :p], torch.stack([emb[i, p:][keep[i]] for i in range(len(keep))])], dim=1)
    if family in ("clip", "metaclip2"):
        hidden = vm.encoder(inputs_embeds=vm.pre_layrnorm(emb)).last_hidden_state
        pooled = vm.post_layernorm(hidden[:, 0])
        return hidden, m.visual_projection(pooled)
    if family in ("siglip", "siglip2"):
        hidden = m.encoder(inputs_embeds=emb).last_hidden_state
        return hidden, m.head(m.post_layernorm(hidden))
    if family == "dinov2":
        hidden = m.encoder(emb).last_hidden_state
        return hidden, m.layernorm(hidden)[:, 0]
    assert family == "dinov3", f"no reference forward for family {family!r}: add one here"
    # the model's own rotary module, its angles gathered for the kept patches
    cos, sin = m.rope_embeddings(x)
    if keep is not None:
        cos, sin = cos[keep].unsqueeze(1), sin[keep].unsqueeze(1)
    hidden = m.model(emb, position_embeddings=(cos, sin)).last_hidden_state
    return hidden, m.norm(hidden)[:, 0]


def test_adapter_shape_and_prefix_tokens(tiny):
    name, enc = tiny
    family, prefix, embed_dim = EXPECTED[name]
    assert (enc.family, enc.num_prefix_tokens, enc.embed_dim) == (family, prefix, embed_dim)
    assert (enc.grid, enc.num_layers, enc.width) == (4, 4, 32)
    with torch.no_grad():
        out = enc(_pixels(), KEEP, return_tokens=True)
    assert out.tokens.shape == (2, prefix + KEEP.shape[1], 32)
    assert out.embedding.shape == (2, embed_dim)


def test_plain_forward_pools_as_the_model_does(tiny):
    _, enc = tiny
    x = _pixels()
    with torch.no_grad():
        ours = enc(x).embedding
        if enc.family == "siglip2":  # NaFlex towers take the processor's patches, mask and grid shapes
            g = x.shape[-1] // 8
            patches = x.reshape(2, 3, g, 8, g, 8).permute(0, 2, 4, 3, 5, 1).reshape(2, g * g, -1)
            ref = enc.model(pixel_values=patches, pixel_attention_mask=torch.ones(2, g * g, dtype=torch.long),
                            spatial_shapes=torch.tensor([[g, g]] * 2))
        else:
            ref = enc.model(pixel_values=x)
    pooled = ref.image_embeds if hasattr(ref, "image_embeds") else ref.pooler_output
    torch.testing.assert_close(ours, pooled, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("masked", [False, True])
def test_masked_forward_is_the_model_on_the_kept_tokens(tiny, masked):
    _, enc = tiny
    x, keep = _pixels(), (KEEP if masked else None)
    with torch.no_grad():
        ours = enc(x, keep, return_tokens=True)
        hidden, pooled = _reference(enc, x, keep)
        full = enc(x).embedding
    torch.testing.assert_close(ours.tokens, hidden, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ours.embedding, pooled, atol=1e-5, rtol=1e-5)
    if masked:  # dropping tokens really changes the result, so the agreement is not vacuous
        assert not torch.allclose(full, ours.embedding, atol=1e-4)


def test_prefix_tokens_are_never_dropped(tiny):
    _, enc = tiny
    p = enc.num_prefix_tokens
    with torch.no_grad():
        every = enc.embed(_pixels())
        kept = enc.embed(_pixels(), KEEP)
    torch.testing.assert_close(kept[:, :p], every[:, :p])
    torch.testing.assert_close(kept[0, p:], every[0, p + KEEP[0]])


def test_block_tokens_are_cls_or_mean_patch_token(tiny):
    _, enc = tiny
    x = _pixels()
    with torch.no_grad():
        got = enc.block_tokens(x, (2, 4), KEEP)
        hidden = enc.run_blocks(enc.pre_norm(enc.embed(x, KEEP)), 0, 2, KEEP)
    want = hidden[:, 0] if enc.num_prefix_tokens else hidden.mean(dim=1)
    torch.testing.assert_close(got[:, 0], want)
    assert got.shape == (2, 2, 32)


def test_lora_lands_in_every_block_and_nowhere_else(tiny):
    _, enc = tiny
    model = create_model(enc, {"strategy": "lora", "lora_rank": 2})
    wrapped = [n for n, m in model.encoder.model.named_modules() if hasattr(m, "lora_A")]
    block_names = {n for n, b in model.encoder.model.named_modules() if any(b is blk for blk in model.encoder.blocks)}
    assert wrapped and all(any(w.startswith(b + ".") for b in block_names) for w in wrapped)
    per_block = len(wrapped) // enc.num_layers
    assert per_block >= 4 and len(wrapped) == per_block * enc.num_layers  # attention and MLP of each block
    trainable = model.trainable_names()
    assert trainable and all("lora_" in n or n.startswith("head.") for n in trainable)


def test_last_k_trains_the_last_blocks_and_the_head_side(tiny):
    _, enc = tiny
    model = create_model(enc, {"strategy": "last-k", "layers": 2})
    trained = {id(p) for p in model.parameters() if p.requires_grad}
    last = [p for i in (2, 3) for p in model.encoder.block_parameters(i)]
    first = [p for i in (0, 1) for p in model.encoder.block_parameters(i)]
    assert all(id(p) in trained for p in last + model.encoder.head_side_parameters())
    assert not any(id(p) in trained for p in first)


def test_hf_reads_the_image_processor_contract(tmp_path):
    d = tiny_family_dir(tmp_path / "siglip", "siglip")
    enc = load_backbone(f"hf:{d}")
    c = enc.input_contract
    assert (c.image_size, c.patch_size, c.mean, c.interpolation) == (32, 8, (0.5, 0.5, 0.5), "bilinear")
    # the processor file decides: change it, and the contract follows
    pp = json.loads((d / "preprocessor_config.json").read_text())
    (d / "preprocessor_config.json").write_text(json.dumps({**pp, "image_mean": [0.4, 0.4, 0.4], "resample": 3}))
    c2 = load_backbone(f"hf:{d}").input_contract
    assert (c2.mean, c2.interpolation) == ((0.4, 0.4, 0.4), "bicubic")


def test_dinov2_interpolates_positions_to_its_crop(tmp_path):
    d = tiny_family_dir(tmp_path / "dino", "dinov2")
    enc = load_backbone(f"hf:{d}")
    assert enc.model.config.image_size == 48 and enc.image_size == 32  # the processor's crop


def test_full_model_checkpoint_dispatches_like_the_tower(tmp_path):
    """Users hold full SigLIP checkpoints (text + vision): hf: takes the vision tower out of them."""
    import transformers

    _, _, shape, processor = TINY_FAMILIES["siglip"]
    cfg = transformers.SiglipConfig(
        vision_config=shape,
        text_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
                     "vocab_size": 100},
    )
    torch.manual_seed(0)
    full = transformers.SiglipModel(cfg)
    full.save_pretrained(tmp_path / "full")
    (tmp_path / "full" / "preprocessor_config.json").write_text(json.dumps(processor))
    enc = load_backbone(f"hf:{tmp_path / 'full'}")
    assert enc.family == "siglip"
    x = _pixels()
    with torch.no_grad():
        torch.testing.assert_close(enc(x).embedding, full.vision_model(pixel_values=x).pooler_output)


def test_unknown_model_type_names_the_supported_ones(tmp_path):
    import transformers

    cfg = transformers.ViTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                                 image_size=32, patch_size=8)
    transformers.ViTModel(cfg).save_pretrained(tmp_path / "vit")
    with pytest.raises(BackboneError, match="'vit'.*supported model types.*siglip"):
        load_backbone(f"hf:{tmp_path / 'vit'}")


def test_processor_contract_rules():
    from mpft.backbones.siglip import SiglipEncoder

    crop = {"do_center_crop": True, "crop_size": {"height": 224, "width": 224}, "size": {"shortest_edge": 256}}
    assert processor_contract(crop, SiglipEncoder, "x", 16)["image_size"] == 224
    assert processor_contract({"size": {"height": 384, "width": 384}}, SiglipEncoder, "x", 16)["image_size"] == 384
    defaults = processor_contract({}, SiglipEncoder, "x", 16)
    assert defaults == {"mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5), "image_size": None,
                        "interpolation": "bicubic"}
    assert processor_contract({"max_num_patches": 256}, SiglipEncoder, "x", 16)["image_size"] == 256  # NaFlex
    with pytest.raises(BackboneError, match="not square"):
        processor_contract({"size": {"height": 224, "width": 256}}, SiglipEncoder, "x", 16)


def test_every_registered_family_has_a_tiny_instance_here():
    """A family added to FAMILIES without a tiny instance in the kit would go untested."""
    kit = {EXPECTED[name][0] for name in TINY_FAMILIES}
    assert {f.name for f in FAMILIES} == kit


def test_backbone_list_shows_every_family_preset_and_whether_it_is_cached(tmp_path, monkeypatch, capsys):
    """A preset counts as offline only when the HF cache holds its config and weights."""
    from huggingface_hub import constants

    from mpft.cli import main

    preset = FAMILIES[2].presets[0]
    snap = tmp_path / f"models--{preset.replace('/', '--')}" / "snapshots" / "abc"
    snap.mkdir(parents=True)
    (snap / "config.json").write_text("{}")
    (snap.parents[1] / "refs").mkdir()
    (snap.parents[1] / "refs" / "main").write_text("abc")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))

    def rows():
        capsys.readouterr()
        assert main(["backbone", "list", "--json"]) == 0
        return {r["spec"]: r for r in json.loads(capsys.readouterr().out)}

    listed = rows()
    for fam in FAMILIES:
        for p in fam.presets:
            assert listed[f"hf:{p}"]["family"] == fam.name
    assert listed[f"hf:{preset}"]["cached"] is False  # a config without weights is not usable offline
    (snap / "model.safetensors").write_bytes(b"x")
    listed = rows()
    assert listed[f"hf:{preset}"]["cached"] is True and listed[f"hf:{preset}"]["path"] == str(snap)
    assert sum(r["cached"] is True for k, r in listed.items() if k.startswith("hf:")) == 1


def test_only_the_adapters_know_transformers_module_names():
    """Code above mpft.backbones goes through the interface: no adapter internals, no transformers
    vision classes, no CLS-at-index-0 assumption (summary_token / pool say what a family reads)."""
    import re

    from tests.kit import REPO

    internals = re.compile(r"\._(layers|post_ln|pre_ln|projection|embeddings|head|norm|rope)\b|vision_model\b"
                           r"|from transformers import .*(CLIP|Siglip|Dinov|DINOv)|hidden\[:, 0\]")
    files = [p for p in (REPO / "src" / "mpft").rglob("*.py") if "backbones" not in p.parts]
    # peer_univfd.py is the plain transformers script mpft is timed against: it must not use mpft's interface
    files += [p for p in (REPO / "benchmarks").rglob("*.py") if p.name != "peer_univfd.py"]
    offenders = [f"{p.relative_to(REPO)}:{i}" for p in files
                 for i, line in enumerate(p.read_text().splitlines(), 1) if internals.search(line)]
    assert not offenders, offenders


def test_hub_ids_load_from_the_hf_cache_offline(tmp_path, monkeypatch):
    """hf:ORG/NAME resolves through the HF cache (what users online get after a download): config,
    weights and image processor, without a network."""
    import shutil

    from huggingface_hub import constants

    snap = tmp_path / "cache" / "models--acme--tiny-dino" / "snapshots" / "abc"
    snap.parent.mkdir(parents=True)
    shutil.copytree(tiny_family_dir(tmp_path / "src", "dinov2-reg"), snap)
    (snap.parents[1] / "refs").mkdir()
    (snap.parents[1] / "refs" / "main").write_text("abc")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    enc = load_backbone("hf:acme/tiny-dino")
    assert (enc.family, enc.num_prefix_tokens, enc.image_size) == ("dinov2", 3, 32)  # 32: the processor's crop
    assert enc.input_contract.mean == (0.485, 0.456, 0.406)
