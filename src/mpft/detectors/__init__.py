"""Detectors shipped inside the package (``default/``: config.json + model.safetensors)."""

from pathlib import Path

DEFAULT_DETECTOR_DIR = Path(__file__).resolve().parent / "default"
