"""``featscope jobs list/show/cancel`` and ``featscope worker --help`` through Typer."""

from __future__ import annotations

import json

import pytest
import typer
from typer.testing import CliRunner

import featscope.cli as main_cli
from featscope.worker import jobs
from featscope.worker.cli import jobs_app, worker_command
from featscope.worker.queue import make_queue


@pytest.fixture
def app(settings, monkeypatch):
    monkeypatch.setattr(main_cli, "_state", {"data_dir": settings.data_dir})  # as `featscope --data-dir` records it
    app = typer.Typer()
    app.add_typer(jobs_app, name="jobs")
    app.command("worker")(worker_command)
    return app


def test_jobs_commands_list_show_and_cancel(app, ws):
    runner = CliRunner()
    assert "no jobs" in runner.invoke(app, ["jobs", "list"]).output
    job = jobs.submit(ws.ctx, "extract", {"backbone": "r18", "dataset": "imgs"}, queue=make_queue(ws.settings))
    listed = runner.invoke(app, ["jobs", "list", "--json"])
    assert listed.exit_code == 0 and [j["id"] for j in json.loads(listed.output)] == [job.id]
    shown = runner.invoke(app, ["jobs", "show", str(job.id)])
    assert shown.exit_code == 0 and "queued" in shown.output and "submitted extract" in shown.output
    cancelled = runner.invoke(app, ["jobs", "cancel", str(job.id)])
    assert cancelled.exit_code == 0 and "cancelled" in cancelled.output
    missing = runner.invoke(app, ["jobs", "show", "999"])
    assert missing.exit_code == 2 and "featscope jobs list" in missing.output
    bad = runner.invoke(app, ["jobs", "list", "--state", "sleeping"])
    assert bad.exit_code == 2 and "state must be one of" in bad.output


def test_worker_command_options(app):
    out = CliRunner().invoke(app, ["worker", "--help"]).output
    assert "--workers" in out and "--heartbeat-timeout" in out and "--max-attempts" in out
    assert "--step-delay" not in out  # test hook, hidden
    bad = CliRunner().invoke(app, ["worker", "--workers", "0"])
    assert bad.exit_code == 2 and "workers must be at least 1" in bad.output


def test_worker_options_come_from_the_environment_unless_a_flag_gives_them(app, monkeypatch):
    import featscope.worker.cli as worker_cli

    got = []
    monkeypatch.setattr(worker_cli, "run_worker", lambda settings, options, **kw: got.append(options))
    monkeypatch.setenv("FEATSCOPE_JOB_STALL_TIMEOUT", "120")
    monkeypatch.setenv("FEATSCOPE_JOB_MAX_ATTEMPTS", "5")
    assert CliRunner().invoke(app, ["worker"]).exit_code == 0
    assert (got[-1].stall_timeout, got[-1].max_attempts, got[-1].heartbeat_timeout) == (120.0, 5, 60.0)
    assert CliRunner().invoke(app, ["worker", "--stall-timeout", "0", "--max-attempts", "2"]).exit_code == 0
    assert (got[-1].stall_timeout, got[-1].max_attempts) == (None, 2)
    monkeypatch.setenv("FEATSCOPE_JOB_HEARTBEAT_TIMEOUT", "soon")
    bad = CliRunner().invoke(app, ["worker"])
    assert bad.exit_code == 2 and "FEATSCOPE_JOB_HEARTBEAT_TIMEOUT" in bad.output and len(got) == 2
