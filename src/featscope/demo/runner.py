"""Run the demo: start the server (or a bare worker), submit each stage's jobs, show progress, serve.

Public names: :func:`run_demo`, :class:`Services`.

The server starts first, so the dashboard is up (``/study`` shows the pipeline's progress, ``/jobs`` every
job) while the work runs; the terminal prints the same progress. Each stage is submitted once the stage
before it has finished, because its requests name what that stage produced (backbones, embedding sets).
Ctrl-C cancels the demo's unfinished jobs (a training run keeps its last checkpoint, so the next
``make demo`` continues it) and stops the server and its worker.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from featscope.config import Settings
from featscope.demo.pipeline import STAGES, Manifest, Step, manifest_path
from featscope.demo.profiles import Profile
from featscope.workspace import Workspace

Say = Callable[[str], None]
POLL_SECONDS = 0.4
PROGRESS_EVERY = 5.0  # seconds between progress lines of one running job
GUIDE = [("/study", "the study's findings beside the demo's measurements, each with a computed verdict"),
         ("/runs", "loss and learning-rate curves, AP against IoU of both backbones (Fig. 1), fine-tuning tables, "
                   "held-out classes (Table 2), segmentation (Table 4, Fig. 2)"),
         ("/detections", "both fine-tuned detectors' boxes on the same test images, missed objects by occlusion "
                         "(Table 3, Fig. 8)"),
         ("/projections", "t-SNE and UMAP of both backbones' Conv5, coloured by class (Fig. 7)"),
         ("/comembership", "K-means co-membership in both directions (Fig. 6)"),
         ("/pairs", "closest pairs, and pairs close for one backbone but distant for the other (Fig. 3)"),
         ("/probes", "linear probes on Conv4/Conv5 and the detection head's taps (Tables 5, 6)")]


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass
class Services:
    """The process serving the dashboard with its embedded worker (or, without serving, a bare worker)."""

    proc: subprocess.Popen
    log: Path
    base: str | None

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM the process group (the server, and the worker it started), SIGKILL after ``timeout``."""
        if self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        except ProcessLookupError:
            pass


