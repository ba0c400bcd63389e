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
