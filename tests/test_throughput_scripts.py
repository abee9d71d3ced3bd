"""benchmarks/throughput.py and benchmarks/cold_start.py (issue 19): their arithmetic, and smoke runs."""

from __future__ import annotations

import pytest

from tests.kit import load_script


def test_rates_split_start_up_from_the_steady_rate():
    tp = load_script("throughput")
    # 2 batches of 2 images: the first batch arrives after 10 s (start-up), then one image per second
    r = tp.rates(0.0, [10.0, 10.0, 11.0, 12.0], batch=2)
    assert r["images"] == 4 and r["seconds"] == 12.0
    assert r["images_per_s"] == pytest.approx(4 / 12) and r["first_batch_s"] == 10.0
    assert r["steady_images_per_s"] == pytest.approx(2 / 2)
    assert tp.rates(0.0, [5.0], batch=8)["steady_images_per_s"] is None  # one batch: no steady rate


def test_make_photos_reaches_the_size_and_is_reused(tmp_path, data_root):
    from PIL import Image

    tp = load_script("throughput")
    paths = tp.make_photos(2, tmp_path, 0.5, data_root / "camera_photos" / "nature")
    for p in paths:
        with Image.open(p) as im:
            assert im.format == "JPEG" and abs(im.width * im.height - 0.5e6) < 0.02e6
    stamp = paths[0].stat().st_mtime_ns
    assert tp.make_photos(1, tmp_path, 0.5, data_root / "camera_photos" / "nature")[0].stat().st_mtime_ns == stamp


@pytest.mark.slow  # the shipped detector (real B/16) on two small photos
def test_throughput_smoke_run_is_consistent(tmp_path, data_root):
    tp = load_script("throughput")
    out = tp.main(["--n", "3", "--batch", "2", "--megapixels", "0.3", "--photo-dir", str(tmp_path),
                   "--workers", "0", "1", "--no-ray"])
    assert out["model_only"]["views_per_image"] == 5
    for run in out["runs"].values():
        assert run["images"] == 3 and run["identical_to_plain"]
        assert run["ratio_to_model_only"] > 0


@pytest.mark.slow  # five fresh processes loading the real B/16
def test_cold_start_smoke_run(tmp_path, data_root):
    cs = load_script("cold_start")
    out = cs.main(["--runs", "1", "--photos", "2", "--photo-dir", str(data_root / "imagenet_samples" / "nature"),
                   "--json", str(tmp_path / "cold.json")])
    assert set(out["phases_s"]) == {"import_torch", "import_mpft", "detector_load", "first_predict"}
    assert out["one_image_s"]["median"] > sum(out["phases_s"].values()) * 0.5
    assert out["photos"]["n"] == 2 and out["photos"]["peer_s"] > 0 and (tmp_path / "cold.json").is_file()


def test_precision_gate_reports_the_shift_of_each_precision(tmp_path, tiny_ckpt):
    from tests.kit import fill_folder

    gate = load_script("precision_gate")
    fill_folder(tmp_path / "photos", 3, smooth=True)
    out = gate.main(["--model", str(tiny_ckpt), "--photos", str(tmp_path / "photos"), "--n", "3",
                     "--precisions", "fp32", "bf16", "--json", str(tmp_path / "gate.json")])
    assert out["photos"] == 3 and out["gate"] == 0.01
    fp32 = out["precisions"]["fp32"]  # fp32 against itself: no shift, passes
    assert fp32["max_abs_dp"] == 0.0 and fp32["passes"] and fp32["verdict_flips"] == 0
    assert out["precisions"]["bf16"]["max_abs_dp"] >= 0 and (tmp_path / "gate.json").is_file()
