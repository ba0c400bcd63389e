"""SIGKILL a real `featscope extract` process mid-run; the next run resumes and matches an uninterrupted one."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from featscope.config import Settings
from featscope.workspace import Workspace


def _env(data_dir: Path) -> dict[str, str]:
    return {**os.environ, "FEATSCOPE_DATA_DIR": str(data_dir), "FEATSCOPE_NUM_WORKERS": "0",
            "FEATSCOPE_BATCH_SIZE": "4", "FEATSCOPE_SHARD_SIZE": "4", "PYTHONUNBUFFERED": "1",
            "OMP_NUM_THREADS": "1"}


def _cli(data_dir: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "featscope", *args], env=_env(data_dir), capture_output=True,
                          text=True, timeout=300)


def _setup(data_dir: Path, images: Path) -> None:
    assert _cli(data_dir, "dataset", "add", str(images), "--name", "imgs").returncode == 0
    r = _cli(data_dir, "backbone", "add", "torchvision:resnet18", "--random-init", "--name", "r18",
             "--resize", "160", "--crop", "144")
    assert r.returncode == 0, r.stderr


def test_killed_extraction_resumes_to_the_uninterrupted_result(tmp_path, make_images):
    images = make_images(tmp_path / "imgs", {"a": 64, "b": 64}, size=64)  # 32 shards
    killed, clean = tmp_path / "killed", tmp_path / "clean"
    _setup(killed, images)
    _setup(clean, images)

    args = ["extract", "-b", "r18", "-d", "imgs", "--tap", "conv5", "--tap", "conv3"]
    proc = subprocess.Popen([sys.executable, "-m", "featscope", *args], env=_env(killed),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    work = killed / "artifacts" / "_work" / "extraction"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        if len(list(work.glob("*/shard-*.npz"))) >= 2:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.005)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "the extraction finished before it could be killed"
    done_before = len(list(work.glob("*/shard-*.npz")))
    assert 2 <= done_before < 32

    resumed = _cli(killed, *args)
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed" in resumed.stderr
    assert _cli(clean, *args).returncode == 0

    a = Workspace(Settings(data_dir=killed))
    b = Workspace(Settings(data_dir=clean))
    for sa, sb in zip(a.embedding_sets(), b.embedding_sets(), strict=True):
        assert (sa.tap, sa.pooling, sa.artifact_key) == (sb.tap, sb.pooling, sb.artifact_key)
        ea, eb = a.load_embeddings(sa.id), b.load_embeddings(sb.id)
        assert ea.relpaths == eb.relpaths and len(ea.relpaths) == 128
        np.testing.assert_array_equal(ea.vectors, eb.vectors)
    assert not list(work.glob("*/shard-*.npz")), "shards are cleared once the artifacts are stored"
