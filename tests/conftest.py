"""Fixtures shared across the suite: a workspace in a temp dir and small generated image folders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image


def make_image_folder(root: Path, classes: dict[str, int], size: int = 48, seed: int = 0) -> Path:
    """ImageFolder of small random-texture PNGs, one sub-folder per class; returns ``root``."""
    rng = np.random.default_rng(seed)
    for ci, (cls, n) in enumerate(classes.items()):
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            base = np.zeros((size, size, 3), dtype=np.uint8)
            base[..., ci % 3] = 160  # class-dependent colour so classes are separable
            noise = rng.integers(0, 90, size=(size, size, 3), dtype=np.uint8)
            Image.fromarray(base + noise).save(root / cls / f"{cls}_{i:03d}.png")
    return root


@pytest.fixture(scope="session")
def make_images():
    """The :func:`make_image_folder` factory, for tests that need their own layout."""
    return make_image_folder


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    return make_image_folder(tmp_path / "imgs", {"red": 6, "green": 5, "blue": 5})


@pytest.fixture
def settings(tmp_path: Path):
    from featscope.config import Settings

    return Settings(data_dir=tmp_path / "data", num_workers=0, batch_size=4, shard_size=8)


@pytest.fixture
def ws(settings):
    from featscope.workspace import Workspace

    return Workspace(settings)
