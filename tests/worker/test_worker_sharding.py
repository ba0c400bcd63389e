"""One extraction, many workers: an extraction over many images is split into shard jobs by image range that
any worker may claim, assembled into embedding sets equal (bitwise, on CPU) to a single worker's run; one
number tracks the whole extraction; a worker killed mid-shard costs that shard only."""

from __future__ import annotations

import re

import pytest
import torch

from featscope.extractors.types import Preprocess
from featscope.worker import jobs
from featscope.worker.queue import WorkerOptions, make_queue
from featscope.worker.tasks import execute_job
from featscope.workspace import Workspace

FAST = WorkerOptions(heartbeat_timeout=5.0, max_attempts=3, progress_interval=0.0)
TAPS = ["conv5", "conv3"]


@pytest.fixture(params=["sqlite", "postgresql"])
def settings(request, settings_for):
    """24 images, 2 per batch, 4 per shard (6 shards); more than 8 images is split into jobs of 8 (3 jobs)."""
    return settings_for(request.param).model_copy(update={"batch_size": 2, "shard_size": 4,
                                                          "extract_job_images": 8})


def _world(settings, folder) -> Workspace:
    ws = Workspace(settings)
    ws.add_dataset(folder, name="many")
    ws.add_backbone("torchvision:resnet18", random_init=True, name="r18", preprocess=Preprocess(resize=40, crop=32))
    return ws


@pytest.fixture
def many(settings, make_images, tmp_path):
    folder = make_images(tmp_path / "many", {"a": 12, "b": 12}, size=40)
    return _world(settings, folder), folder


def _single_worker_reference(ws: Workspace, folder, tmp_path) -> list:
    """The same extraction run whole by one worker (no split) with one thread, as the worker processes use."""
    ref = _world(ws.settings.model_copy(update={"data_dir": tmp_path / "reference", "database_url": None,
                                                "extract_job_images": 10**6}), folder)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return [ref.load_embeddings(s.id) for s in ref.extract("r18", "many", taps=TAPS)]
    finally:
        torch.set_num_threads(threads)


def _assert_bitwise_equal(ws: Workspace, set_ids: list[int], reference: list) -> None:
    assert len(set_ids) == len(reference) == len(TAPS)
    for set_id, exp in zip(set_ids, reference):
        got = ws.load_embeddings(set_id)
        assert got.relpaths == exp.relpaths and got.vectors.shape == exp.vectors.shape
        assert got.vectors.tobytes() == exp.vectors.tobytes()


def _children(ws: Workspace, parent: int) -> list:
    return sorted((j for j in jobs.list_jobs(ws.ctx, limit=1000) if j.parent_id == parent), key=lambda j: j.id)


def test_one_worker_alone_runs_every_shard_job_of_a_split_extraction(many, tmp_path):
    """No other worker takes the shard jobs: the parent runs them in its own thread, then assembles."""
    ws, folder = many
    queue = make_queue(ws.settings, FAST)
    job = jobs.submit(ws.ctx, "extract", {"backbone": "r18", "dataset": "many", "taps": TAPS}, queue=queue)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        execute_job(ws.ctx, queue, job.id, FAST)
    finally:
        torch.set_num_threads(threads)
    done = jobs.get_job(ws.ctx, job.id)
    assert done.state == "done" and done.progress == 1.0, done.error
    children = _children(ws, job.id)
    assert [(c.kind, c.state, c.params["start"], c.params["stop"]) for c in children] == \
        [("extract-shard", "done", 0, 8), ("extract-shard", "done", 8, 16), ("extract-shard", "done", 16, 24)]
    assert all(c.result["computed"] == 2 and c.result["resumed"] == 0 for c in children)
    assert "split 24 images into 3 shard job(s) of up to 8 images" in done.log_tail
    assert "resumed: 6 shard(s)" in done.log_tail  # assembling recomputed nothing
    _assert_bitwise_equal(ws, done.result["embedding_sets"], _single_worker_reference(ws, folder, tmp_path))
    assert not list((ws.settings.artifacts_dir / "_work" / "extraction").glob("*/shard-*"))  # shards cleared
    # asked again: a cache hit, no new shard jobs
    again = jobs.submit(ws.ctx, "extract", {"backbone": "r18", "dataset": "many", "taps": TAPS}, queue=queue)
    execute_job(ws.ctx, queue, again.id, FAST)
    assert jobs.get_job(ws.ctx, again.id).result["cached"] == [True, True] and _children(ws, again.id) == []


