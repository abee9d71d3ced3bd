"""One inference path: ``mpft eval`` and ``mpft predict`` score the same files identically."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.kit import tiny_checkpoint


def _tree(root: Path) -> list[Path]:
    rng = np.random.default_rng(0)
    paths = []
    for cls in ("real", "fake"):
        for i in range(3):
            p = root / cls / f"{cls}{i}.png"
            p.parent.mkdir(parents=True, exist_ok=True)
            # larger than the 32 px input: several views differ
            Image.fromarray(rng.integers(0, 256, (40 + 7 * i, 70, 3), dtype=np.uint8)).save(p)
            paths.append(p)
    return paths


@pytest.mark.parametrize("strategy", ["lora", "last-k"])
@pytest.mark.parametrize("views", [None, "grid:2+whole@max"])
def test_eval_and_predict_give_identical_scores(tmp_path, strategy, views):
    from mpft.detector import Detector
    from mpft.evaluation import evaluate

    # head_std spreads scores so that a LoRA left unmerged in one path would show
    ckpt = tiny_checkpoint(tmp_path / "ck", strategy=strategy, head_std=1.0)
    if strategy == "lora":
        import torch
        from safetensors.torch import load_file, save_file

        # non-zero adapters: an unmerged or skipped LoRA changes the scores
        w = load_file(str(ckpt / "model.safetensors"))
        g = torch.Generator().manual_seed(0)
        w = {k: (torch.randn(v.shape, generator=g) * 0.5 if "lora_B" in k else v) for k, v in w.items()}
        save_file(w, str(ckpt / "model.safetensors"), metadata={"format": "pt"})
    paths = _tree(tmp_path / "data")
    report = evaluate(ckpt, [tmp_path / "data"], out=None, n_boot=0, views=views, progress=False)
    by_path = {Path(r.path).name: r.score for r in report.scores}
    preds = Detector.load(ckpt, views=views).predict(paths)
    assert len(by_path) == len(preds) == 6
    for p in preds:
        assert p.probability == pytest.approx(by_path[Path(p.source).name], abs=1e-6), p.source
    assert report.meta.extra["views"] == (views or "center")
