"""One extraction, many workers: an extraction job over many images is split into shard jobs by image range.

The ``extract`` job of a data set with more readable images than ``FEATSCOPE_EXTRACT_JOB_IMAGES`` (and
something left to compute) becomes a *parent*: it readies the run's shard folder (:func:`prepare_shards`),
submits one ``extract-shard`` job per range of whole shards that is not yet on disk, and waits for them.
Any worker may claim a shard job from the queue; the parent claims queued ones itself in its own thread
while it waits, so one worker alone still finishes, and a shard job re-queued after its worker died is
picked up at once. When every shard job is done the parent assembles the shards (a cache hit for every
shard: nothing is recomputed), builds the index and registers the embedding sets, exactly as a single
worker's run would: the vectors are bit-identical on the same device and thread count.

Progress: the parent's ``progress`` is the whole extraction's, one number (images finished in all
shard jobs, those already on disk included, over the data set's images), in the API and the dashboard.
Recovery: a shard job whose worker died is re-queued by the reaper and resumes from its finished shards
(only the shard that was being computed is redone). A parent whose worker died is re-queued too; run
again, it finds the shards on disk and the shard jobs still active, and carries on.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select

from featscope.catalog import Image, Job
from featscope.worker.kinds import JobKind, Report, register_kind
from featscope.workspace.context import Context

log = logging.getLogger(__name__)

SHARD_KIND = "extract-shard"
POLL_SECONDS = 0.5


class ShardFailed(RuntimeError):
    """A shard job of a split extraction failed or was cancelled; the parent's retry submits it again."""


def run_extract(ctx: Context, params: dict[str, Any], report: Report) -> dict[str, Any]:
    """The ``extract`` kind: split into shard jobs when the data set is large, then extract (or assemble)."""
    from featscope.workspace.backbones import get_backbone_row
    from featscope.workspace.datasets import get_dataset
    from featscope.workspace.embeddings import extract, plan_extraction

    def progress(p) -> None:  # featscope.extractors.extract.ExtractProgress
        msg = p.message or f"{p.done}/{p.total} images, shard {p.shard + 1}/{p.shards} ({p.images_per_second:.1f}/s)"
        if p.message:
            report.log(p.message)
        report.progress(p.done / max(p.total, 1), msg)

    def say(line: str) -> None:
        report.log(line)
        report.check()

    st = ctx.settings
    batch_size = params.get("batch_size") or st.batch_size
    job_id = getattr(report, "job_id", None)
    get_backbone_row(ctx, params["backbone"])  # a missing backbone is reported before a missing data set
    dataset = get_dataset(ctx, params["dataset"])
    n = _readable_count(ctx, dataset.id)
    if n > st.extract_job_images and job_id is not None:
        plan = plan_extraction(ctx, params["backbone"], dataset.id, taps=params["taps"],
                               poolings=params["poolings"], precision=params.get("precision"), on_message=say)
        if plan.missing:
            _split_and_wait(ctx, plan, n, batch_size, job_id, report)
    sets = extract(ctx, params["backbone"], dataset.id, taps=params["taps"], poolings=params["poolings"],
                   precision=params.get("precision"), batch_size=batch_size, progress=progress, on_message=say)
    return {"embedding_sets": [s.id for s in sets], "cached": [s.cached for s in sets]}


def _readable_count(ctx: Context, dataset_id: int) -> int:
    with ctx.session() as s:
        return int(s.scalar(select(func.count(Image.id)).where(Image.dataset_id == dataset_id,
                                                               Image.position.is_not(None))) or 0)


@dataclass
class _Children:
    """The shard jobs of one parent and what they have done: the parent's progress, one number."""

    images: dict[int, int]  # shard job id -> images in its range
    done_before: int  # images in shards that were already on disk when the parent split the run
    total: int
    reported: dict[int, float] = field(default_factory=dict)  # shard job id -> last known fraction
    states: dict[int, str] = field(default_factory=dict)

    def refresh(self, ctx: Context) -> list[Job]:
        with ctx.session() as s:
            rows = list(s.scalars(select(Job).where(Job.id.in_(list(self.images)))))
        for r in rows:
            self.states[r.id] = r.state
            self.reported[r.id] = 1.0 if r.state == "done" else max(float(r.progress or 0.0),
                                                                    self.reported.get(r.id, 0.0))
        return rows

    def fraction(self) -> float:
        done = self.done_before + sum(n * self.reported.get(j, 0.0) for j, n in self.images.items())
        return min(1.0, done / max(self.total, 1))

    def message(self) -> str:
        count = {s: sum(1 for v in self.states.values() if v == s) for s in ("done", "running", "queued")}
        done = round(self.fraction() * self.total)
        return (f"{done}/{self.total} images; shard jobs: {count['done']} done, {count['running']} running, "
                f"{count['queued']} queued of {len(self.images)}")


