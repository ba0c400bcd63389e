"""The job queue: an embedded ``SqliteHuey`` in the data dir, or ``RedisHuey`` for many workers and hosts.

Queue messages carry only a job id; everything else (kind, parameters, state, progress) lives in the
catalog's ``jobs`` table, which is the source of truth. A lost message (a worker killed after Huey
dequeued it) is therefore recoverable: the reaper sees the job's stale heartbeat and re-queues it.
"""

from __future__ import annotations

from dataclasses import dataclass

import huey

from featscope.config import Settings

QUEUE_NAME = "featscope"
QUEUE_FILE = "queue.sqlite"


@dataclass(frozen=True)
class WorkerOptions:
    """How workers keep jobs alive and recover them.

    ``heartbeat_timeout``: a running job whose heartbeat is older than this (seconds) belongs to a dead
    worker. ``stall_timeout``: a running job whose progress (fraction and message) has not changed for
    this long, although its worker still beats, is stuck (a deadlock, an endless loop) and is failed with
    the reason; ``None`` or 0 for no limit. ``max_attempts``: runs of one job (first run, retries after errors, re-runs after a worker
    died) before it is marked failed. ``step_delay``: test hook, seconds slept at every progress update
    so a test can kill a worker mid-job; keep it 0.
    """

    heartbeat_timeout: float = 60.0
    max_attempts: int = 3
    stall_timeout: float | None = 3600.0  # a running job whose progress has not moved this long is failed
    progress_interval: float = 0.5  # at most one progress write per job per this many seconds
    step_delay: float = 0.0

    def __post_init__(self) -> None:
        if self.heartbeat_timeout <= 0:
            raise ValueError(f"heartbeat_timeout must be positive, got {self.heartbeat_timeout}")
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, got {self.max_attempts}")
        if self.stall_timeout is not None and self.stall_timeout < 0:
            raise ValueError(f"stall_timeout must be positive (or 0 / None for no limit), got {self.stall_timeout}")

    @classmethod
    def from_env(cls) -> "WorkerOptions":
        """Options from ``FEATSCOPE_JOB_HEARTBEAT_TIMEOUT``, ``..._MAX_ATTEMPTS`` and ``..._STALL_TIMEOUT`` (the
        embedded worker of ``featscope serve``; ``featscope worker`` reads the same through its options)."""
        import os

        def number(name: str, default: float) -> float:
            text = os.environ.get(f"FEATSCOPE_JOB_{name}", "").strip()
            try:
                return float(text) if text else default
            except ValueError:
                raise ValueError(f"FEATSCOPE_JOB_{name}={text!r} is not a number of seconds/attempts") from None

        return cls(heartbeat_timeout=number("HEARTBEAT_TIMEOUT", cls.heartbeat_timeout),
                   max_attempts=int(number("MAX_ATTEMPTS", cls.max_attempts)),
                   stall_timeout=number("STALL_TIMEOUT", cls.stall_timeout) or None)

    @property
    def heartbeat_interval(self) -> float:
        """Seconds between heartbeats: several per timeout, so one slow write does not look like a death."""
        return max(0.05, min(10.0, self.heartbeat_timeout / 5))

    @property
    def reap_interval(self) -> float:
        return max(0.2, min(30.0, self.heartbeat_timeout / 2))


def make_queue(settings: Settings, options: WorkerOptions | None = None, *, immediate: bool = False) -> huey.Huey:
    """The queue for ``settings`` with featscope's ``run_job`` task registered on it.

    ``settings.redis_url`` set: ``RedisHuey`` on that server; otherwise ``SqliteHuey`` in
    ``<data_dir>/queue.sqlite``. ``immediate=True`` runs tasks in the calling thread at enqueue time
    (Huey's immediate mode, for tests and scripts).
    """
    from featscope.worker.tasks import register_tasks

    if settings.redis_url:
        queue: huey.Huey = huey.RedisHuey(QUEUE_NAME, url=settings.redis_url, results=False, utc=True)
    else:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        queue = huey.SqliteHuey(QUEUE_NAME, filename=str((settings.data_dir / QUEUE_FILE).resolve()),
                                results=False, utc=True)
    register_tasks(queue, settings, options or WorkerOptions())
    queue.immediate = immediate
    return queue