def port_free(host: str, port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind((host, port))
            return True
        except OSError:
            return False


def start_services(settings: Settings, serve: bool, host: str, port: int) -> Services:
    """``featscope serve`` (API, dashboard, one embedded worker) or ``featscope worker``, in a session of its own
    (so the terminal's Ctrl-C reaches only this process, which then stops it in order)."""
    data_dir = Path(settings.data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "FEATSCOPE_DATA_DIR": str(data_dir.resolve())}
    if serve:
        cmd = [sys.executable, "-m", "featscope", "serve", "--host", host, "--port", str(port), "--log-level", "warning"]
    else:
        cmd = [sys.executable, "-m", "featscope", "worker"]
    log = data_dir / ("demo-serve.log" if serve else "demo-worker.log")
    with open(log, "ab") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    return Services(proc, log, f"http://{host}:{port}" if serve else None)


def wait_until_up(svc: Services, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            urllib.request.urlopen(svc.base + "/api/v1/jobs?limit=1", timeout=2)
            return
        except OSError:
            if svc.proc.poll() is not None or time.monotonic() > deadline:
                svc.stop()
                tail = svc.log.read_text(errors="replace")[-3000:]
                raise RuntimeError(f"the dashboard server did not start (log {svc.log}):\n{tail}") from None
            time.sleep(0.3)


def _cached(kind: str, result: dict[str, Any]) -> bool:
    """Whether a finished job found everything it was asked for already computed."""
    if kind == "extract":
        return bool(result.get("cached")) and all(result["cached"])
    return bool(result.get("cached"))


class Pipeline:
    """Submits the stages in order and follows their jobs, recording everything in the manifest."""

    def __init__(self, ws: Workspace, profile: Profile, manifest: Manifest, say: Say) -> None:
        from featscope.worker.queue import make_queue

        self.ws, self.profile, self.m, self.say = ws, profile, manifest, say
        self.queue = make_queue(ws.ctx.settings)
        self.active: list[int] = []

    def run(self) -> bool:
        """Every stage; True when every job finished."""
        ok = True
        for n, stage in enumerate(STAGES, start=1):
            t0 = time.monotonic()
            off = stage.off(self.profile) if stage.off is not None else None
            if off:  # left out by this profile: not a failure
                self.m.setdefault("stages", []).append({"name": stage.name, "title": stage.title, "state": "off",
                                                        "why": off, "jobs": []})
                self.m.save()
                self.say(f"[{n}/{len(STAGES)}] {stage.title}: off ({off})")
                continue
            steps = stage.steps(self.ws, self.profile, self.m)
            entry = {"name": stage.name, "title": stage.title, "state": "running", "jobs": []}
            self.m.setdefault("stages", []).append(entry)
            self.m.save()
            self.say(f"[{n}/{len(STAGES)}] {stage.title}: {len(steps)} job(s)")
            if not steps:
                entry["state"] = "skipped"
                self.say("      skipped: what it needs did not finish (see the failures above)")
                self.m.save()
                ok = False
                continue
            done = self._follow(steps, entry)
            entry["seconds"] = round(time.monotonic() - t0, 1)
            entry["state"] = "done" if done else "failed"
            self.m.save()
            hits = sum(1 for j in entry["jobs"] if j.get("cached"))
            self.say(f"      {entry['state']} in {entry['seconds']:.0f} s ({hits}/{len(entry['jobs'])} cache hits)")
            ok = ok and done
        return ok

    def _follow(self, steps: list[Step], entry: dict[str, Any]) -> bool:
        from featscope.worker import jobs

        pending: dict[int, tuple[Step, dict[str, Any]]] = {}
        ok = True
        for step in steps:
            record = {"label": step.label, "kind": step.kind, "job": None, "state": "queued"}
            entry["jobs"].append(record)
            try:
                job = jobs.submit(self.ws.ctx, step.kind, step.params, queue=self.queue)
            except ValueError as e:
                record.update(state="failed", error=str(e))
                self.say(f"      ! {step.label}: refused: {e}")
                ok = False
                continue
            record["job"] = job.id
            pending[job.id] = (step, record)
            self.active.append(job.id)
        self.m.save()
        last: dict[int, tuple[float, str]] = {}
        while pending:
            time.sleep(POLL_SECONDS)
            for job_id in list(pending):
                step, record = pending[job_id]
                job = jobs.get_job(self.ws.ctx, job_id)
                if job.state in jobs.ACTIVE:
                    self._progress(job, step, last)
                    continue
                del pending[job_id]
                self.active.remove(job_id)
                ok = self._finished(job, step, record) and ok
                self.m.save()
        return ok

    def _progress(self, job, step: Step, last: dict[int, tuple[float, str]]) -> None:
        if job.state != "running":
            return
        seen_at, seen = last.get(job.id, (0.0, ""))
        if job.message != seen and time.monotonic() - seen_at >= PROGRESS_EVERY:
            last[job.id] = (time.monotonic(), job.message)
            self.say(f"      {step.label} (job {job.id}): {job.progress:4.0%} {job.message}")

    def _finished(self, job, step: Step, record: dict[str, Any]) -> bool:
        record["state"] = job.state
        if job.started_at and job.finished_at:
            record["seconds"] = round((datetime.fromisoformat(job.finished_at)
                                       - datetime.fromisoformat(job.started_at)).total_seconds(), 1)
        if job.state != "done":
            record["error"] = job.error or job.message
            self.say(f"      ! {step.label} (job {job.id}) {job.state}: {record['error']}")
            return False
        record["cached"] = _cached(step.kind, job.result)
        if step.record is not None:
            step.record(self.m, job.result)
        took = f"{record.get('seconds', 0):.0f} s" if not record["cached"] else "cache hit"
        self.say(f"      done: {step.label} (job {job.id}, {took})")
        return True

    def cancel(self, wait: float = 20.0) -> None:
        """Cancel this demo's unfinished jobs and give running ones ``wait`` seconds to stop."""
        from featscope.worker import jobs

        for job_id in list(self.active):
            jobs.cancel_job(self.ws.ctx, job_id, queue=self.queue)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and any(jobs.get_job(self.ws.ctx, j).state == "running" for j in self.active):
            time.sleep(0.5)


def _summary(ws: Workspace, manifest: Manifest, say: Say) -> None:
    from featscope.demo.study import study_findings

    findings = study_findings(ws, manifest.data)
    say("")
    say("The study's findings on the demo's data (the /study page shows them with their figures):")
    for f in findings:
        say(f"  {f.verdict.upper():>15}  {f.title}")
        say(f"  {'':>15}  study: {f.study}")
        say(f"  {'':>15}  demo:  {f.measured}")
    counts = {v: sum(1 for f in findings if f.verdict == v) for v in ("reproduced", "not reproduced", "not measured")}
    say("  " + ", ".join(f"{n} {v}" for v, n in counts.items()))


def _interrupt(signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def _stop_on_signals() -> None:
    """SIGINT and SIGTERM both stop the demo in order (a shell starting it in the background ignores SIGINT, and
    a service manager sends SIGTERM): its jobs are cancelled and the server it started is stopped."""
    import threading

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, _interrupt)
        signal.signal(signal.SIGTERM, _interrupt)


def run_demo(settings: Settings, profile: Profile, *, serve: bool = True, host: str = "127.0.0.1", port: int = 8050,
             say: Say = print) -> int:
    """The whole demo; returns the exit status (0: every job finished; 1: some failed; 130: interrupted)."""
    if serve and not port_free(host, port):
        say(f"error: port {port} on {host} is in use (another featscope serve?); stop it, or choose another port: "
            f"DEMO_PORT={port + 1} make demo")
        return 2
    _stop_on_signals()
    t0 = time.monotonic()
    ws = Workspace(settings)
    manifest = Manifest(manifest_path(Path(settings.data_dir)))
    manifest.data = {"version": 1, "profile": profile.name, "description": profile.description,
                     "study_name": "study", "state": "running", "started_at": _now(), "stages": []}
    manifest.save()
    say(f"featscope demo, profile {profile.name!r}: {profile.description} ({profile.expected}); "
        f"state in {Path(settings.data_dir).resolve()}")
    svc = start_services(settings, serve, host, port)
    pipeline, finished = None, False
    try:
        if serve:
            wait_until_up(svc)
            say(f"dashboard: {svc.base}/study  (open it now: it shows each stage's progress as the jobs run)")
        pipeline = Pipeline(ws, profile, manifest, say)
        ok = pipeline.run()
        manifest.data.update(state="done" if ok else "failed", finished_at=_now(),
                             seconds=round(time.monotonic() - t0, 1))
        manifest.save()
        jobs_all = [j for s in manifest["stages"] for j in s["jobs"]]
        hits = sum(1 for j in jobs_all if j.get("cached"))
        say(f"\nall stages {'done' if ok else 'finished, some with failures'} in {time.monotonic() - t0:.0f} s; "
            f"{hits} of {len(jobs_all)} jobs were cache hits")
        _summary(ws, manifest, say)
        finished = True
        if not serve:
            return 0 if ok else 1
        say(f"\nfeatscope is serving the dashboard at {svc.base}/ (Ctrl-C stops it). Look at:")
        for path, what in GUIDE:
            say(f"  {svc.base}{path:<15} {what}")
        while svc.proc.poll() is None:
            time.sleep(0.5)
        say(f"the server stopped (exit status {svc.proc.returncode}); its log: {svc.log}")
        return 0 if ok else 1
    except KeyboardInterrupt:
        if finished:  # Ctrl-C while serving: the way to stop the dashboard
            say("\nstopping the dashboard")
            return 0 if manifest.data.get("state") == "done" else 1
        say("\ninterrupted: cancelling the demo's unfinished jobs (training keeps its checkpoints) and stopping")
        if manifest.data.get("state") == "running":
            manifest.data.update(state="stopped", finished_at=_now())
            manifest.save()
        if pipeline is not None:
            pipeline.cancel()
        return 130
    finally:
        svc.stop()