def _split_and_wait(ctx: Context, plan, n: int, batch_size: int, job_id: int, report: Report) -> None:
    """Submit a shard job per range not yet on disk and wait for all, running queued ones in this thread."""
    from featscope.extractors.extract import shard_ranges
    from featscope.worker import jobs
    from featscope.worker.tasks import JobCancelled
    from featscope.workspace.embeddings import prepare_shards

    st = ctx.settings
    ranges = shard_ranges(n, batch_size, st.shard_size)
    on_disk = set(prepare_shards(ctx, plan, batch_size=batch_size, shard_size=st.shard_size))
    per_job = max(1, round(st.extract_job_images / len(ranges[0])))
    queue = jobs._default_queue(ctx)
    children, done_before = {}, 0
    for first in range(0, len(ranges), per_job):
        group = ranges[first:first + per_job]
        images = group[-1].stop - group[0].start
        if all(i in on_disk for i in range(first, first + len(group))):
            done_before += images
            continue
        child = jobs.submit(ctx, SHARD_KIND, {
            "backbone": plan.backbone.id, "dataset": plan.dataset.id, "taps": plan.run_taps,
            "poolings": plan.run_poolings, "precision": plan.precision, "batch_size": batch_size,
            "shard_size": st.shard_size, "run": plan.run_key, "start": group[0].start, "stop": group[-1].stop,
            "parent": job_id}, queue=queue, parent=job_id)
        children[child.id] = images
    report.log(f"split {n} images into {len(children)} shard job(s) of up to {per_job * len(ranges[0])} images "
               f"for any worker ({done_before} images already on disk)")
    state = _Children(children, done_before, n)
    try:
        _wait(ctx, queue, state, report)
    except JobCancelled:
        for child in children:
            jobs.cancel_job(ctx, child, queue=queue)
        raise


def _wait(ctx: Context, queue, state: _Children, report: Report) -> None:
    from featscope.worker.queue import WorkerOptions
    from featscope.worker.tasks import execute_job

    options = getattr(report, "options", None) or WorkerOptions()
    while True:
        report.check()
        rows = state.refresh(ctx)
        bad = [r for r in rows if r.state in ("failed", "cancelled")]
        if bad:
            r = bad[0]
            raise ShardFailed(f"shard job {r.id} (images {r.params['start']}..{r.params['stop'] - 1}) {r.state}"
                              f"{': ' + r.error if r.error else ''}; the extraction stops (a retry submits it again)")
        report.progress(state.fraction(), state.message())
        if all(r.state == "done" for r in rows):
            return
        queued = sorted(r.id for r in rows if r.state == "queued")
        if not queued:
            time.sleep(POLL_SECONDS)
            continue

        def relay(fraction: float, _message: str, child: int = queued[0]) -> None:
            state.reported[child] = max(fraction, state.reported.get(child, 0.0))
            report.progress(state.fraction(), state.message())

        execute_job(ctx, queue, queued[0], options, relay=relay)  # skips it if another worker claimed it first


# ---------------------------------------------------------------- the extract-shard kind
_SHARD_PARAMS = ("backbone", "dataset", "taps", "poolings", "precision", "batch_size", "shard_size", "run", "start",
                 "stop", "parent")


def _normalize_shard(params: dict[str, Any]) -> dict[str, Any]:
    """Shard jobs are made by an extraction job, not by hand; still, every field is checked."""
    missing = [k for k in _SHARD_PARAMS if k not in params]
    unknown = sorted(set(params) - set(_SHARD_PARAMS))
    if missing or unknown:
        raise ValueError(f"extract-shard takes exactly {', '.join(_SHARD_PARAMS)} (missing: {missing}, unknown: "
                         f"{unknown}); it is submitted by an extract job over a large data set")
    ints = ("backbone", "dataset", "batch_size", "shard_size", "start", "stop", "parent")
    if any(isinstance(params[k], bool) or not isinstance(params[k], int) or params[k] < 0 for k in ints):
        raise ValueError(f"{', '.join(ints)} must be non-negative integers")
    if not 0 <= params["start"] < params["stop"] or params["batch_size"] < 1 or params["shard_size"] < 1:
        raise ValueError(f"need 0 <= start < stop and positive sizes, got {params}")
    if not isinstance(params["run"], str) or not re.fullmatch(r"[0-9a-f]{64}", params["run"]):
        raise ValueError("run must be the 64-hex-digit key of the extraction run")
    for k in ("taps", "poolings"):
        if not isinstance(params[k], list) or not params[k] or not all(isinstance(v, str) for v in params[k]):
            raise ValueError(f"{k} must be a non-empty list of names")
    if params["precision"] not in ("fp32", "bf16", "fp16"):
        raise ValueError(f"precision must be fp32, bf16 or fp16, not {params['precision']!r}")
    return {k: params[k] for k in _SHARD_PARAMS}


def _run_shard(ctx: Context, params: dict[str, Any], report: Report) -> dict[str, Any]:
    from featscope.workspace.embeddings import extract_shards

    with ctx.session() as s:
        parent = s.get(Job, params["parent"])
    if parent is None or parent.state not in ("queued", "running"):
        why = f"its extraction job {params['parent']} is {parent.state if parent else 'gone'}"
        report.log(f"nothing to do: {why}")
        return {"skipped": why}

    def progress(p) -> None:  # featscope.extractors.extract.ExtractProgress
        report.progress(p.done / max(p.total, 1), p.message or f"{p.done}/{p.total} images of this range "
                                                                f"({p.images_per_second:.1f}/s)")

    out = extract_shards(ctx, params["backbone"], params["dataset"], taps=params["taps"], poolings=params["poolings"],
                         precision=params["precision"], batch_size=params["batch_size"],
                         shard_size=params["shard_size"], run_key=params["run"], start=params["start"],
                         stop=params["stop"], progress=progress)
    report.log(f"images {params['start']}..{params['stop'] - 1} (shards {out['first_shard']}-{out['last_shard']}): "
               f"{out['resumed']} resumed from disk, {out['computed']} computed")
    return out


register_kind(SHARD_KIND, JobKind(_normalize_shard, _run_shard,
                                  "One image range of a split extraction (submitted by an extract job)"))
