"""The loop: loss falls on a toy set for both tasks; a resumed run ends with the uninterrupted run's
weights; a NaN loss fails clearly and keeps the last good checkpoint; a cancel stops it; the schedule."""

from __future__ import annotations

import math

import pytest
import torch

from featscope.training.loop import (CHECKPOINT, LoopConfig, TrainingDiverged, fit, load_checkpoint, lr_factor,
                                     read_metrics)
from featscope.training.models import initial_trunk
from featscope.training.presets import resolve_config
from featscope.training.tasks import make_task


def _task(kind, samples, tiny, **over):
    classes, items = samples
    cfg = resolve_config(kind, "cpu-demo", {**tiny, **over})
    return make_task(kind, cfg, classes, items, initial_trunk("resnet18", 0), "seed 0"), cfg


class _Stop(Exception):
    pass


def _stop_after(n):
    calls = [0]

    def check():
        calls[0] += 1
        if calls[0] > n:
            raise _Stop()

    return check


def test_config_errors():
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        LoopConfig(batch_size=0)
    with pytest.raises(ValueError, match="schedule"):
        LoopConfig(schedule="linear")
    with pytest.raises(ValueError, match="precision"):
        LoopConfig(precision="int8")
    with pytest.raises(ValueError, match="optimizer must be one of sgd, adamw, got 'lamb'"):
        LoopConfig(optimizer="lamb")


def test_schedule_warmup_steps_and_cosine():
    cfg = LoopConfig(epochs=4, warmup_iters=10, warmup_factor=0.1, lr_steps=(2, 3), lr_gamma=0.1)
    assert lr_factor(0, cfg, 10, 40) == pytest.approx(0.1)
    assert lr_factor(5, cfg, 10, 40) == pytest.approx(0.55)
    assert [lr_factor(s, cfg, 10, 40) for s in (10, 19, 20, 29, 30)] == pytest.approx([1, 1, 0.1, 0.1, 0.01])
    cos = LoopConfig(epochs=4, schedule="cosine")
    assert lr_factor(0, cos, 10, 40) == 1 and lr_factor(20, cos, 10, 40) == pytest.approx(0.5)
    assert lr_factor(40, cos, 10, 40) == pytest.approx(0.0, abs=1e-12)


def _colour_classes(make_images, root):
    """Two classes told apart by colour: a toy set any classifier must learn at once."""
    from featscope.training.data import Sample

    folder = make_images(root, {"red": 8, "green": 8}, size=48)
    return ["green", "red"], [Sample(p, p.parent.name) for p in sorted(folder.rglob("*.png"))]


@pytest.mark.parametrize("kind", ["cls", "det"])
def test_loss_falls_on_a_toy_set(kind, pretrain_samples, tiny, tmp_path, make_images):
    samples = _colour_classes(make_images, tmp_path / "toy") if kind == "cls" else pretrain_samples
    over = (dict(lr=0.005, batch_size=8, epochs=12, image_size=48) if kind == "cls"
            else dict(lr=0.02, epochs=6, optimizer="sgd"))  # an SGD learning rate: pin the optimiser
    task, cfg = _task(kind, samples, tiny, **over)
    res = fit(task, cfg.loop(), tmp_path / "run", identity="toy")
    tmp_path = tmp_path / "run"
    losses = [r["loss"] for r in read_metrics(tmp_path) if r["kind"] == "train"]
    assert res.iterations == len(losses) == 24
    first, last = sum(losses[:4]) / 4, sum(losses[-4:]) / 4
    assert last < 0.8 * first, losses


@pytest.mark.parametrize("kind", ["cls", "det"])
def test_resumed_run_equals_uninterrupted_run(kind, pretrain_samples, tiny, tmp_path):
    over = dict(checkpoint_every=3, optimizer={"cls": "adamw", "det": "sgd"}[kind])  # both optimisers resume exactly
    task, cfg = _task(kind, pretrain_samples, tiny, **over)
    whole = fit(task, cfg.loop(), tmp_path / "whole", identity="same").model.state_dict()
    task, _ = _task(kind, pretrain_samples, tiny, **over)
    with pytest.raises(_Stop):
        fit(task, cfg.loop(), tmp_path / "cut", identity="same", check=_stop_after(5))
    assert load_checkpoint(tmp_path / "cut" / CHECKPOINT)["iteration"] == 3
    task, _ = _task(kind, pretrain_samples, tiny, **over)
    resumed = fit(task, cfg.loop(), tmp_path / "cut", identity="same")
    assert resumed.resumed_from == 3 and resumed.iterations == 8
    state = resumed.model.state_dict()
    assert state.keys() == whole.keys()
    worst = max(float((state[k].double() - whole[k].double()).abs().max()) for k in whole if whole[k].numel())
    assert worst <= 1e-6
    iterations = [r["iteration"] for r in read_metrics(tmp_path / "cut") if r["kind"] == "train"]
    assert iterations == list(range(1, 9)), "rows after the checkpoint are written once, not twice"
    moments = next(iter(load_checkpoint(tmp_path / "cut" / CHECKPOINT)["optimizer"]["state"].values()))
    assert ("exp_avg_sq" in moments) == (cfg.optimizer == "adamw")  # AdamW's moments travel in the checkpoint


