"""A run's catalog row and files: claim, progress, finish, list; its backbone file and exports.

Public names: :class:`RunInfo`, :class:`RunCancelled`, :class:`RunStore`, :func:`owner_id`,
:func:`write_backbone_file`, :func:`export_run_weights`, :data:`EXPORT_FORMATS`.

A run's directory holds ``checkpoint.pt`` (resumable state), ``metrics.jsonl`` (training and
evaluation rows), for a detection fine-tuning run ``detections.json`` (its test-set boxes) and, once
finished, ``backbone.pt``: a featscope checkpoint (``weights_only``
loadable) that the backbone source ``run:<id>`` reads. The catalog row says whether a process is
training the run now (``owner`` = host:pid, refreshed ``heartbeat_at``), so a run whose process was
killed is resumed, and a run that is alive elsewhere is not trained twice.
"""

from __future__ import annotations

import os
import shutil
import socket
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import torch
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from featscope.catalog import Run
from featscope.catalog.models import utcnow
from featscope.extractors.checkpoints import read_state_dict, save_checkpoint
from featscope.extractors.types import Preprocess
from featscope.training.detections import DETECTIONS
from featscope.training.loop import CHECKPOINT, METRICS

BACKBONE_FILE = "backbone.pt"
EXPORT_FORMATS = ("torchvision", "featscope")
STATES = ("running", "done", "failed", "cancelled")
STALE_AFTER = timedelta(seconds=120)  # a heartbeat older than this means the training process is gone


class RunCancelled(Exception):
    """Raised inside a training run after ``featscope runs cancel`` (or the REST cancel) asked it to stop."""


@dataclass(frozen=True)
class RunInfo:
    """What a run is and where it stands (``result``: its evaluation; ``backbone``: the registered name)."""

    id: int
    name: str
    task: str
    preset: str
    state: str
    iteration: int
    total_iterations: int
    progress: float
    message: str
    error: str | None
    config: dict[str, Any]
    result: dict[str, Any]
    classes: list[str]
    init: str
    dataset_id: int | None
    test_dataset_id: int | None
    backbone_id: int | None
    job_id: int | None
    fingerprint: str | None
    dir: str
    created_at: str | None
    finished_at: str | None
    cached: bool = False  # True when the call found the run already finished

    @classmethod
    def of(cls, row: Run, cached: bool = False) -> "RunInfo":
        return cls(row.id, row.name, row.task, row.preset, row.state, row.iteration, row.total_iterations,
                   float(row.progress or 0.0), row.message or "", row.error, dict(row.config or {}),
                   dict(row.result or {}), list(row.classes or []), row.init, row.dataset_id, row.test_dataset_id,
                   row.backbone_id, row.job_id, row.fingerprint, row.dir, _iso(row.created_at),
                   _iso(row.finished_at), cached)


def _iso(t: datetime | None) -> str | None:
    if t is None:
        return None
    return (t if t.tzinfo else t.replace(tzinfo=timezone.utc)).isoformat()


def owner_id() -> str:
    """``host:pid`` of this process."""
    return f"{socket.gethostname()}:{os.getpid()}"


def _alive(owner: str | None, heartbeat: datetime | None) -> bool:
    """Whether the process recorded as training a run still is (same host: the pid exists; else a fresh heartbeat)."""
    if not owner:
        return False
    host, _, pid = owner.rpartition(":")
    if host == socket.gethostname() and pid.isdigit():
        if int(pid) == os.getpid():
            return False  # this process: an earlier attempt in it ended without finishing the row
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass
    if heartbeat is None:
        return False
    beat = heartbeat if heartbeat.tzinfo else heartbeat.replace(tzinfo=timezone.utc)
    return utcnow() - beat < STALE_AFTER