def test_a_shard_job_outliving_its_extraction_does_nothing(many):
    ws, _ = many
    queue = make_queue(ws.settings, FAST)
    parent = jobs.submit(ws.ctx, "extract", {"backbone": "r18", "dataset": "many"}, queue=queue)
    jobs.cancel_job(ws.ctx, parent.id, queue=queue)
    child = jobs.submit(ws.ctx, "extract-shard", {
        "backbone": 1, "dataset": 1, "taps": ["layer4"], "poolings": ["avg"], "precision": "fp32", "batch_size": 2,
        "shard_size": 4, "run": "0" * 64, "start": 0, "stop": 8, "parent": parent.id}, queue=queue, parent=parent.id)
    execute_job(ws.ctx, queue, child.id, FAST)
    out = jobs.get_job(ws.ctx, child.id)
    assert out.state == "done" and out.result == {"skipped": f"its extraction job {parent.id} is cancelled"}
    with pytest.raises(ValueError, match="submitted by an extract job"):
        jobs.submit(ws.ctx, "extract-shard", {"backbone": 1}, queue=queue)
    with pytest.raises(ValueError, match="64-hex-digit"):
        jobs.submit(ws.ctx, "extract-shard", {**out.params, "run": "x"}, queue=queue)


def test_two_workers_on_redis_share_one_extraction_and_match_a_single_worker_bitwise(many, redis_url, start_worker,
                                                                                      waiter, tmp_path):
    ws, folder = many
    st = ws.settings.model_copy(update={"redis_url": redis_url})
    queue = make_queue(st)
    workers = [start_worker(st, step_delay=0.3) for _ in range(2)]
    for w in workers:
        w.wait_ready()
    job = jobs.submit(ws.ctx, "extract", {"backbone": "r18", "dataset": "many", "taps": TAPS}, queue=queue)
    seen: list[float] = []

    def finished():
        j = jobs.get_job(ws.ctx, job.id)
        seen.append(j.progress)
        return j.state in ("done", "failed", "cancelled") and j

    done = waiter(finished, 180, "the split extraction to finish", interval=0.1)
    assert done.state == "done", done.error
    children = _children(ws, job.id)
    assert len(children) == 3 and all(c.state == "done" and c.attempts == 1 for c in children)
    ran_on = {re.search(r"started on [^:]+:(\d+):", c.log_tail).group(1) for c in children}
    assert ran_on == {str(w.pid) for w in workers}  # both workers computed shards
    assert sum(c.result["computed"] for c in children) == 6  # every shard computed exactly once
    # one number for the whole extraction: in [0, 1], never going back, 1 at the end
    assert seen == sorted(seen) and 0 < min(p for p in seen if p > 0) < 1 and seen[-1] == 1.0
    assert len({p for p in seen if 0 < p < 1}) >= 2
    _assert_bitwise_equal(ws, done.result["embedding_sets"], _single_worker_reference(ws, folder, tmp_path))


def test_a_worker_killed_mid_shard_costs_that_shard_only(many, redis_url, start_worker, waiter, tmp_path):
    """Shard jobs of 3 shards; the worker running one of them (not the parent) is SIGKILLed after its first
    shard: the other worker re-runs that job, keeps the finished shard and computes the rest."""
    ws, folder = many
    st = ws.settings.model_copy(update={"redis_url": redis_url, "extract_job_images": 12})
    ws = Workspace(st)
    queue = make_queue(st)
    workers = {w.pid: w for w in (start_worker(st, step_delay=0.5) for _ in range(2))}
    for w in workers.values():
        w.wait_ready()
    job = jobs.submit(ws.ctx, "extract", {"backbone": "r18", "dataset": "many", "taps": TAPS}, queue=queue)
    work = st.artifacts_dir / "_work" / "extraction"

    def victim():
        """A shard job running on the worker that is not the parent's, with 1 of its 3 shards on disk."""
        parent = jobs.get_job(ws.ctx, job.id)
        with ws.ctx.session() as s:
            from featscope.catalog import Job

            rows = {r.id: r.worker for r in s.query(Job).filter(Job.state == "running")}
        parent_pid = (rows.get(job.id) or "::").split(":")[1]
        for c in _children(ws, parent.id):
            pid = (rows.get(c.id) or "::").split(":")[1]
            if c.state == "running" and pid and pid != parent_pid:
                first = c.params["start"] // 4
                have = [i for i in range(first, first + 3) if list(work.glob(f"*/shard-{i:05d}.npz"))]
                if have == [first]:
                    return c, int(pid), have
        return None

    child, pid, kept = waiter(victim, 120, "a shard job half-done on the other worker", interval=0.05)
    workers[pid].kill()
    done = waiter(lambda: (j := jobs.get_job(ws.ctx, job.id)).state in ("done", "failed") and j, 180,
                  "the extraction to finish without the killed worker")
    assert done.state == "done", done.error
    redone = jobs.get_job(ws.ctx, child.id)
    assert redone.state == "done" and redone.attempts == 2
    assert re.search(rf"worker died \((no heartbeat from )?worker [^ ]+:{pid}:", redone.log_tail)
    # the finished shard was kept; only the shard being computed (and any not started) were run again
    assert redone.result["resumed"] in (len(kept), len(kept) + 1), redone.log_tail
    assert redone.result["resumed"] + redone.result["computed"] == 3
    others = [c for c in _children(ws, job.id) if c.id != child.id]
    assert all(c.attempts == 1 and c.result["resumed"] == 0 and c.result["computed"] == 3 for c in others)
    _assert_bitwise_equal(ws, done.result["embedding_sets"], _single_worker_reference(ws, folder, tmp_path))
