"""Real ``featscope worker`` processes, with the catalog on SQLite and on PostgreSQL: a consumer runs jobs, a
SIGKILLed worker's job resumes on the next worker with the same result, and two workers on one Redis queue
never run a job twice."""

from __future__ import annotations

import re

import numpy as np
import pytest

from featscope.worker import jobs
from featscope.worker.queue import make_queue
from featscope.worker.tasks import host_id
from featscope.workspace import Workspace


@pytest.fixture(params=["sqlite", "postgresql"])
def settings(request, settings_for):
    """Every topology here runs with the catalog on SQLite and on PostgreSQL."""
    return settings_for(request.param)


def _shards(settings) -> list:
    return sorted(settings.data_dir.rglob("shard-*.npz"))


@pytest.fixture
def many(settings, make_images, tmp_path):
    """A workspace with 24 images, 2 per batch and 4 per shard (6 shards), and the r18 backbone."""
    from featscope.extractors.types import Preprocess

    settings = settings.model_copy(update={"batch_size": 2, "shard_size": 4})
    ws = Workspace(settings)
    folder = make_images(tmp_path / "many", {"a": 12, "b": 12}, size=40)
    ws.add_dataset(folder, name="many")
    ws.add_backbone("torchvision:resnet18", random_init=True, name="r18", preprocess=Preprocess(resize=40, crop=32))
    return ws, folder


def test_a_worker_killed_mid_extraction_is_replaced_and_the_job_resumes_to_the_same_result(many, start_worker,
                                                                                          waiter, tmp_path):
    ws, folder = many
    st = ws.settings
    queue = make_queue(st)
    first = start_worker(st, step_delay=0.4)  # 12 batches: about 5 s of work
    job = jobs.submit(ws.ctx, "extract", {"backbone": "r18", "dataset": "many", "taps": ["conv5", "conv3"]},
                      queue=queue)
    waiter(lambda: len(_shards(st)) >= 2, 90, "two extraction shards on disk")
    running = jobs.get_job(ws.ctx, job.id)
    assert running.state == "running" and 0 < running.progress < 1, running
    first.kill()  # SIGKILL: no chance to clean up; Huey had already taken the message off the queue
    assert jobs.get_job(ws.ctx, job.id).state == "running"
    kept = len(_shards(st))

    second = start_worker(st)
    done = waiter(lambda: (j := jobs.get_job(ws.ctx, job.id)).state in ("done", "failed") and j, 90,
                  "the job to finish on the second worker")
    assert done.state == "done", done.error
    assert done.attempts == 2 and done.progress == 1.0
    # noticed as a dead process on this host, or (on a loaded machine) as a missed heartbeat first
    assert re.search(rf"worker died \((no heartbeat from )?worker {re.escape(host_id())}:{first.pid}:", done.log_tail)
    assert f"resumed: {kept} shard(s)" in done.log_tail or f"resumed: {kept - 1} shard(s)" in done.log_tail
    assert str(second.pid) in done.log_tail

    # the same extraction, uninterrupted, in a fresh data dir
    ref = Workspace(st.model_copy(update={"data_dir": tmp_path / "reference", "database_url": None}))
    ref.add_dataset(folder, name="many")
    ref.add_backbone("torchvision:resnet18", random_init=True, name="r18", preprocess=ws.load_backbone("r18").preprocess)
    want = ref.extract("r18", "many", taps=["conv5", "conv3"])
    for got_id, ref_set in zip(done.result["embedding_sets"], want):
        got, exp = ws.load_embeddings(got_id), ref.load_embeddings(ref_set.id)
        assert got.relpaths == exp.relpaths
        np.testing.assert_allclose(got.vectors, exp.vectors, rtol=1e-5, atol=1e-6)


def test_two_workers_on_redis_share_a_queue_and_run_each_job_once(prepared, redis_url, start_worker, waiter):
    st = prepared.settings.model_copy(update={"redis_url": redis_url})
    queue = make_queue(st)
    assert type(queue).__name__ == "RedisHuey"
    workers = [start_worker(st, step_delay=0.15) for _ in range(2)]
    for w in workers:
        w.wait_ready()
    requests = [{"backbone": "r18", "dataset": "imgs", "taps": [t], "poolings": [p]}
                for t in ("conv2", "conv3", "conv4", "conv5") for p in ("avg", "max")]
    submitted = [jobs.submit(prepared.ctx, "extract", r, queue=queue) for r in requests]
    assert len({j.id for j in submitted}) == len(requests)
    assert jobs.submit(prepared.ctx, "extract", requests[-1], queue=queue).id == submitted[-1].id  # still queued

    def finished():
        states = [jobs.get_job(prepared.ctx, j.id) for j in submitted]
        return all(s.state in ("done", "failed", "cancelled") for s in states) and states

    final = waiter(finished, 120, "all jobs to finish", interval=0.3)
    assert [j.state for j in final] == ["done"] * len(requests), [j.error for j in final]
    assert all(j.attempts == 1 and j.log_tail.count("started on") == 1 for j in final)
    ran_on = {line.split(" started on ")[1].split(":")[1] for j in final for line in j.log_tail.splitlines()
              if " started on " in line}
    assert ran_on == {str(w.pid) for w in workers}  # both workers took jobs
    assert len({s for j in final for s in j.result["embedding_sets"]}) == len(requests)
    assert queue.pending_count() == 0


def test_a_worker_stopped_with_sigterm_gives_its_running_job_back_at_once(prepared, start_worker, waiter):
    st = prepared.settings
    worker = start_worker(st, heartbeat_timeout=60.0, step_delay=0.5)
    job = jobs.submit(prepared.ctx, "extract", {"backbone": "r18", "dataset": "imgs"}, queue=make_queue(st))
    waiter(lambda: jobs.get_job(prepared.ctx, job.id).progress > 0, 60, "the job to start")
    worker.proc.terminate()
    worker.proc.wait(timeout=20)
    back = jobs.get_job(prepared.ctx, job.id)
    assert back.state == "queued" and "the worker was stopped" in back.message, back
    assert make_queue(st).pending_count() == 1  # its message is back for the next worker
