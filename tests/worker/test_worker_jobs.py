"""Jobs in-process: submit checks and de-duplication, runs in Huey's immediate mode, failures,
retries, cancellation. Real consumer processes are in test_worker_processes.py."""

from __future__ import annotations

import threading
import time

import pytest

from featscope.worker import jobs
from featscope.worker.kinds import KINDS, JobKind
from featscope.worker.queue import WorkerOptions, make_queue
from featscope.worker.tasks import execute_job
from featscope.workspace import NotFound

FAST = WorkerOptions(heartbeat_timeout=1.0, max_attempts=3, progress_interval=0.0)


@pytest.fixture(params=["sqlite", "postgresql"])
def settings(request, settings_for):
    """Every test here runs on both catalog databases (the SQLite file and PostgreSQL)."""
    return settings_for(request.param)


@pytest.fixture
def queue(settings):
    """The SQLite queue in the data dir, with no consumer: submitted jobs stay queued."""
    return make_queue(settings, FAST)


@pytest.fixture
def immediate(settings):
    """A queue in Huey's immediate mode: a submitted job runs in this thread before ``submit`` returns."""
    return make_queue(settings, FAST, immediate=True)


def _kind(monkeypatch, name: str, run) -> None:
    monkeypatch.setitem(KINDS, name, JobKind(lambda p: dict(p), run))


# ---------------------------------------------------------------- errors first
def test_bad_requests_are_refused_at_submit_with_the_fix(ws, queue):
    with pytest.raises(ValueError, match=r"unknown job kind 'nope'; choose from analysis, (.*, )?dataset-add, (.*, )?extract"):
        jobs.submit(ws.ctx, "nope", {}, queue=queue)
    with pytest.raises(ValueError, match="needs 'path', an absolute path"):
        jobs.submit(ws.ctx, "dataset-add", {"path": "relative/folder"}, queue=queue)
    with pytest.raises(ValueError, match="format must be one of"):
        jobs.submit(ws.ctx, "dataset-add", {"path": "/data/x", "format": "tar"}, queue=queue)
    with pytest.raises(ValueError, match="extract needs 'backbone'"):
        jobs.submit(ws.ctx, "extract", {"dataset": "imgs"}, queue=queue)
    with pytest.raises(ValueError, match="does not take colour"):
        jobs.submit(ws.ctx, "extract", {"backbone": "r18", "dataset": "imgs", "colour": 1}, queue=queue)
    with pytest.raises(ValueError, match="precision must be"):
        jobs.submit(ws.ctx, "extract", {"backbone": "r18", "dataset": "imgs", "precision": "fp8"}, queue=queue)
    with pytest.raises(ValueError, match="analysis must be one of"):
        jobs.submit(ws.ctx, "analysis", {"analysis": "magic", "inputs": [1]}, queue=queue)
    with pytest.raises(ValueError, match="takes 2 input"):
        jobs.submit(ws.ctx, "analysis", {"analysis": "similarity", "inputs": [1]}, queue=queue)
    with pytest.raises(ValueError, match="bad parameters for probe"):
        jobs.submit(ws.ctx, "analysis", {"analysis": "probe", "inputs": [1], "params": {"kk": 3}}, queue=queue)
    with pytest.raises(ValueError, match="cannot be set"):
        jobs.submit(ws.ctx, "analysis", {"analysis": "probe", "inputs": [1], "params": {"on_message": 1}}, queue=queue)
    assert jobs.list_jobs(ws.ctx) == []


def test_unknown_job_and_bad_listing_say_what_to_do(ws):
    with pytest.raises(NotFound, match="featscope jobs list"):
        jobs.get_job(ws.ctx, 99)
    with pytest.raises(NotFound, match="GET /api/v1/jobs"):
        jobs.cancel_job(ws.ctx, 99)
    with pytest.raises(ValueError, match="state must be one of"):
        jobs.list_jobs(ws.ctx, state="sleeping")
    with pytest.raises(ValueError, match="limit"):
        jobs.list_jobs(ws.ctx, limit=0)


