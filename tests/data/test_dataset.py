"""ImageDataset / collate / make_loader: bad files never crash an epoch; workers do not matter."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from mpft.data.dataset import Batch, ImageDataset, collate, make_loader
from mpft.data.samples import FAKE, REAL, Sample
from mpft.data.transforms import Augment, Perturbation, PreprocessPolicy
from mpft.errors import ConfigError
from tests.kit import write_image

SIZE = 16


@pytest.fixture
def samples(tmp_path: Path) -> list[Sample]:
    out = []
    for i in range(6):
        p = write_image(tmp_path / f"img ({i}).png", w=24 + i, h=20, seed=i)
        out.append(Sample(p, REAL if i % 2 else FAKE, "g"))
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    out.insert(3, Sample(bad, REAL, "g"))
    return out


def _dataset(samples, **kw) -> ImageDataset:
    kw.setdefault("train", True)
    kw.setdefault("augment", Augment(flip=True, blur_prob=0.5))
    return ImageDataset(samples, PreprocessPolicy(size=SIZE), seed=5, **kw)


def test_bad_file_gives_error_entry(samples) -> None:
    ds = _dataset(samples)
    item = ds[3]
    assert item["pixels"] is None and item["index"] == 3 and item["label"] == REAL
    assert "broken.png" in item["error"]
    good = ds[2]
    assert (
        good["error"] is None
        and good["pixels"].dtype == torch.uint8
        and good["pixels"].shape == (3, SIZE, SIZE)
    )


def test_collate_excludes_failed_items(samples) -> None:
    ds = _dataset(samples)
    batch = collate([ds[i] for i in range(len(ds))])
    assert isinstance(batch, Batch)
    assert batch.pixels.shape == (6, 3, SIZE, SIZE) and batch.pixels.dtype == torch.uint8
    assert batch.indices.tolist() == [0, 1, 2, 4, 5, 6] and batch.indices.dtype == torch.long
    assert batch.labels.tolist() == [1.0, 0.0, 1.0, 0.0, 1.0, 0.0] and batch.labels.dtype == torch.float32
    assert [i for i, _ in batch.errors] == [3]
    empty = collate([ds[3]])
    assert empty.pixels.shape == (0, 3, SIZE, SIZE) and empty.labels.shape == (0,) and len(empty.errors) == 1


def test_deterministic_per_item_and_epoch(samples) -> None:
    ds = _dataset(samples)
    a = ds[0]["pixels"]
    assert torch.equal(a, _dataset(samples)[0]["pixels"])
    ds.set_epoch(1)
    epochs = {ds[0]["pixels"].numpy().tobytes()} | {a.numpy().tobytes()}
    for e in range(2, 6):
        ds.set_epoch(e)
        epochs.add(ds[0]["pixels"].numpy().tobytes())
    assert len(epochs) > 1


def _run(loader, ds: ImageDataset, epoch: int) -> tuple[np.ndarray, list[int], list[int]]:
    ds.set_epoch(epoch)
    pixels, indices, errors = [], [], []
    for batch in loader:
        pixels.append(batch.pixels.numpy())
        indices += batch.indices.tolist()
        errors += [i for i, _ in batch.errors]
    return np.concatenate(pixels), indices, errors


def test_same_results_with_0_and_2_workers(samples) -> None:
    results = []
    for workers in (0, 2):
        ds = _dataset(samples)
        loader = make_loader(ds, 3, shuffle=True, workers=workers, seed=11)
        results.append([_run(loader, ds, epoch) for epoch in (0, 1)])
    (a0, a1), (b0, b1) = results
    for x, y in ((a0, b0), (a1, b1)):
        assert np.array_equal(x[0], y[0]) and x[1] == y[1] and x[2] == y[2] == [3]
    assert sorted(a0[1]) == [0, 1, 2, 4, 5, 6]
    assert a0[1] != a1[1] or not np.array_equal(a0[0], a1[0])  # epoch 1 differs from epoch 0


def test_eval_with_perturbation_and_format_normalisation(samples) -> None:
    plain = ImageDataset(samples, PreprocessPolicy(size=SIZE), train=False)
    jpeg = ImageDataset(
        samples, PreprocessPolicy(size=SIZE), train=False, perturbation=Perturbation("jpeg", 40)
    )
    png = ImageDataset(samples, PreprocessPolicy(size=SIZE), train=False, normalize_format="png")
    assert torch.equal(plain[0]["pixels"], png[0]["pixels"])
    assert not torch.equal(plain[0]["pixels"], jpeg[0]["pixels"])
    assert torch.equal(jpeg[0]["pixels"], jpeg[0]["pixels"])
    with pytest.raises(ConfigError):
        ImageDataset(samples, PreprocessPolicy(), train=False, normalize_format="bmp")


def test_make_loader_arguments(samples) -> None:
    ds = _dataset(samples)
    with pytest.raises(ConfigError):
        make_loader(ds, 0, shuffle=False, workers=0, seed=0)
    with pytest.raises(ConfigError):
        make_loader(ds, 2, shuffle=True, workers=0, seed=0, sampler=torch.utils.data.SequentialSampler(ds))
    loader = make_loader(ds, 4, shuffle=False, workers=0, seed=0)
    assert [b.indices.tolist() for b in loader] == [[0, 1, 2], [4, 5, 6]]
