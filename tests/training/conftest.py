"""Fixtures for the training tests (the builders are in tests/kit.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.kit import genimage_tree


@pytest.fixture
def train_tree(tmp_path) -> Path:
    """One generator's GenImage folder: <tmp>/data/{train,val}/{ai,nature}, 8 images each (40 px)."""
    return genimage_tree(tmp_path / "data")
