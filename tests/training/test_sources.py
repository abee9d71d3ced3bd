"""mpft train on several data arguments: pooled samples, balanced draws, views recorded in the checkpoint."""

from __future__ import annotations

import json

import numpy as np
from PIL import Image

from tests.kit import genimage_tree


def test_two_sources_pooled_balanced_and_views_recorded(tmp_path, monkeypatch):
    import mpft.training.data as data_mod  # where the sampler is chosen
    from mpft.backbones import load_backbone
    from mpft.training import TrainConfig, train

    big = genimage_tree(tmp_path / "big", n_per_class=12, splits=("train",), seed=1)
    # a second source holding only real photos: alone it could not train, pooled it can
    photos = tmp_path / "photos" / "nature"
    photos.mkdir(parents=True)
    for i in range(2):
        Image.fromarray(np.full((40, 40, 3), 40 * i, np.uint8)).save(photos / f"p{i}.png")
    drawn: list[int] = []
    real_sampler = data_mod.BalancedSampler

    class Spy(real_sampler):
        def __iter__(self):
            out = list(super().__iter__())
            drawn.extend(out)
            return iter(out)

    monkeypatch.setattr(data_mod, "BalancedSampler", Spy)
    cfg = TrainConfig(data=[str(big), str(tmp_path / "photos")], out=str(tmp_path / "run"), backbone="random:tiny",
                      balance="source", views="grid:2@max", epochs=2, batch_size=4, validate=False, workers=0)
    res = train(cfg, encoder=load_backbone("random:tiny"), progress=False)
    conf = json.loads((res.last / "config.json").read_text())
    assert conf["views"] == {"grid": 2, "whole": False, "combine": "max"}
    assert conf["training"]["data"] == [str(big), str(tmp_path / "photos")]
    n = 12 * 2 + 2
    assert len(drawn) == 2 * n  # one epoch draws as many as the pooled dataset holds
    # balance=source: the 2 photos of the second source get half of the real draws, far above 2/14
    real = [d % n for d in drawn]
    photo_share = sum(r >= 24 for r in real) / len(real)
    assert 0.12 < photo_share < 0.4
    assert len(set(drawn)) > len({d % n for d in drawn})  # repeats come back as new virtual indices
