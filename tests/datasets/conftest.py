"""Builders for small image files (good and broken) used across the datasets tests."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

MakeImage = Callable[..., Path]


@pytest.fixture
def make_image() -> MakeImage:
    """``make_image(path, size=(16, 12), colour=(200, 30, 40), kind="ok")`` writes a file and returns
    its path. ``kind``: ok (solid colour, format from the suffix), noise (random pixels), empty
    (0 bytes), text (a text file with an image suffix), truncated (a noise image cut in half)."""

    def make(path: Path, size: tuple[int, int] = (16, 12), colour: tuple[int, int, int] = (200, 30, 40),
             kind: str = "ok") -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        if kind == "empty":
            path.write_bytes(b"")
        elif kind == "text":
            path.write_text("this is not an image\n")
        elif kind in ("noise", "truncated"):
            rng = np.random.default_rng(len(path.name))
            Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(path)
            if kind == "truncated":
                data = path.read_bytes()
                path.write_bytes(data[: len(data) // 2])
        else:
            Image.new("RGB", size, colour).save(path)
        return path

    return make


@pytest.fixture
def snapshot() -> Callable[[Path], dict[str, tuple[bytes, int]]]:
    """``snapshot(root)``: relpath -> (bytes, mtime_ns) of every file below ``root``, to prove that
    reading a dataset changes nothing."""

    def take(root: Path) -> dict[str, tuple[bytes, int]]:
        return {p.relative_to(root).as_posix(): (p.read_bytes(), p.stat().st_mtime_ns)
                for p in sorted(root.rglob("*")) if p.is_file()}

    return take