class RunStore:
    """The catalog rows of runs, through a session factory (``Context.session``)."""

    def __init__(self, session: Callable[[], AbstractContextManager[Session]], runs_dir: Path) -> None:
        self.session, self.runs_dir = session, Path(runs_dir)

    def get(self, run_id: int) -> Run:
        with self.session() as s:
            row = s.get(Run, int(run_id))
        if row is None:
            raise LookupError(f"no training run {run_id}; `featscope runs list` (GET /api/v1/runs) shows the runs")
        return row

    def list(self, task: str | None = None) -> list[Run]:
        with self.session() as s:
            q = select(Run).order_by(Run.id.desc())
            return list(s.scalars(q.where(Run.task == task) if task else q))

    def find(self, key: str) -> Run | None:
        with self.session() as s:
            return s.scalars(select(Run).where(Run.key == key).order_by(Run.id.desc())).first()

    def claim(self, key: str, fields: dict[str, Any], *, restart: bool = False) -> tuple[Run, bool]:
        """The run for ``key``, marked as trained by this process: (row, already finished).

        A finished run is returned as it is (``restart``: a new run, so the finished one and the backbone
        it registered stay intact); a run another live process trains is refused; a failed, cancelled
        or orphaned one continues from its checkpoint (``restart``: from scratch). A new key makes a new
        row and directory.
        """
        row = self.find(key)
        if row is not None and row.state == "done":
            if not restart:
                return row, True
            row = None
        if row is not None and row.state == "running" and _alive(row.owner, row.heartbeat_at):
            raise ValueError(f"run {row.id} ({row.name}) is being trained by {row.owner}; wait for it, or stop it "
                             f"with `featscope runs cancel {row.id}`")
        now = utcnow()
        live = {"state": "running", "owner": owner_id(), "heartbeat_at": now, "started_at": now, "error": None,
                "cancel_requested": False, "finished_at": None, "message": "starting"}
        with self.session() as s:
            if row is None:
                row = Run(key=key, dir="", **fields, **live)
                s.add(row)
                s.flush()
                row.dir = str(self.runs_dir / f"{row.id:05d}")
                taken = s.scalars(select(Run.id).where(Run.name == row.name, Run.id != row.id)).first()
                if not row.name or taken is not None:
                    base = row.name or f"{row.task}-{row.config.get('arch', 'net')}"
                    row.name = f"{base}-{row.id}"
            else:
                s.execute(update(Run).where(Run.id == row.id).values(
                    **live, job_id=fields.get("job_id"), config=fields["config"]))
                row = s.get(Run, row.id)
        if restart:
            for name in (CHECKPOINT, METRICS, BACKBONE_FILE, DETECTIONS):
                (Path(row.dir) / name).unlink(missing_ok=True)
        Path(row.dir).mkdir(parents=True, exist_ok=True)
        return row, False

    def update(self, run_id: int, **values: Any) -> None:
        with self.session() as s:
            s.execute(update(Run).where(Run.id == run_id).values(**values))

    def heartbeat(self, run_id: int, **values: Any) -> bool:
        """Record progress; returns whether a cancel was asked for."""
        with self.session() as s:
            s.execute(update(Run).where(Run.id == run_id).values(heartbeat_at=utcnow(), **values))
            return bool(s.scalar(select(Run.cancel_requested).where(Run.id == run_id)))

    def finish(self, run_id: int, state: str, **values: Any) -> Run:
        self.update(run_id, state=state, owner=None, finished_at=utcnow(), **values)
        return self.get(run_id)

    def request_cancel(self, run_id: int) -> Run:
        """Ask a running run to stop at its next iteration (within a couple of seconds)."""
        row = self.get(run_id)
        if row.state == "running":
            self.update(run_id, cancel_requested=True, message="cancel requested")
        return self.get(run_id)


def write_backbone_file(path: Path, state: dict[str, torch.Tensor], *, run_id: int, task: str, arch: str,
                        preprocess: Preprocess, class_names: list[str] | None, cfg: dict[str, Any]) -> Path:
    """The file ``run:<id>`` loads: a featscope checkpoint with the run's description in ``extra["run"]``."""
    det = task.endswith("det")
    info = {"id": int(run_id), "task": "det" if det else "cls", "norm": cfg["norm"], "fpn": bool(cfg.get("fpn")),
            "dilated": bool(cfg.get("dilated_resolved", False)), "roi_size": int(cfg["roi_size"]),
            "proj_channels": int(cfg["proj_channels"]), "fc_dim": int(cfg["fc_dim"])}
    return save_checkpoint(path, state, arch, preprocess, class_names if not det else None, extra={"run": info})


def export_run_weights(backbone_file: Path, out: Path, fmt: str = "torchvision") -> Path:
    """Write a run's weights for other tools.

    ``torchvision``: a plain state dict in torchvision ResNet names: a classification run's whole
    network (``fc`` sized to its classes), a detection run's trunk only (load it with ``strict=False``,
    or with featscope's ``checkpoint:`` source; a dilated Conv5 is a build option, not a weight).
    ``featscope``: the run's backbone file itself (head included).
    """
    if fmt not in EXPORT_FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; choose one of {', '.join(EXPORT_FORMATS)}")
    if not Path(backbone_file).exists():
        raise FileNotFoundError(f"{backbone_file} is missing: the run has not finished (or its files were deleted)")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "featscope":
        shutil.copyfile(backbone_file, out)
        return out
    sd, _, _ = read_state_dict(backbone_file, "featscope")
    plain = {k: v.clone() for k, v in sd.items() if not k.startswith("head.")}
    from featscope.training.loop import save_checkpoint as atomic_save

    atomic_save(out, plain)
    return out
