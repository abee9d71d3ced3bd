"""Dataset discovery on tiny folder trees for every layout."""

from __future__ import annotations

from pathlib import Path

import pytest

from mpft.data.images import decode_image
from mpft.data.layouts import (
    dataset_splits,
    detect_layout,
    discover,
    has_splits,
    single_class,
    split_folders,
)
from mpft.data.samples import FAKE, REAL, Sample, balanced_subset, limit_per_class, require_both_classes, summarize
from mpft.data.scan import list_images, scan_folder
from mpft.errors import ConfigError, DataError
from tests.kit import fill_folder, require, write_image

ODD_NAMES = ["1000 (6).jpg", "a.b.c.png", "plain.png"]


def _fill(folder: Path, names=ODD_NAMES, seed: int = 0) -> None:
    for k, name in enumerate(names):
        fmt = "JPEG" if name.endswith(".jpg") else "PNG"
        write_image(folder / name, seed=seed + k, fmt=fmt)


def _names(samples: list[Sample]) -> list[tuple[str, int, str]]:
    return [(s.path.name, s.label, s.generator) for s in samples]


def test_list_images_by_content(tmp_path: Path) -> None:
    _fill(tmp_path)
    write_image(tmp_path / "misleading.txt")  # PNG content, text extension
    (tmp_path / "notes.jpg").write_text("not an image")
    write_image(tmp_path / ".hidden.png")
    write_image(tmp_path / ".cache" / "x.png")
    write_image(tmp_path / "sub dir" / "deep (1).png")
    (tmp_path / "notes.txt").write_text("not an image either")
    found = [p.relative_to(tmp_path).as_posix() for p in list_images(tmp_path)]
    # notes.jpg is listed by its name, so it fails to decode and is reported rather than lost
    assert found == ["1000 (6).jpg", "a.b.c.png", "misleading.txt", "notes.jpg", "plain.png", "sub dir/deep (1).png"]
    scan = scan_folder(tmp_path)
    assert [p.name for p in scan.misnamed] == ["notes.jpg"] and tmp_path / "notes.jpg" not in scan.images
    assert "sub dir/deep (1).png" not in [p.name for p in list_images(tmp_path, recursive=False)]


def test_genimage_multi_generator_with_splits(tmp_path: Path) -> None:
    for gen in ("midjourney", "sdv4"):
        for split in ("train", "val"):
            _fill(tmp_path / gen / split / "ai", ["f (1).png"])
            _fill(tmp_path / gen / split / "nature", ["r.1.png", "r 2.jpg"])
    assert detect_layout(tmp_path) == "genimage"
    val = discover(tmp_path, split="val")
    assert len(val) == 6 and all("/val/" in s.path.as_posix() for s in val)
    assert summarize(val)["generators"] == {
        "midjourney": {"real": 2, "fake": 1},
        "sdv4": {"real": 2, "fake": 1},
    }
    assert val == sorted(val)
    with pytest.raises(DataError, match="split"):
        discover(tmp_path)
    with pytest.raises(DataError, match="'test' not found"):
        discover(tmp_path, split="test")


def test_genimage_single_generator_and_flat(tmp_path: Path) -> None:
    root = tmp_path / "sd14"
    _fill(root / "train" / "ai")
    _fill(root / "train" / "nature", ["n.png"])
    _fill(root / "val" / "ai", ["v.png"])
    _fill(root / "val" / "nature", ["w.png"])
    train = discover(root, split="train")
    assert _names(train) == [
        ("1000 (6).jpg", FAKE, "sd14"),
        ("a.b.c.png", FAKE, "sd14"),
        ("plain.png", FAKE, "sd14"),
        ("n.png", REAL, "sd14"),
    ]
    flat = discover(root / "val")  # {ai,nature} directly; generator named after the dataset
    assert _names(flat) == [("v.png", FAKE, "sd14"), ("w.png", REAL, "sd14")]


def test_ufd_layout_with_classes_and_split(tmp_path: Path) -> None:
    test = tmp_path / "test"
    for cls in ("car", "cat"):
        _fill(test / "progan" / cls / "0_real", [f"{cls}.png"])
        _fill(test / "progan" / cls / "1_fake", [f"{cls} fake.png"])
    _fill(test / "dalle" / "0_real", ["r.png"])
    _fill(test / "dalle" / "1_fake", ["f.png"])
    assert detect_layout(tmp_path) == "ufd"
    samples = discover(tmp_path, layout="ufd", split="test")
    assert summarize(samples) == {
        "total": 6,
        "real": 3,
        "fake": 3,
        "generators": {"dalle": {"real": 1, "fake": 1}, "progan": {"real": 2, "fake": 2}},
    }
    with pytest.raises(DataError, match="split"):
        discover(tmp_path, layout="ufd")
    flat = discover(test / "dalle")
    assert _names(flat) == [("r.png", REAL, "dalle"), ("f.png", FAKE, "dalle")]