# ---------------------------------------------------------------- submit and de-duplication
def test_the_same_request_while_queued_returns_the_same_job(ws, queue):
    a = jobs.submit(ws.ctx, "extract", {"backbone": "r18", "dataset": "imgs"}, queue=queue)
    assert a.state == "queued" and a.attempts == 0 and a.progress == 0.0
    assert a.params == {"backbone": "r18", "dataset": "imgs", "taps": ["conv5"], "poolings": ["avg"],
                        "precision": None, "batch_size": None}
    # spelt out with the defaults, it is the same request
    same = jobs.submit(ws.ctx, "extract", {"dataset": "imgs", "backbone": "r18", "taps": "conv5", "poolings": ["avg"]},
                       queue=queue)
    assert same.id == a.id
    other = jobs.submit(ws.ctx, "extract", {"backbone": "r18", "dataset": "imgs", "taps": ["conv4"]}, queue=queue)
    assert other.id != a.id
    assert queue.pending_count() == 2  # one message per job, holding only its id
    assert [t.args for t in queue.pending()] == [(a.id,), (other.id,)]
    assert [j.id for j in jobs.list_jobs(ws.ctx)] == [other.id, a.id]
    assert [j.id for j in jobs.list_jobs(ws.ctx, limit=1, offset=1)] == [a.id]

    cancelled = jobs.cancel_job(ws.ctx, a.id, queue=queue)
    assert cancelled.state == "cancelled" and cancelled.finished_at is not None
    again = jobs.submit(ws.ctx, "extract", {"backbone": "r18", "dataset": "imgs"}, queue=queue)
    assert again.id not in (a.id, other.id) and again.state == "queued"
    assert [j.id for j in jobs.list_jobs(ws.ctx, state="cancelled")] == [a.id]


def test_a_cancelled_queued_job_is_never_run(prepared, queue):
    job = jobs.submit(prepared.ctx, "extract", {"backbone": "r18", "dataset": "imgs"}, queue=queue)
    jobs.cancel_job(prepared.ctx, job.id, queue=queue)
    execute_job(prepared.ctx, queue, job.id, FAST)  # a message that was already dequeued still arrives
    after = jobs.get_job(prepared.ctx, job.id)
    assert after.state == "cancelled" and after.attempts == 0 and prepared.embedding_sets() == []


# ---------------------------------------------------------------- runs
def test_an_extraction_job_runs_to_done_with_the_same_embeddings_as_the_api(prepared, immediate, settings):
    job = jobs.submit(prepared.ctx, "extract", {"backbone": "r18", "dataset": "imgs", "taps": ["conv5", "conv4"]},
                      queue=immediate)
    assert job.state == "done", job.error
    assert job.progress == 1.0 and job.attempts == 1 and job.error is None
    assert job.started_at and job.finished_at and job.created_at <= job.started_at <= job.finished_at
    assert "attempt 1 of 3 started" in job.log_tail and "extracting" in job.log_tail
    sets = prepared.extract("r18", "imgs", taps=["conv5", "conv4"])  # the API now finds them cached
    assert all(s.cached for s in sets)
    assert job.result["embedding_sets"] == [s.id for s in sets]
    assert prepared.load_embeddings(sets[0].id).vectors.shape == (16, 512)
    # a finished job does not block a new request (which is then a cache hit)
    again = jobs.submit(prepared.ctx, "extract", {"backbone": "r18", "dataset": "imgs", "taps": ["conv5", "conv4"]},
                        queue=immediate)
    assert again.id != job.id and again.state == "done" and again.result["cached"] == [True, True]


def test_an_analysis_job_stores_its_analysis(prepared, immediate):
    a, b = prepared.extract("r18", "imgs", taps=["conv4", "conv5"])
    job = jobs.submit(prepared.ctx, "analysis", {"analysis": "similarity", "inputs": [a.id, b.id],
                                                 "params": {"k": 3}}, queue=immediate)
    assert job.state == "done", job.error
    res = prepared.similarity(a.id, b.id, k=3)
    assert res.cached and job.result == {"analysis_id": res.id, "kind": "similarity", "cached": False}
    cka = jobs.submit(prepared.ctx, "analysis", {"analysis": "cka-matrix", "inputs": ["r18", "r18", "imgs"]},
                      queue=immediate)
    assert cka.state == "failed" and "different backbones" in cka.error and cka.attempts == 1


def test_a_user_error_fails_at_once_with_the_reason(ws, immediate):
    job = jobs.submit(ws.ctx, "extract", {"backbone": "missing", "dataset": "imgs"}, queue=immediate)
    assert job.state == "failed" and job.attempts == 1
    assert "featscope backbone add" in job.error and job.finished_at is not None
    assert "failed:" in job.log_tail


def test_other_errors_are_retried_then_fail_with_the_reason(ws, immediate, monkeypatch):
    calls = []

    def flaky(ctx, params, report):
        calls.append(1)
        if len(calls) < params["succeed_on"]:
            raise RuntimeError(f"transient {len(calls)}")
        report.progress(0.5, "half way")
        return {"calls": len(calls)}

    _kind(monkeypatch, "flaky", flaky)
    ok = jobs.submit(ws.ctx, "flaky", {"succeed_on": 2}, queue=immediate)
    assert ok.state == "done" and ok.attempts == 2 and ok.result == {"calls": 2}
    assert "retrying after: RuntimeError: transient 1" in ok.log_tail

    calls.clear()
    bad = jobs.submit(ws.ctx, "flaky", {"succeed_on": 10}, queue=immediate)
    assert bad.state == "failed" and bad.attempts == 3 and len(calls) == 3
    assert bad.error == "failed after 3 attempt(s): RuntimeError: transient 3"


