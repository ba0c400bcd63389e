"""Fixtures shared across the suite: a workspace in a temp dir, small generated image folders and a throwaway
PostgreSQL server for the tests that run on both catalog databases."""

from __future__ import annotations

import copy
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from pathlib import Path

import numpy as np
import pytest
from PIL import Image


def make_image_folder(root: Path, classes: dict[str, int], size: int = 48, seed: int = 0) -> Path:
    """ImageFolder of small random-texture PNGs, one sub-folder per class; returns ``root``."""
    rng = np.random.default_rng(seed)
    for ci, (cls, n) in enumerate(classes.items()):
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            base = np.zeros((size, size, 3), dtype=np.uint8)
            base[..., ci % 3] = 160  # class-dependent colour so classes are separable
            noise = rng.integers(0, 90, size=(size, size, 3), dtype=np.uint8)
            Image.fromarray(base + noise).save(root / cls / f"{cls}_{i:03d}.png")
    return root


@pytest.fixture(scope="session")
def make_images():
    """The :func:`make_image_folder` factory, for tests that need their own layout."""
    return make_image_folder


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    return make_image_folder(tmp_path / "imgs", {"red": 6, "green": 5, "blue": 5})


@pytest.fixture
def settings(tmp_path: Path):
    from featscope.config import Settings

    return Settings(data_dir=tmp_path / "data", num_workers=0, batch_size=4, shard_size=8)


@pytest.fixture
def ws(settings):
    from featscope.workspace import Workspace

    return Workspace(settings)


# ---------------------------------------------------------------- PostgreSQL
# A throwaway cluster per test session (initdb in a temp folder, started on a free loopback port, removed at
# the end); every test that asks for it gets a fresh database of its own. Missing PostgreSQL skips those
# tests on a developer machine and fails them under CI (`CI` set), like the Redis test: CI must run them.
DATABASES = ("sqlite", "postgresql")


def _pg_bindir() -> Path | None:
    """Folder of ``initdb``/``pg_ctl``: on PATH, or Debian's newest ``/usr/lib/postgresql/N/bin``."""
    found = shutil.which("pg_ctl")
    if found and shutil.which("initdb"):
        return Path(found).parent
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"), key=lambda p: int(p.parent.parent.name)
                      if p.parent.parent.name.isdigit() else 0)
    return versions[-1].parent if versions else None


def _pg_runner(owner: str | None):
    """Run a PostgreSQL program as ``owner`` (initdb and postgres refuse to run as root) or as ourselves."""
    def run(args: list[str], **kw) -> subprocess.CompletedProcess:
        cmd = ["runuser", "-u", owner, "--", *args] if owner else args
        return subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=120, **kw)

    return run


@pytest.fixture(scope="session")
def postgres_server():
    """``(host, port, user)`` of a private PostgreSQL server for this test session, stopped and deleted afterwards."""
    bindir = _pg_bindir()
    if bindir is None:
        why = "PostgreSQL is not installed (Debian: apt-get install postgresql; `make test` installs it)"
        if os.environ.get("CI"):
            pytest.fail(why)  # CI must run the PostgreSQL tests, never skip them
        pytest.skip(why)
    owner = None
    if os.geteuid() == 0:  # initdb refuses root: run the cluster as an unprivileged account
        import pwd

        owner = next((u for u in ("postgres", "nobody") if _has_user(pwd, u)), None)
        if owner is None or shutil.which("runuser") is None:
            pytest.fail("tests run as root but there is no 'postgres' or 'nobody' account and runuser to start "
                        "PostgreSQL as; run the tests as a normal user")
    root = Path(tempfile.mkdtemp(prefix="featscope-pg-"))
    if owner:
        shutil.chown(root, user=owner)
    run = _pg_runner(owner)
    data, port = root / "data", _free_port()
    run([str(bindir / "initdb"), "-D", str(data), "-U", "featscope", "--auth=trust", "-E", "UTF8", "--no-sync",
         "--locale=C"])
    options = (f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off "
               f"-c full_page_writes=off -c max_connections=300")
    try:
        run([str(bindir / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(root / "server.log"), "-w", "-t", "60",
             "start"])
    except subprocess.CalledProcessError as e:
        log = (root / "server.log").read_text(errors="replace") if (root / "server.log").exists() else ""
        shutil.rmtree(root, ignore_errors=True)
        raise AssertionError(f"PostgreSQL did not start: {e.stderr}\n{log}") from None
    try:
        yield "127.0.0.1", port, "featscope"
    finally:
        subprocess.run((["runuser", "-u", owner, "--"] if owner else []) +
                       [str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"],
                       capture_output=True, timeout=60)
        shutil.rmtree(root, ignore_errors=True)


def _has_user(pwd, name: str) -> bool:
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def postgres_url(postgres_server):
    """SQLAlchemy URL of a new, empty database on the session's server (dropped after the test)."""
    import psycopg

    host, port, user = postgres_server
    name = f"t_{uuid.uuid4().hex[:12]}"
    admin = f"host={host} port={port} user={user} dbname=postgres"
    with psycopg.connect(admin, autocommit=True) as con:
        con.execute(f'CREATE DATABASE "{name}"')
    yield f"postgresql+psycopg://{user}@{host}:{port}/{name}"
    with psycopg.connect(admin, autocommit=True) as con:
        con.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def settings_for(tmp_path, request):
    """``settings_for(database)``: test settings whose catalog is SQLite in the data dir or a fresh PostgreSQL."""
    from featscope.config import Settings

    def make(database: str = "sqlite") -> Settings:
        if database not in DATABASES:
            raise ValueError(f"database must be one of {DATABASES}, got {database!r}")
        url = request.getfixturevalue("postgres_url") if database == "postgresql" else None
        return Settings(data_dir=tmp_path / "data", database_url=url, num_workers=0, batch_size=4, shard_size=8)

    return make


# ---------------------------------------------------------------- the demo, tiny
@pytest.fixture(scope="session")
def tiny_demo(tmp_path_factory):
    """``featscope demo --profile tiny`` on a fresh data dir, serving the dashboard on a free port once every stage
    is done: yields ``(base_url, data_dir, first_run_output)``; Ctrl-C (SIGINT) stops it at the end, which must
    exit 0. Shared by the demo's tests and the dashboard's browser test (one pipeline run for both).

    ``FEATSCOPE_TEST_DEMO_DIR`` (with ``FEATSCOPE_TEST_DEMO_PROFILE``) runs it on a data dir a full ``make demo``
    filled instead (a cache hit from end to end): how the README's screenshots show the ``cpu`` demo's data."""
    import signal
    import sys
    import time

    root = tmp_path_factory.mktemp("demo")
    data_dir = Path(os.environ.get("FEATSCOPE_TEST_DEMO_DIR") or root / "data")
    profile = os.environ.get("FEATSCOPE_TEST_DEMO_PROFILE") or "tiny"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "FEATSCOPE_DATA_DIR": str(data_dir), "FEATSCOPE_NUM_WORKERS": "0", "OMP_NUM_THREADS": "1",
           "FEATSCOPE_BATCH_SIZE": "16"}
    env.pop("DEMO_SERVE", None)
    log = root / "demo.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "featscope", "demo", "--profile", profile, "--port", str(port)],
                                env=env, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 600
    while "is serving the dashboard" not in log.read_text(errors="replace"):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"featscope demo did not finish (exit {proc.poll()}):\n{log.read_text()[-6000:]}")
        time.sleep(0.5)
    yield f"http://127.0.0.1:{port}", data_dir, log.read_text()
    proc.send_signal(signal.SIGINT)
    try:
        code = proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise AssertionError(f"featscope demo did not stop on Ctrl-C:\n{log.read_text()[-3000:]}") from None
    assert code == 0, f"Ctrl-C while serving should exit 0, got {code}:\n{log.read_text()[-3000:]}"


