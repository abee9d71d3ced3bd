"""Every command on every backbone family: train, predict, eval, explain and serve on a tiny random
transformers instance of each family (tests/kit.py ``tiny_family_dir``, loaded as ``hf:DIR``; no download).

Each command runs once per family on a LoRA + TAM checkpoint trained by ``mpft train``; every tuning
strategy the issue names (linear, last-K, LoRA, feature blocks) trains with TAM (drop) on every family through
``mpft.training.train``, the function ``mpft train`` calls. About 25 s in all on 2 cores.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from mpft.cli import main
from tests.kit import TINY_FAMILIES, genimage_tree, tiny_family_dir, write_image

FAMILIES = sorted(TINY_FAMILIES)
# what the command test trains: LoRA under TAM (drop), the strategy that touches most of the interface
_TRAIN = ["--tune", "lora", "--lora-rank", "2", "--mask", "tam", "--mask-ratio", "0.5", "--epochs", "1",
          "--batch-size", "4", "--workers", "0", "--device", "cpu", "--no-validate"]
STRATEGIES = {
    "linear": {"strategy": "linear"},
    "last-k": {"strategy": "last-k", "layers": 2},
    "lora": {"strategy": "lora", "lora_rank": 2},
    "feature-blocks": {"strategy": "linear", "feature_blocks": [2, 4]},
}


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return genimage_tree(tmp_path_factory.mktemp("family-data") / "data", n_per_class=4)


@pytest.fixture(scope="module", params=FAMILIES)
def trained(request, tmp_path_factory, data) -> tuple[str, Path, Path]:
    """(family, backbone dir, checkpoint trained on it by `mpft train`)."""
    name = request.param
    root = tmp_path_factory.mktemp(f"family-{name}")
    tower = tiny_family_dir(root / "tower", name)
    out = root / "run"
    assert main(["train", str(data), "--out", str(out), "--backbone", f"hf:{tower}", *_TRAIN]) == 0
    return name, tower, out / "last"


def test_train_records_the_backbone_and_its_contract(trained):
    name, tower, ckpt = trained
    cfg = json.loads((ckpt / "config.json").read_text())
    pp = json.loads((tower / "preprocessor_config.json").read_text())
    assert cfg["backbone"] == f"hf:{tower}"
    assert cfg["input_contract"]["image_size"] == 32 and cfg["input_contract"]["patch_size"] == 8
    assert cfg["input_contract"]["mean"] == pytest.approx(pp["image_mean"])
    assert cfg["training"]["history"], "no epoch was recorded"


def test_predict(trained, tmp_path, capsys):
    from mpft import Detector

    _, _, ckpt = trained
    imgs = [write_image(tmp_path / f"{i}.png", 48, 40, seed=i) for i in range(3)]
    capsys.readouterr()
    assert main(["predict", *map(str, imgs), "--model", str(ckpt), "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    want = [p.probability for p in Detector.load(ckpt).predict(imgs)]
    assert [r["probability"] for r in rows] == pytest.approx(want, abs=1e-6)
    assert all(0.0 < p < 1.0 for p in want) and len(set(want)) == 3


def test_eval_with_tam_masking(trained, data, tmp_path):
    _, _, ckpt = trained
    out = tmp_path / "eval"
    args = ["eval", str(ckpt), str(data), "--out", str(out), "--mask", "tam:0.5", "--device", "cpu", "--n-boot", "20"]
    assert main(args) == 0
    doc = json.loads((out / "metrics.json").read_text())
    overall = doc["conditions"][0]["rows"]["overall"]
    assert (overall["n_real"], overall["n_fake"]) == (4, 4)  # the val split, every image scored
    assert 0.0 <= overall["auc"] <= 1.0


def test_explain(trained, tmp_path, capsys):
    _, _, ckpt = trained
    img = write_image(tmp_path / "x.png", 40, 40, seed=5)
    capsys.readouterr()
    assert main(["explain", str(img), "--model", str(ckpt), "--json", "--device", "cpu"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["grid"] == 4 and doc["patch_size"] == 8
    evidence = torch.tensor(doc["evidence"])
    assert evidence.shape == (4, 4) and evidence.abs().max() > 0  # removing patches changes the logit


def test_serve(trained, tmp_path):
    from fastapi.testclient import TestClient

    from mpft import Detector
    from mpft.serve import ServeSettings, create_app
    from tests.kit import image_bytes

    _, _, ckpt = trained
    det = Detector.load(ckpt)
    data = image_bytes(48, 40, seed=3)
    app = create_app(lambda: det, ServeSettings())
    with TestClient(app) as client:
        assert app.state.model.wait(60), app.state.model.error
        r = client.post("/api/v1/predict", files=[("files", ("a.png", data, "image/png"))])
    assert r.status_code == 200, r.text
    (result,) = r.json()["results"]
    assert result["probability"] == pytest.approx(det.predict([data])[0].probability, abs=1e-6)


def test_load_refuses_a_changed_image_processor(trained, tmp_path):
    """The input contract is stored in config.json: a backbone whose processor now says otherwise fails."""
    import shutil

    from mpft import Detector
    from mpft.errors import CheckpointError

    _, tower, ckpt = trained
    moved = tmp_path / "ckpt"
    shutil.copytree(ckpt, moved)
    cfg = json.loads((moved / "config.json").read_text())
    cfg["input_contract"]["mean"] = [0.1, 0.2, 0.3]
    (moved / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="mean"):
        Detector.load(moved)


@pytest.mark.parametrize("family", FAMILIES)
def test_every_strategy_trains_on_every_family(family, tmp_path, data):
    """train() with TAM (drop) for each tuning strategy: the checkpoint stores what the strategy trains,
    the tuned backbone tensors moved away from the pretrained ones, and the checkpoint loads."""
    from mpft.backbones import load_backbone
    from mpft.checkpoint import load_checkpoint
    from mpft.model import TuneConfig
    from mpft.tam import MaskConfig
    from mpft.training import TrainConfig, train

    spec = f"hf:{tiny_family_dir(tmp_path / 'tower', family)}"
    pretrained = {f"encoder.{k}": v for k, v in load_backbone(spec).state_dict().items()}
    for name, tune in STRATEGIES.items():
        cfg = TrainConfig(data=str(data), out=str(tmp_path / name), backbone=spec, epochs=1, batch_size=4,
                          workers=0, device="cpu", validate=False, tune=TuneConfig(**tune),
                          mask=MaskConfig(ratio=0.5), lr_backbone=1e-2)
        train(cfg, progress=False)
        model, _ = load_checkpoint(tmp_path / name / "last")
        state = model.trainable_state_dict()
        backbone = [k for k in state if not k.startswith("head.")]
        if tune["strategy"] == "linear":
            assert not backbone, name
            width = 2 * model.encoder.width if tune.get("feature_blocks") else model.encoder.embed_dim
            assert state["head.weight"].shape == (1, width), name
        elif tune["strategy"] == "lora":
            assert backbone and all("lora_" in k for k in backbone)
            assert any(state[k].abs().max() > 0 for k in backbone if "lora_B" in k), "LoRA B stayed zero"
        else:
            moved = [k for k in backbone if not torch.equal(state[k], pretrained[k])]
            assert moved, f"{family}/{name}: no backbone tensor changed"


@pytest.mark.parametrize("precision", ["bf16", "int8"])
def test_predict_in_reduced_precision(trained, tmp_path, precision):
    """int8 quantizes the blocks' Linear layers (never SigLIP's attention-pooling internals) and bf16 autocasts:
    both load and stay near fp32 on every family."""
    from mpft import Detector

    _, _, ckpt = trained
    imgs = [write_image(tmp_path / f"{i}.png", 48, 40, seed=i) for i in range(2)]
    want = [p.probability for p in Detector.load(ckpt).predict(imgs)]
    got = [p.probability for p in Detector.load(ckpt, precision=precision).predict(imgs)]
    assert got == pytest.approx(want, abs=0.02)


def test_preprocessing_resizes_with_the_backbones_interpolation(trained):
    """An image smaller than the input is upscaled with the interpolation the image processor states
    (bilinear for SigLIP / DINOv3 here, bicubic for CLIP / DINOv2), the same in predict and training."""
    import numpy as np
    from PIL import Image

    from mpft import Detector
    from mpft.data.transforms import prepare
    from tests.kit import noise_image

    _, tower, ckpt = trained
    name = {2: "bilinear", 3: "bicubic"}[json.loads((tower / "preprocessor_config.json").read_text())["resample"]]
    det = Detector.load(ckpt)
    assert det.policy.interpolation == name
    img = noise_image(20, 24, seed=1)
    _, views = det.prepare(img)
    expected = np.asarray(img.resize((32, 38), Image.Resampling[name.upper()]).crop((0, 3, 32, 35)))
    assert np.array_equal(views[0].permute(1, 2, 0).numpy(), expected)
    assert np.array_equal(prepare(img, det.policy, train=False), expected)  # the training/eval dataset's path
    other = "bicubic" if name == "bilinear" else "bilinear"
    assert not np.array_equal(np.asarray(img.resize((32, 38), Image.Resampling[other.upper()]).crop((0, 3, 32, 35))),
                              expected)
