"""The reaper: running jobs whose worker died are re-queued, or failed after the last attempt."""

from __future__ import annotations

import subprocess
import sys
from datetime import timedelta

import pytest
from sqlalchemy import update

from featscope.catalog import Job
from featscope.catalog.models import utcnow
from featscope.worker import jobs
from featscope.worker.queue import WorkerOptions, make_queue
from featscope.worker.reaper import Reaper, reap, requeue_orphans
from featscope.worker.tasks import OwnershipLost, _Run, host_id

OPTS = WorkerOptions(heartbeat_timeout=30.0, max_attempts=3)


@pytest.fixture(params=["sqlite", "postgresql"])
def settings(request, settings_for):
    """Every test here runs on both catalog databases (the SQLite file and PostgreSQL)."""
    return settings_for(request.param)


@pytest.fixture
def queue(settings):
    return make_queue(settings, OPTS)


def _running(ws, queue, *, attempts: int, beat_age: float, worker: str = "elsewhere:1:abc", cancel: bool = False,
             taps=("conv5",)) -> int:
    """A job as a worker leaves it when it dies: state running, its message already taken off the queue."""
    job = jobs.submit(ws.ctx, "extract", {"backbone": "r18", "dataset": "imgs", "taps": list(taps)}, queue=queue)
    queue.flush()
    with ws.ctx.session() as s:
        s.execute(update(Job).where(Job.id == job.id).values(
            state="running", attempts=attempts, worker=worker, started_at=utcnow() - timedelta(seconds=beat_age),
            heartbeat_at=utcnow() - timedelta(seconds=beat_age), cancel_requested=cancel))
    return job.id


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_job_with_a_stale_heartbeat_is_requeued_and_a_fresh_one_is_left_alone(ws, queue):
    stale = _running(ws, queue, attempts=1, beat_age=120, taps=["conv5"])
    fresh = _running(ws, queue, attempts=1, beat_age=1, taps=["conv4"])
    assert reap(ws.ctx, queue, OPTS) == [stale]
    job = jobs.get_job(ws.ctx, stale)
    assert job.state == "queued" and "worker died (no heartbeat from worker elsewhere:1:abc" in job.message
    assert "re-queued" in job.log_tail
    assert [t.args for t in queue.pending()] == [(stale,)]  # back on the queue, to resume from its shards
    assert jobs.get_job(ws.ctx, fresh).state == "running"
    assert reap(ws.ctx, queue, OPTS) == []  # nothing left to do; a second reaper changes nothing


def test_after_the_last_attempt_a_dead_worker_fails_the_job_with_the_reason(ws, queue):
    job_id = _running(ws, queue, attempts=3, beat_age=120)
    assert reap(ws.ctx, queue, OPTS) == [job_id]
    job = jobs.get_job(ws.ctx, job_id)
    assert job.state == "failed" and job.finished_at is not None
    assert job.error.startswith("worker died (no heartbeat") and "attempt 3 of 3; giving up" in job.error
    assert queue.pending_count() == 0


def test_a_dead_worker_of_a_job_asked_to_cancel_leaves_it_cancelled(ws, queue):
    job_id = _running(ws, queue, attempts=1, beat_age=120, cancel=True)
    reap(ws.ctx, queue, OPTS)
    assert jobs.get_job(ws.ctx, job_id).state == "cancelled" and queue.pending_count() == 0


def test_a_dead_process_on_this_host_is_noticed_without_waiting_for_the_timeout(ws, queue):
    job_id = _running(ws, queue, attempts=1, beat_age=0, worker=f"{host_id()}:{_dead_pid()}:abc")
    assert reap(ws.ctx, queue, OPTS) == [job_id]
    assert "is no longer running" in jobs.get_job(ws.ctx, job_id).message


def test_a_run_that_lost_its_job_to_the_reaper_stops_without_writing(ws, queue):
    job_id = _running(ws, queue, attempts=1, beat_age=120, worker="elsewhere:1:abc")
    with ws.ctx.session() as s:
        row = s.get(Job, job_id)
    run = _Run(ws.ctx, row, "elsewhere:1:abc", WorkerOptions(progress_interval=0.0))
    reap(ws.ctx, queue, OPTS)  # it looked dead, but was only slow
    with pytest.raises(OwnershipLost):
        run.progress(0.9, "still here")
    assert not run.finish("done", message="done", result={"x": 1})
    job = jobs.get_job(ws.ctx, job_id)
    assert job.state == "queued" and job.result == {} and job.progress == 0.0


def test_the_reaper_thread_runs_at_start(ws, queue, waiter):
    job_id = _running(ws, queue, attempts=1, beat_age=120)
    reaper = Reaper(ws.ctx, queue, OPTS)
    reaper.start()
    try:
        waiter(lambda: jobs.get_job(ws.ctx, job_id).state == "queued", 10, "the reaper's first pass")
    finally:
        reaper.stop_event.set()
        reaper.join(timeout=5)
    assert not reaper.is_alive()