def test_zero_init_residual_is_a_parameter():
    from featscope.training.models import initial_trunk

    assert float(initial_trunk("resnet18", 0)["layer1.0.bn2.weight"].abs().max()) == 0
    assert float(initial_trunk("resnet18", 0, zero_init_residual=False)["layer1.0.bn2.weight"].abs().min()) == 1
    assert not resolve_config("cls", "cpu-demo").zero_init_residual and resolve_config("cls", "paper").zero_init_residual


def test_checkpoint_of_another_run_is_refused(pretrain_samples, tiny, tmp_path):
    task, cfg = _task("cls", pretrain_samples, tiny, epochs=1)
    fit(task, cfg.loop(), tmp_path, identity="first")
    with pytest.raises(ValueError, match="belongs to another run"):
        fit(task, cfg.loop(), tmp_path, identity="second")


def test_checkpoint_of_another_optimiser_is_refused(pretrain_samples, tiny, tmp_path):
    task, cfg = _task("cls", pretrain_samples, tiny, epochs=2, checkpoint_every=1, optimizer="sgd")
    with pytest.raises(_Stop):
        fit(task, cfg.loop(), tmp_path, identity="same", check=_stop_after(2))
    task, cfg = _task("cls", pretrain_samples, tiny, epochs=2, checkpoint_every=1, optimizer="adamw")
    with pytest.raises(ValueError, match="made with the sgd optimiser, this run uses AdamW"):
        fit(task, cfg.loop(), tmp_path, identity="same")


class _NanAfter:
    """Wraps a task so its loss turns NaN at the ``n``-th training step."""

    def __init__(self, task, n):
        self.task, self.n, self.calls = task, n, 0

    def __getattr__(self, name):
        return getattr(self.task, name)

    def loss(self, *args):
        loss, parts = self.task.loss(*args)
        self.calls += 1
        return (loss * math.nan if self.calls >= self.n else loss), parts


def test_nan_loss_fails_clearly_and_keeps_the_last_good_checkpoint(pretrain_samples, tiny, tmp_path):
    task, cfg = _task("cls", pretrain_samples, tiny, checkpoint_every=2)
    with pytest.raises(TrainingDiverged, match=r"loss became nan at iteration 5 .*checkpoint \(iteration 4\) is kept"):
        fit(_NanAfter(task, 5), cfg.loop(), tmp_path, identity="nan")
    ckpt = load_checkpoint(tmp_path / CHECKPOINT)
    assert ckpt["iteration"] == 4
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())
    assert isinstance(TrainingDiverged("x"), ValueError)  # a worker fails the job instead of retrying it



def test_snapshot_reuses_the_last_checkpoints_buffers():
    from featscope.training.loop import snapshot

    w, m = torch.arange(6.0).reshape(2, 3), torch.ones(4)
    state = {"model": {"w": w}, "optimizer": {"state": {0: {"momentum": m}}, "groups": [{"lr": 0.1}]}, "it": 3}
    first = snapshot(state)
    assert first["model"]["w"].data_ptr() != w.data_ptr() and first["it"] == 3
    w.add_(1.0)  # training changes the weights in place; the snapshot keeps the old values
    assert torch.equal(first["model"]["w"], torch.arange(6.0).reshape(2, 3))
    buf = first["model"]["w"]
    second = snapshot(state, into=first)
    assert second["model"]["w"].data_ptr() == buf.data_ptr()  # copied into, not allocated again
    assert torch.equal(second["model"]["w"], w) and torch.equal(second["optimizer"]["state"][0]["momentum"], m)
    state["model"]["w"] = torch.zeros(3, 3)  # another shape: a new buffer
    third = snapshot(state, into=second)
    assert third["model"]["w"].shape == (3, 3) and torch.equal(third["model"]["w"], torch.zeros(3, 3))


def test_checkpoints_written_from_reused_buffers_hold_each_steps_weights(tmp_path):
    from featscope.training.loop import CheckpointWriter

    writer = CheckpointWriter()
    w = torch.zeros(1000)
    try:
        for step in range(3):
            w.fill_(step)
            writer.submit(tmp_path / f"c{step}.pt", {"w": w, "iteration": step})
        writer.wait()
    finally:
        writer.close()
    for step in range(3):
        saved = load_checkpoint(tmp_path / f"c{step}.pt")
        assert saved["iteration"] == step and torch.equal(saved["w"], torch.full((1000,), float(step)))
