"""Training runs as worker jobs: submit-time refusals, a run to done, and a cancel through the run."""

from __future__ import annotations

import threading

import pytest

from featscope.worker import jobs
from featscope.worker.queue import WorkerOptions, make_queue
from featscope.worker.tasks import execute_job

FAST = WorkerOptions(heartbeat_timeout=5.0, max_attempts=3, progress_interval=0.0)
TINY = dict(arch="resnet18", image_size=64, batch_size=4, epochs=1, num_workers=0, checkpoint_every=2, log_every=1,
            lr=0.005, threads=1)


@pytest.fixture
def study_ws(ws, tmp_path):
    ws.study_datasets(tmp_path / "sets", n_pretrain=12, n_pretrain_val=2, n_target_train=2, n_target_test=2,
                      n_probe=1, size=64)
    return ws


def test_bad_training_requests_are_refused_at_submit(ws, settings):
    queue = make_queue(settings, FAST)
    bad = [({"task": "seg", "dataset": "d"}, "task must be 'cls' or 'det'"),
           ({"task": "cls", "dataset": "d", "preset": "huge"}, "unknown preset 'huge'"),
           ({"task": "cls", "dataset": "d", "params": {"learning_rate": 1}}, "unknown training parameter"),
           ({"task": "cls", "dataset": "d", "params": {"lr": "fast"}}, "not a valid float"),
           ({"task": "cls", "dataset": "d", "classes": "a,b"}, "classes must be a list"),
           ({"task": "cls", "dataset": "d", "colour": 1}, "unknown parameter"),
           ({"task": "cls"}, "dataset must be a registered name or id")]
    for params, message in bad:
        with pytest.raises(ValueError, match=message):
            jobs.submit(ws.ctx, "train", params, queue=queue)
    with pytest.raises(ValueError, match="backbone must be a registered name"):
        jobs.submit(ws.ctx, "finetune", {"task": "det", "dataset": "d"}, queue=queue)
    with pytest.raises(ValueError, match="task must be 'cls', 'det' or 'seg', got 'pose'"):
        jobs.submit(ws.ctx, "finetune", {"task": "pose", "backbone": "b", "dataset": "d"}, queue=queue)
    assert jobs.list_jobs(ws.ctx) == []


def test_a_training_job_runs_to_a_registered_backbone(study_ws, settings):
    queue = make_queue(settings, FAST, immediate=True)
    job = jobs.submit(study_ws.ctx, "train", {"task": "cls", "dataset": "study-pretrain", "params": TINY}, queue=queue)
    job = jobs.get_job(study_ws.ctx, job.id)
    assert job.state == "done", job.error
    run = study_ws.run(job.result["run"])
    assert run.state == "done" and run.job_id == job.id and run.backbone_id == job.result["backbone_id"]
    assert "iteration 3/3" in job.message or job.progress == 1.0


def test_cancelling_the_run_cancels_its_job(study_ws, settings, monkeypatch):
    from featscope.workspace import training

    monkeypatch.setattr(training, "_HEARTBEAT_SECONDS", 0.0)
    queue = make_queue(settings, FAST)
    job = jobs.submit(study_ws.ctx, "train", {"task": "cls", "dataset": "study-pretrain",
                                              "params": {**TINY, "epochs": 30}}, queue=queue)
    worker = threading.Thread(target=execute_job, args=(study_ws.ctx, queue, job.id, FAST))
    worker.start()
    try:
        for _ in range(600):
            running = [r for r in study_ws.runs() if r.state == "running" and r.iteration >= 1]
            if running:
                break
            worker.join(0.1)
        assert running, "the run never started"
        study_ws.cancel_run(running[0].id)
    finally:
        worker.join(120)
    assert jobs.get_job(study_ws.ctx, job.id).state == "cancelled"  # not retried as an error
    assert study_ws.run(running[0].id).state == "cancelled"