def test_a_queued_job_whose_message_was_lost_is_enqueued_again_on_the_second_pass(ws, queue):
    kept = jobs.submit(ws.ctx, "extract", {"backbone": "r18", "dataset": "imgs", "taps": ["conv5"]}, queue=queue)
    lost = jobs.submit(ws.ctx, "extract", {"backbone": "r18", "dataset": "imgs", "taps": ["conv4"]}, queue=queue)
    # The queue loses one message (a deleted queue file, a Redis restart without persistence).
    survivors = [t for t in queue.pending() if t.args != (lost.id,)]
    queue.flush()
    for task in survivors:
        queue.enqueue(task)
    seen: dict = {}
    assert requeue_orphans(ws.ctx, queue, seen) == []  # first sighting: it may just be being dequeued
    with ws.ctx.session() as s:
        assert seen == {lost.id: s.get(Job, lost.id).task_id}
    assert requeue_orphans(ws.ctx, queue, seen) == [lost.id]
    assert sorted(t.args for t in queue.pending()) == [(kept.id,), (lost.id,)]
    assert "queue message was lost" in jobs.get_job(ws.ctx, lost.id).log_tail
    assert requeue_orphans(ws.ctx, queue, seen) == [] and seen == {}  # both have messages now


def test_a_job_claimed_between_two_passes_is_not_enqueued_again(ws, queue):
    job = jobs.submit(ws.ctx, "extract", {"backbone": "r18", "dataset": "imgs", "taps": ["conv5"]}, queue=queue)
    queue.flush()  # a worker took the message ...
    seen: dict = {}
    assert requeue_orphans(ws.ctx, queue, seen) == []
    with ws.ctx.session() as s:  # ... and claimed the job before the next pass
        s.execute(update(Job).where(Job.id == job.id).values(state="running", worker="elsewhere:1:abc"))
    assert requeue_orphans(ws.ctx, queue, seen) == [] and queue.pending_count() == 0


def test_a_job_stuck_in_a_live_worker_fails_after_the_stall_timeout(ws, queue):
    """Heartbeat fresh on every pass (the worker's beat thread is alive), progress frozen: failed with the reason
    once the stall timeout has passed since the progress last moved; a moving job is left alone."""
    from featscope.worker.reaper import fail_stalled

    opts = WorkerOptions(heartbeat_timeout=30.0, max_attempts=3, stall_timeout=600.0)
    stuck = _running(ws, queue, attempts=1, beat_age=0, taps=["conv5"])
    moving = _running(ws, queue, attempts=1, beat_age=0, taps=["conv4"])
    seen: dict = {}
    t0 = utcnow()
    for minutes in (0, 5, 9):
        with ws.ctx.session() as s:
            s.execute(update(Job).where(Job.id == moving).values(progress=minutes / 10, message=f"step {minutes}"))
        assert fail_stalled(ws.ctx, opts, seen, now=t0 + timedelta(minutes=minutes)) == []
    assert reap(ws.ctx, queue, opts) == []  # the heartbeats are fresh: not dead
    assert fail_stalled(ws.ctx, opts, seen, now=t0 + timedelta(minutes=11)) == [stuck]
    job = jobs.get_job(ws.ctx, stuck)
    assert job.state == "failed" and "no progress for over 600 s" in job.error and "STALL_TIMEOUT" in job.error
    assert jobs.get_job(ws.ctx, moving).state == "running" and queue.pending_count() == 0
    # progress that moves restarts the clock; no limit means never
    assert fail_stalled(ws.ctx, opts, seen, now=t0 + timedelta(minutes=18)) == []
    assert fail_stalled(ws.ctx, WorkerOptions(stall_timeout=None), seen, now=t0 + timedelta(days=9)) == []
    assert fail_stalled(ws.ctx, opts, seen, now=t0 + timedelta(minutes=20)) == [moving]


def test_worker_options_from_the_environment(monkeypatch):
    monkeypatch.setenv("FEATSCOPE_JOB_STALL_TIMEOUT", "0")
    monkeypatch.setenv("FEATSCOPE_JOB_HEARTBEAT_TIMEOUT", "12.5")
    opts = WorkerOptions.from_env()
    assert opts.stall_timeout is None and opts.heartbeat_timeout == 12.5 and opts.max_attempts == 3
    monkeypatch.setenv("FEATSCOPE_JOB_MAX_ATTEMPTS", "many")
    with pytest.raises(ValueError, match="FEATSCOPE_JOB_MAX_ATTEMPTS"):
        WorkerOptions.from_env()