def _ufd_classes(folder: Path, classes: tuple[str, ...]) -> None:
    """``folder/<class>/{0_real,1_fake}`` with one image each (CNNDetection's object classes)."""
    for cls in classes:
        _fill(folder / cls / "0_real", [f"{cls}.png"])
        _fill(folder / cls / "1_fake", [f"{cls} fake.png"])


def test_ufd_object_class_named_train_is_not_a_split(tmp_path: Path) -> None:
    train_set = tmp_path / "progan_train"
    _ufd_classes(train_set, ("airplane", "train", "Val"))
    assert split_folders(train_set) == {}
    assert dataset_splits(train_set) == [] and not has_splits(train_set)
    samples = discover(train_set, layout="ufd")
    assert summarize(samples)["generators"] == {
        "Val": {"real": 1, "fake": 1},
        "airplane": {"real": 1, "fake": 1},
        "train": {"real": 1, "fake": 1},
    }
    # a test root: progan's classes include "train", biggan has no classes; no splits anywhere
    test = tmp_path / "test"
    _ufd_classes(test / "progan", ("airplane", "train"))
    _fill(test / "biggan" / "0_real", ["r.png"])
    _fill(test / "biggan" / "1_fake", ["f.png"])
    assert dataset_splits(test) == [] and not has_splits(test)
    assert discover(test, layout="ufd", split="test") == discover(test, layout="ufd")
    assert summarize(discover(test))["generators"] == {
        "biggan": {"real": 1, "fake": 1},
        "progan": {"real": 2, "fake": 2},
    }


def test_ufd_split_folders_still_split(tmp_path: Path) -> None:
    # <root>/<split>/<gen>/<class>/...: train/ and test/ are splits even with a "train" class below
    for split in ("train", "test"):
        _ufd_classes(tmp_path / "nested" / split / "progan", ("airplane", "train"))
    nested = tmp_path / "nested"
    assert set(split_folders(nested)) == {"train", "test"} and has_splits(nested)
    samples = discover(nested, layout="ufd", split="train")
    assert {s.generator for s in samples} == {"progan"} and len(samples) == 4
    assert all("/nested/train/progan/" in s.path.as_posix() for s in samples)
    with pytest.raises(DataError, match="has split folders"):
        discover(nested, layout="ufd")
    # <root>/{train,val}/{0_real,1_fake}: split siblings are no object classes
    flat = tmp_path / "flat"
    for split in ("train", "val"):
        _fill(flat / split / "0_real", [f"{split}.png"])
        _fill(flat / split / "1_fake", [f"{split} fake.png"])
    assert set(split_folders(flat)) == {"train", "val"}
    assert _names(discover(flat, split="val")) == [("val.png", REAL, "flat"), ("val fake.png", FAKE, "flat")]


def test_genimage_splits_unaffected_by_class_rule(tmp_path: Path) -> None:
    for gen in ("sdv4", "biggan"):
        for split in ("train", "val"):
            _fill(tmp_path / gen / split / "ai", ["f.png"])
            _fill(tmp_path / gen / split / "nature", ["r.png"])
    assert split_folders(tmp_path) == {}
    assert set(split_folders(tmp_path / "sdv4")) == {"train", "val"}
    assert dataset_splits(tmp_path) == ["train", "val"] and has_splits(tmp_path)
    assert not has_splits(tmp_path / "sdv4" / "train") and not has_splits(tmp_path / "missing")


def test_realfake_layout(tmp_path: Path) -> None:
    root = tmp_path / "mine"
    _fill(root / "real", ["x (2).png"])
    _fill(root / "fake", ["y.z.png"])
    assert detect_layout(root) == "realfake"
    assert _names(discover(root)) == [("y.z.png", FAKE, "mine"), ("x (2).png", REAL, "mine")]


def test_csv_layout(tmp_path: Path) -> None:
    _fill(tmp_path / "imgs", ["a (1).png", "b.c.png", "d.png", "e.png"])
    csv_path = tmp_path / "list.csv"
    csv_path.write_text(
        "path,label,generator\n"
        "imgs/a (1).png,Real,\n"
        "imgs/b.c.png,AI,flux\n"
        "imgs/d.png,generated,sdxl\n"
        "\n"
        "imgs/e.png,0,cam\n"
    )
    assert detect_layout(csv_path) == "csv"
    got = {(s.path.name, s.label, s.generator) for s in discover(csv_path)}
    assert got == {
        ("a (1).png", REAL, "unknown"),
        ("b.c.png", FAKE, "flux"),
        ("d.png", FAKE, "sdxl"),
        ("e.png", REAL, "cam"),
    }
    two_cols = tmp_path / "two.csv"
    two_cols.write_text("path,label\nimgs/d.png,1\n")
    assert _names(discover(two_cols)) == [("d.png", FAKE, "unknown")]


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("file,label\nimgs/d.png,1\n", "line 1: header"),
        ("path,label\nimgs/d.png,maybe\n", "line 2: bad label"),
        ("path,label\nimgs/d.png,1\nimgs/d.png\n", "line 3: expected 2 columns"),
        ("path,label\nimgs/d.png,1\nimgs/gone.png,0\n", "line 3: image file not found"),
    ],
)
def test_csv_errors_name_the_line(tmp_path: Path, text: str, match: str) -> None:
    _fill(tmp_path / "imgs", ["d.png"])
    p = tmp_path / "bad.csv"
    p.write_text(text)
    with pytest.raises(DataError, match=match):
        discover(p)