def test_a_job_cancelled_while_running_that_then_errors_ends_cancelled_not_requeued(ws, immediate, monkeypatch):
    def cancel_then_fail(ctx, params, report):
        jobs.cancel_job(ctx, report.job_id, queue=immediate)  # the user cancels; the run errors before it checks
        raise RuntimeError("lost the GPU")

    _kind(monkeypatch, "cancel_then_fail", cancel_then_fail)
    job = jobs.submit(ws.ctx, "cancel_then_fail", {}, queue=immediate)
    assert job.state == "cancelled" and job.attempts == 1 and job.finished_at is not None
    assert "cancelled after an error: RuntimeError: lost the GPU" in job.log_tail
    assert immediate.pending_count() == 0


def test_a_running_job_stops_at_its_next_progress_update_when_cancelled(ws, queue, monkeypatch, waiter):
    steps = []

    def slow(ctx, params, report):
        for i in range(400):
            steps.append(i)
            report.progress(i / 400, f"step {i}")
            time.sleep(0.02)
        return {}

    _kind(monkeypatch, "slow", slow)
    job = jobs.submit(ws.ctx, "slow", {}, queue=queue)
    runner = threading.Thread(target=execute_job, args=(ws.ctx, queue, job.id, FAST))
    runner.start()
    waiter(lambda: jobs.get_job(ws.ctx, job.id).progress > 0.01, 10, "the job to report progress")
    assert jobs.get_job(ws.ctx, job.id).state == "running"
    asked = jobs.cancel_job(ws.ctx, job.id, queue=queue)
    assert asked.state == "running" and "cancel requested" in asked.message
    runner.join(timeout=10)
    assert not runner.is_alive()
    done = jobs.get_job(ws.ctx, job.id)
    assert done.state == "cancelled" and "cancelled while running" in done.log_tail and len(steps) < 400


def test_a_progress_write_after_a_cancel_request_keeps_saying_cancel_requested(ws, queue, monkeypatch):
    seen = []

    def noisy(ctx, params, report):
        report.progress(0.1, "step 1")
        jobs.cancel_job(ctx, report.job_id, queue=queue)  # the user cancels between two progress writes
        # a write already on its way when the flag landed (set directly: report.progress() would also check the
        # cancel flag and may stop the run before the write this test is about)
        report._progress = (0.2, "step 2")
        report.flush()
        now = jobs.get_job(ctx, report.job_id)
        seen.append((now.message, now.progress))
        return {}

    _kind(monkeypatch, "noisy", noisy)
    job = jobs.submit(ws.ctx, "noisy", {}, queue=queue)
    execute_job(ws.ctx, queue, job.id, FAST)
    assert seen and "cancel requested" in seen[0][0] and seen[0][1] == 0.2, seen  # progress moves, the message stays


def test_progress_writes_are_throttled(ws, settings, monkeypatch):
    seen = []

    def chatty(ctx, params, report):
        for i in range(200):
            report.progress(i / 200, f"step {i}")
        return {}

    _kind(monkeypatch, "chatty", chatty)
    import featscope.worker.tasks as tasks

    original = tasks._Run._write
    monkeypatch.setattr(tasks._Run, "_write", lambda self, values, lines: seen.append(values) or original(self, values, lines))
    q = make_queue(settings, WorkerOptions(progress_interval=0.5), immediate=True)
    job = jobs.submit(ws.ctx, "chatty", {}, queue=q)
    assert job.state == "done" and job.progress == 1.0
    assert len(seen) <= 5  # 200 updates in well under a second: a handful of writes, not 200


def test_two_submits_racing_past_the_check_still_make_one_job(ws, queue, monkeypatch):
    first = jobs.submit(ws.ctx, "extract", {"backbone": "r18", "dataset": "imgs"}, queue=queue)
    real, calls = jobs._active_with_key, []

    def blind_once(ctx, key):  # the second request checked before the first one's row was committed
        calls.append(key)
        return None if len(calls) == 1 else real(ctx, key)

    monkeypatch.setattr(jobs, "_active_with_key", blind_once)
    second = jobs.submit(ws.ctx, "extract", {"backbone": "r18", "dataset": "imgs"}, queue=queue)
    assert second.id == first.id and len(calls) == 2
    assert [j.id for j in jobs.list_jobs(ws.ctx)] == [first.id] and queue.pending_count() == 1