@pytest.fixture
def one_faiss_thread():
    """Tiny FAISS problems: one thread is fastest, and avoids OpenMP spin-waits on a busy machine."""
    import faiss

    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(before)


@pytest.fixture
def no_building(monkeypatch):
    """Analyses given a prebuilt (or stored) index: building or tuning one fails the test."""
    import featscope.analysis.knn as knn

    def refuse(*args, **kwargs):
        raise AssertionError("an index was there to search: nothing may be built or tuned")

    monkeypatch.setattr(knn, "build_index", refuse)
    monkeypatch.setattr(knn, "tune_nprobe", refuse)


# A detection fine-tuning run's Table 3 as stored before per-detector operating scores (no score_ceiling):
# at score 0.5 the occluded star is missed (rate 1.0 at medium occlusion).
OLD_RULE_TABLE3 = {"iou": 0.5, "score": 0.5, "n_objects": 3, "n_missed": 3,
                   "bins": [{"name": "none", "low": 0.0, "high": 0.01, "objects": 1, "missed": 1, "rate": 1.0},
                            {"name": "low", "low": 0.01, "high": 0.25, "objects": 0, "missed": 0, "rate": None},
                            {"name": "medium", "low": 0.25, "high": 0.5, "objects": 1, "missed": 1, "rate": 1.0},
                            {"name": "high", "low": 0.5, "high": 1.0, "objects": 0, "missed": 0, "rate": None}]}


@pytest.fixture
def old_rule_run():
    """``add(ws, run_dir, init) -> run id``: a finished detection fine-tuning run whose stored Table 3 is
    :data:`OLD_RULE_TABLE3` (a copy of it: ``add.stored``) and whose detections.json (3 objects, one box at
    0.3 on the occluded star) recounts at its lowest score, 0.3, where the star is found (rate 0.0 at medium)."""
    from featscope.catalog import Run
    from featscope.training.detections import write_detections

    def add(ws, run_dir: Path, init: str) -> int:
        truth = [{"label": "star", "box": [0, 0, 10, 10], "occlusion": 0.0},
                 {"label": "star", "box": [50, 50, 60, 60], "occlusion": 0.3},
                 {"label": "cross", "box": [20, 20, 40, 40], "occlusion": None}]
        run_dir.mkdir(parents=True)
        write_detections(run_dir, {"classes": ["cross", "star"], "score_floor": 0.05, "images": [
            {"relpath": "1.png", "width": 100, "height": 100, "gt": truth,
             "pred": [{"label": "star", "box": [50, 50, 60, 60], "score": 0.3}]}]})
        with ws.ctx.session() as s:
            row = Run(name="ft-old", task="finetune-det", key="test-ft-old", state="done", config={},
                      classes=["cross", "star"], init=init, dir=str(run_dir),
                      result={"iterations": 4,
                              "eval": {"ap": {"0.5": 0.25}, "missed_by_occlusion": copy.deepcopy(OLD_RULE_TABLE3)}})
            s.add(row)
            s.flush()
            return row.id

    add.stored = copy.deepcopy(OLD_RULE_TABLE3)
    return add