def test_errors_name_path_and_layouts(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist.*genimage.*ufd.*realfake.*csv") as info:
        discover(tmp_path / "missing")
    assert str(tmp_path / "missing") in str(info.value)
    _fill(tmp_path / "random")
    with pytest.raises(DataError, match="not recognised"):
        discover(tmp_path)
    with pytest.raises(DataError, match="unknown layout 'imagenet'"):
        discover(tmp_path, layout="imagenet")
    (tmp_path / "empty" / "real").mkdir(parents=True)
    (tmp_path / "empty" / "fake").mkdir()
    with pytest.raises(DataError, match="no images found"):
        discover(tmp_path / "empty")


def test_single_class_and_require_both(tmp_path: Path) -> None:
    _fill(tmp_path / "pool")
    real = single_class(tmp_path / "pool", REAL)
    assert {s.generator for s in real} == {"pool"} and len(real) == 3
    fake = single_class(tmp_path / "pool", FAKE, generator="sdxl")
    with pytest.raises(DataError, match="training set has only real images"):
        require_both_classes(real, "training set")
    with pytest.raises(DataError, match="only generated images"):
        require_both_classes(fake, "eval set")
    require_both_classes(real + fake, "training set")
    with pytest.raises(ConfigError):
        single_class(tmp_path / "pool", 2)


def _synthetic(n_real: dict[str, int], n_fake: dict[str, int]) -> list[Sample]:
    out = []
    for label, spec in ((REAL, n_real), (FAKE, n_fake)):
        for gen, n in spec.items():
            out += [Sample(Path(f"/d/{gen}/{label}/{i:03d}.png"), label, gen) for i in range(n)]
    return out


def test_balanced_subset_balance_spread_determinism() -> None:
    samples = _synthetic({"cam": 40}, {"a": 30, "b": 30, "c": 2})
    sub = balanced_subset(samples, 21, seed=3)
    assert len(sub) == 21 and len(set(sub)) == 21
    s = summarize(sub)
    assert (s["real"], s["fake"]) == (10, 11)
    fake_counts = {g: c["fake"] for g, c in s["generators"].items() if c["fake"]}
    assert fake_counts == {"a": 5, "b": 4, "c": 2}  # round-robin: c exhausted, a gets the extra
    assert balanced_subset(samples, 21, seed=3) == sub
    assert balanced_subset(list(reversed(samples)), 21, seed=3) == sub
    assert balanced_subset(samples, 21, seed=4) != sub
    with pytest.raises(DataError, match="needs 41 real images, only 40"):
        balanced_subset(samples, 82, seed=0)


def test_limit_per_class() -> None:
    samples = _synthetic({"cam": 10}, {"a": 3, "b": 8})
    lim = limit_per_class(samples, 5, seed=1)
    assert summarize(lim)["generators"] == {
        "a": {"real": 0, "fake": 3},
        "b": {"real": 0, "fake": 5},
        "cam": {"real": 5, "fake": 0},
    }
    assert lim == limit_per_class(list(reversed(samples)), 5, seed=1)
    assert lim != limit_per_class(samples, 5, seed=2)


def test_cifake_shared_data(data_root: Path) -> None:
    root = data_root / "cifake_sd14"
    require(root.is_dir(), f"{root}", "the shared data folder lacks cifake_sd14")
    samples = discover(root, split="train")
    assert all(s.generator == "cifake_sd14" for s in samples[:10])
    s = summarize(samples)
    assert s["real"] > 0 and s["fake"] > 0
    spaced = [x for x in samples if " " in x.path.name][:4]
    assert len(spaced) == 4
    for x in spaced:
        assert decode_image(x.path).image.size == (32, 32)


def test_csv_source_column_names_the_collection_of_each_image(tmp_path):
    from mpft.data.csvlist import read_csv_samples

    fill_folder(tmp_path / "i", 2)
    a, b = sorted(p.name for p in (tmp_path / "i").iterdir())
    rows = f"i/{a},nature,flickr,flickr_2019\ni/{b},ai,sdxl,web\n"
    (tmp_path / "l.csv").write_text("path,label,generator,source\n" + rows)
    real, fake = read_csv_samples(tmp_path / "l.csv")
    assert (real.source, real.group) == ("flickr_2019", "flickr_2019")
    assert (fake.source, fake.group) == ("web", "sdxl")  # generated images are grouped by generator
    (tmp_path / "bad.csv").write_text(f"path,label,source\ni/{a},nature,x\n")
    with pytest.raises(DataError, match="generator\\[,source\\]"):
        read_csv_samples(tmp_path / "bad.csv")
