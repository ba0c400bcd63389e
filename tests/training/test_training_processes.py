"""Real processes: `featscope train` killed with SIGKILL resumes to an uninterrupted run's weights; two gloo
processes under torchrun (`--devices 2`) end with a single process's weights over the same global batch."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

from featscope.training.loop import read_metrics

TRAIN = ["train", "cls", "-d", "pre", "--workers", "0", "--set", "image_size=64", "--set", "threads=1"]


def _env(data_dir: Path) -> dict[str, str]:
    return {**os.environ, "FEATSCOPE_DATA_DIR": str(data_dir), "FEATSCOPE_NUM_WORKERS": "0", "PYTHONUNBUFFERED": "1",
            "OMP_NUM_THREADS": "1"}


def _cli(data_dir: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "featscope", *args], env=_env(data_dir), capture_output=True,
                          text=True, timeout=300)


def _setup(data_dir: Path, coco: Path):
    """A workspace in ``data_dir`` with the pre-training scenes as ``pre`` (in this process: no CLI start-up)."""
    from featscope.config import Settings
    from featscope.workspace import Workspace

    ws = Workspace(Settings(data_dir=data_dir, num_workers=0))
    ws.add_dataset(coco, name="pre")
    return ws


def _train_here(ws, **params):
    """The run the CLI's TRAIN arguments plus ``params`` describe, trained in this process."""
    return ws.train("cls", "pre", num_workers=0, image_size=64, threads=1, **params)


def _weights(data_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(data_dir / "runs" / "00001" / "backbone.pt", weights_only=True)["state_dict"]


def _max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in a if a[k].is_floating_point())


def test_sigkilled_training_resumes_to_the_uninterrupted_weights(study_sets, tmp_path):
    killed, clean = tmp_path / "killed", tmp_path / "clean"
    ws = _setup(killed, study_sets.coco["pretrain"])
    args = [*TRAIN, "--batch-size", "4", "--epochs", "6", "--lr", "0.005", "--checkpoint-every", "2"]
    proc = subprocess.Popen([sys.executable, "-m", "featscope", *args], env=_env(killed),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    run_dir = killed / "runs" / "00001"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        # checkpoints are written in the background: wait for one on disk and a few more iterations
        if (run_dir / "checkpoint.pt").exists() and any(r["iteration"] >= 5 for r in read_metrics(run_dir)):
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.02)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "the training finished before it could be killed"
    kept = torch.load(run_dir / "checkpoint.pt", weights_only=True)["iteration"]
    assert 2 <= kept < 24

    assert ws.run(1).state == "running"  # as the killed process left it
    resumed = _cli(killed, *args)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resumed from the checkpoint at iteration {kept} of 24" in resumed.stderr
    assert ws.run(1).state == "done" and ws.run(1).result["resumed_from"] == kept
    _train_here(_setup(clean, study_sets.coco["pretrain"]), batch_size=4, epochs=6, lr=0.005, checkpoint_every=2)
    assert _max_diff(_weights(killed), _weights(clean)) <= 1e-6


def test_two_gloo_processes_equal_one_process_over_the_same_global_batch(study_sets, tmp_path):
    ddp, single = tmp_path / "ddp", tmp_path / "single"
    ws = _setup(ddp, study_sets.coco["pretrain"])
    # FrozenBatchNorm: per-process batch statistics would differ from one process's by design. SGD: the
    # all-reduced gradient equals one process's to float rounding, which AdamW's division by sqrt(v) would
    # magnify on near-zero gradients (to ~lr per step) rather than show the averaging this test is about.
    args = [*TRAIN, "--batch-size", "4", "--epochs", "2", "--lr", "0.001", "--set", "norm=frozen",
            "--set", "warmup_iters=0", "--set", "optimizer=sgd"]
    r = _cli(ddp, *args, "--devices", "2")
    assert r.returncode == 0, r.stderr + r.stdout
    assert "torchrun --nproc_per_node 2" in r.stderr and "world_size" not in r.stderr
    _train_here(_setup(single, study_sets.coco["pretrain"]), batch_size=4, epochs=2, lr=0.001, norm="frozen",
                warmup_iters=0, optimizer="sgd")
    a, b = _weights(ddp), _weights(single)
    from featscope.training.models import initial_trunk

    start = initial_trunk("resnet18", 0, zero_init_residual=False)  # norm=frozen starts without it
    moved = max(float((b[k].double() - start[k].double()).abs().max()) for k in start if start[k].is_floating_point())
    assert moved > 1e-4  # both trained: the equality below is not two untouched copies
    assert _max_diff(a, b) <= 1e-6
    assert ws.run(1).result["world_size"] == 2
