"""Golden probabilities of a fixed ``random:tiny`` detector on a few shared-data images.

The whole inference path (decode, EXIF, crop / views, normalisation, forward, view combination,
sigmoid) in one number per image and view setting, without the real B/16: any change in what the
pipeline feeds the model shows up here, in the quick loop. The shipped detector has its own golden
logits (tests/test_detector_api.py, slow).

Regenerate after an intended change: ``MPFT_REGEN_GOLDEN=1 python -m pytest tests/test_golden_tiny.py``
and say why in the commit.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.kit import tiny_checkpoint

GOLDEN = Path(__file__).parent / "golden" / "random_tiny.json"
# PNG, WebP and JPEG (with EXIF), generated and real, portrait and landscape
IMAGES = (
    "open_generators/ai/sd_official_repos__mountains-1.png",
    "open_generators/ai/comfyui_examples__sdxl__sdxl_simple_example.png",
    "comfyui_t2i/ai/api_runway_text_to_image-1.webp",
    "camera_photos/nature/metadata_extractor_images__jpg__Nikon_D3100.jpg",
)
VIEWS = ("center", "grid:2+whole", "grid:3@max")


@pytest.fixture(scope="module")
def tiny_lora(tmp_path_factory):
    from mpft import Detector

    return tiny_checkpoint(tmp_path_factory.mktemp("golden") / "tiny", strategy="lora", seed=0), Detector


def _probabilities(data_root: Path, ckpt: Path, detector_cls) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for views in VIEWS:
        det = detector_cls.load(ckpt, views=views)
        preds = det.predict([data_root / rel for rel in IMAGES])
        assert all(p.ok for p in preds), [p.error for p in preds]
        out[views] = {rel: p.probability for rel, p in zip(IMAGES, preds, strict=True)}
    return out


def test_random_tiny_golden_probabilities(data_root, tiny_lora):
    got = _probabilities(data_root, *tiny_lora)
    if os.environ.get("MPFT_REGEN_GOLDEN"):
        GOLDEN.write_text(json.dumps(got, indent=2) + "\n")
    want = json.loads(GOLDEN.read_text())
    assert set(got) == set(want)
    for views, rows in want.items():
        for rel, p in rows.items():
            assert got[views][rel] == pytest.approx(p, abs=1e-5), f"{views} {rel}"
    # the numbers discriminate: views and images give different probabilities
    flat = [p for rows in want.values() for p in rows.values()]
    assert len({round(p, 4) for p in flat}) == len(flat)
