"""Worker test helpers: a registered tiny backbone and data set, queues, and worker processes."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from featscope.extractors.types import Preprocess

SMALL = Preprocess(resize=40, crop=32)


@pytest.fixture
def prepared(ws, image_folder):
    """The workspace with data set ``imgs`` (16 images) and backbone ``r18`` (random init, 32 px input)."""
    ws.add_dataset(image_folder, name="imgs")
    ws.add_backbone("torchvision:resnet18", random_init=True, name="r18", preprocess=SMALL)
    return ws


def wait_for(predicate, timeout: float, what: str, interval: float = 0.1):
    """Poll ``predicate`` until it returns something truthy; fail with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


class WorkerProcess:
    """``featscope worker`` in a child process (the real Huey consumer), logging to a file."""

    def __init__(self, settings, log_path: Path, *, heartbeat_timeout: float = 10.0, step_delay: float = 0.0,
                 workers: int = 1) -> None:
        env = {**os.environ, "FEATSCOPE_DATA_DIR": str(settings.data_dir), "FEATSCOPE_NUM_WORKERS": "0",
               "FEATSCOPE_BATCH_SIZE": str(settings.batch_size), "FEATSCOPE_SHARD_SIZE": str(settings.shard_size),
               "FEATSCOPE_EXTRACT_JOB_IMAGES": str(settings.extract_job_images),
               "OMP_NUM_THREADS": "1"}
        for name in ("FEATSCOPE_REDIS_URL", "FEATSCOPE_DATABASE_URL"):
            env.pop(name, None)
        if settings.redis_url:
            env["FEATSCOPE_REDIS_URL"] = settings.redis_url
        if settings.database_url:
            env["FEATSCOPE_DATABASE_URL"] = settings.database_url
        code = ("from featscope.worker.cli import worker_command; "
                f"worker_command(workers={workers}, heartbeat_timeout={heartbeat_timeout}, step_delay={step_delay})")
        self.log_path = log_path
        self._log = open(log_path, "ab")
        self.proc = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=self._log, stderr=subprocess.STDOUT)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout: float = 60.0) -> None:
        def ready():
            if self.proc.poll() is not None:
                raise AssertionError(f"worker exited with {self.proc.returncode}:\n{self.output()}")
            return "featscope worker ready" in self.output()

        wait_for(ready, timeout, "the worker to start")

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # stop now; a running job goes back to the queue
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self._log.close()


@pytest.fixture
def start_worker(tmp_path):
    """Start worker processes; every one still running is stopped at teardown."""
    started: list[WorkerProcess] = []

    def start(settings, **kwargs) -> WorkerProcess:
        w = WorkerProcess(settings, tmp_path / f"worker-{len(started)}.log", **kwargs)
        started.append(w)
        return w

    yield start
    for w in started:
        w.stop()


@pytest.fixture
def waiter():
    """The :func:`wait_for` poller (test modules cannot import this conftest under importlib mode)."""
    return wait_for


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def redis_url(tmp_path):
    """A private redis-server on a free loopback port, data kept in a temp dir, stopped at teardown."""
    exe = shutil.which("redis-server")
    if exe is None:
        why = "redis-server is not on PATH (Debian: apt-get install redis-server; `make test` installs it)"
        if os.environ.get("CI"):
            pytest.fail(why)  # CI must run the Redis topology test, never skip it
        pytest.skip(why)
    import redis

    port = _free_port()
    (tmp_path / "redis").mkdir()
    proc = subprocess.Popen([exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                             "--dir", str(tmp_path / "redis")], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"redis-server did not start (exit code {proc.poll()})") from None
                time.sleep(0.1)
        yield url
    finally:
        client.close()
        proc.terminate()
        proc.wait(timeout=10)
