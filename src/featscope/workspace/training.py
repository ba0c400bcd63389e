"""Training and fine-tuning runs over registered data sets, and their registration as backbones.

Public names: :class:`TrainPlan`, :func:`plan`, :func:`train`, :func:`finetune`, :func:`list_runs`,
:func:`get_run`, :func:`run_metrics`, :func:`run_detections`, :func:`cancel_run`, :func:`export_run`,
:func:`run_weights`.

A run is keyed by everything that determines its weights (task, configuration, data set
fingerprints, classes, initial weights), so asking for it again returns the finished run, or resumes
an interrupted one from its last checkpoint. Everything a run could refuse (an unknown preset or
parameter, a data set without labels or boxes, unknown classes, an empty split) is checked by
:func:`plan` before any work starts; the REST route calls it before it queues a job.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from featscope.cache.store import content_key
from featscope.catalog import Dataset
from featscope.training.data import Sample, check_samples
from featscope.training.detections import read_detections, write_detections
from featscope.training.loop import Distributed, TrainProgress, fit, read_metrics, resolve_device
from featscope.training.models import can_dilate, initial_trunk, trunk_state
from featscope.training.presets import TrainConfig, resolve_config
from featscope.training.runs import (BACKBONE_FILE, RunCancelled, RunInfo, RunStore, export_run_weights,
                                     write_backbone_file)
from featscope.workspace.context import Context, NotFound
from featscope.workspace.datasets import get_dataset, image_boxes, readable_images

log = logging.getLogger(__name__)

TRAINING_VERSION = 2  # bump when a change alters what a configuration trains to
# Fields that change how a run is carried out but not the weights it ends with: not part of its key.
_BOOKKEEPING = ("num_workers", "checkpoint_every", "log_every", "eval_every", "device", "threads")
# Parameters added after runs were keyed: at these values a run is what it was before they existed, so they
# stay out of its key and earlier runs remain cache hits (and unfinished ones continue).
_KEYLESS_DEFAULTS: dict[str, Any] = {"optimizer": "sgd", "zero_init_residual": True, "holdout_classes": [],
                                     "output_stride": None, "trimap_widths": []}
_HEARTBEAT_SECONDS = 2.0
FINETUNE_TASKS = ("cls", "det", "seg")
Say = Callable[[str], None]


@dataclass
class TrainPlan:
    """A checked run request: configuration, samples, classes and initial trunk, not yet trained."""

    task: str  # cls, det, finetune-cls, finetune-det, finetune-seg
    preset: str
    config: TrainConfig
    dataset: Dataset
    train: list[Sample]
    test: list[Sample]
    test_dataset: Dataset | None
    classes: list[str]
    init: str
    init_fingerprint: str
    init_backbone_id: int | None
    name: str | None
    trunk: dict[str, torch.Tensor] | None = field(default=None, repr=False)
    masks: Any = field(default=None, repr=False)  # finetune-seg: path -> class-index mask (segmentation_runs.MaskReader)

    @property
    def key(self) -> str:
        cfg = {k: v for k, v in self.config.to_dict().items()
               if k not in _BOOKKEEPING and not (k in _KEYLESS_DEFAULTS and v == _KEYLESS_DEFAULTS[k])
               and not (k == "zero_init_residual" and self.init_backbone_id is not None)}  # no effect on a given trunk
        return content_key({"kind": "training-run", "version": TRAINING_VERSION, "task": self.task, "config": cfg,
                            "dataset": self.dataset.fingerprint, "classes": self.classes,
                            "test": self.test_dataset.fingerprint if self.test_dataset else None,
                            "test_images": [str(s.path) for s in self.test] if self.test_dataset is None else None,
                            "init": self.init_fingerprint,
                            **({"masks": self.masks.fingerprint} if self.task == "finetune-seg" else {})})


def plan(ctx: Context, task: str, dataset: str | int, *, preset: str = "cpu-demo", init: str | int | None = None,
         test_dataset: str | int | None = None, classes: Sequence[str] | None = None, name: str | None = None,
         params: dict[str, Any] | None = None) -> TrainPlan:
    """Check a run request and resolve everything it needs, without training (cheap: catalog reads only).

    ``task``: ``cls``/``det`` (pre-training; ``test_dataset`` is then an optional held-out set for
    evaluation) or ``finetune-cls``/``finetune-det`` (``init`` required; tested on ``test_dataset``,
    or on a deterministic stratified split of ``dataset`` of ``test_fraction``).

    ``params["holdout_classes"]`` (pre-training only, the study's Table 2): every image that carries a
    label or any box of one of these classes is removed from the training images (and from
    ``test_dataset``), and the classes from the run's class list, so the network never sees them, not
    even unlabelled. Names that are neither an image label nor a box label of ``dataset`` are refused.
    """
    params = dict(params or {})
    finetune = task.startswith("finetune-")
    if finetune and init is None:
        raise ValueError("fine-tuning starts from a registered backbone; name it (backbone=...)")
    init_row = None
    if init is not None:
        from featscope.workspace.backbones import get_backbone_row

        init_row = get_backbone_row(ctx, init)
        if "arch" not in params:
            params["arch"] = init_row.arch
    cfg = resolve_config(task, preset, params)
    if init_row is not None and init_row.arch != cfg.arch:
        raise ValueError(f"backbone {init_row.name!r} is a {init_row.arch}, the run a {cfg.arch}: leave arch out "
                         f"(it follows the backbone) or start from a {cfg.arch}")
    ds = get_dataset(ctx, dataset)
    test_ds = get_dataset(ctx, test_dataset) if test_dataset is not None else None
    if cfg.holdout_classes and finetune:
        raise ValueError("holdout_classes applies to pre-training runs (cls, det); a fine-tuning run uses "
                         "every class of its data set: leave holdout_classes out")
    if cfg.holdout_classes and init_row is not None:
        _check_start_never_saw(ctx, init_row, cfg.holdout_classes)
    masks = None
    if task == "finetune-seg":
        from featscope.workspace.segmentation_runs import plan_segmentation

        train, test, chosen, masks = plan_segmentation(ctx, cfg, ds, test_ds, classes)
    else:
        train, test, chosen = _plan_samples(ctx, task, cfg, ds, test_ds, classes)
    init_desc, init_fp = _init_of(cfg, init_row)
    return TrainPlan(task, preset, cfg, ds, train, test, test_ds, chosen, init_desc, init_fp,
                     init_row.id if init_row else None, name, masks=masks)


def _check_start_never_saw(ctx: Context, init_row, held: Sequence[str]) -> None:
    """Refuse a start that has seen held-out classes: a featscope run's trunk trained on them (its own
    classes), or a network whose classifier names them. Either would make "never saw" (Table 2) false."""
    seen: set[str] = set(((init_row.network or {}).get("class_names")) or [])
    if str(init_row.spec).startswith("run:"):
        try:
            seen |= set(_store(ctx).get(int(str(init_row.spec)[4:])).classes or [])
        except (ValueError, LookupError):
            pass
    overlap = sorted(seen & set(held))
    if overlap:
        raise ValueError(f"backbone {init_row.name!r} was trained on {', '.join(overlap)}: a run started from it has "
                         f"seen the classes it holds out. Start from a seeded random trunk (no init backbone), "
                         f"or from a backbone that never saw them")


def _plan_samples(ctx: Context, task: str, cfg: TrainConfig, ds: Dataset, test_ds: Dataset | None,
                  classes: Sequence[str] | None) -> tuple[list[Sample], list[Sample], list[str]]:
    """(training samples, test samples, classes) of a classification or detection run, checked."""
    base = "cls" if task.endswith("cls") else "det"
    samples = _samples(ctx, ds)
    check_samples(samples, _classes(samples, base, None, ds.name), base, f"data set {ds.name!r}")
    held = list(cfg.holdout_classes)
    if held:
        if classes and set(classes) & set(held):
            raise ValueError(f"class(es) {', '.join(sorted(set(classes) & set(held)))} are both chosen and held "
                             f"out; name each class in one of the two lists only")
        samples = _hold_out(samples, held, ds.name)
        left = [] if base == "cls" else _classes(samples, base, None, ds.name)  # cls: [] refuses a single class
        check_samples(samples, left, base, f"data set {ds.name!r} without the held-out classes ({', '.join(held)})")
    chosen = _classes(samples, base, classes, ds.name)
    check_samples(samples, chosen, base, f"data set {ds.name!r}")
    train, test = samples, []
    if test_ds is not None:
        test = _samples(ctx, test_ds)
        if held:
            test = _hold_out(test, held, test_ds.name, check=False)
        check_samples(test, chosen, base, f"test data set {test_ds.name!r}")
    elif task.startswith("finetune-"):
        train, test = _split(samples, cfg.test_fraction, cfg.seed, ds.name)
        check_samples(train, chosen, base, f"the training split of {ds.name!r}")
        check_samples(test, chosen, base, f"the test split of {ds.name!r}")
    return train, test, chosen


def _init_of(cfg: TrainConfig, init_row) -> tuple[str, str]:
    """(description, fingerprint) of where the trunk starts: a seeded random one or a registered backbone."""
    if init_row is None:
        zero_init = cfg.norm == "bn" and cfg.zero_init_residual
        init_desc = f"random trunk (seed {cfg.seed}{'' if zero_init or cfg.norm != 'bn' else ', no zero-init residuals'})"
        init_fp = f"seed:{cfg.arch}:{cfg.seed}" + ("" if zero_init or cfg.norm != "bn" else ":no-zero-init")
        return init_desc, init_fp
    return f"backbone {init_row.name} ({init_row.spec})", init_row.fingerprint


def _samples(ctx: Context, ds: Dataset) -> list[Sample]:
    root = Path(ds.root)
    return [Sample(root / im.relpath, im.label, tuple((b.label, b.x0, b.y0, b.x1, b.y1) for b in boxes),
                   tuple(b.occlusion for b in boxes) if any(b.occlusion is not None for b in boxes) else ())
            for im in readable_images(ctx, ds.id) for boxes in [image_boxes(im)]]


def _hold_out(samples: list[Sample], held: Sequence[str], name: str, *, check: bool = True) -> list[Sample]:
    """``samples`` without every image that carries a label or any box of a ``held`` class (the study's
    Table 2: the pre-training never sees those categories, not even as unlabelled background).

    ``check``: refuse class names that are neither an image label nor a box label of the data set.
    """
    if check:
        known = sorted({s.label for s in samples if s.label is not None} | {b[0] for s in samples for b in s.boxes})
        unknown = [c for c in held if c not in known]
        if unknown:
            raise ValueError(f"cannot hold out unknown class(es) {', '.join(map(repr, unknown))}: the classes of "
                             f"{name!r} are {', '.join(known) or 'none'}")
    drop = set(held)
    return [s for s in samples if s.label not in drop and not any(b[0] in drop for b in s.boxes)]


def _classes(samples: list[Sample], task: str, wanted: Sequence[str] | None, name: str) -> list[str]:
    present = sorted({s.label for s in samples if s.label is not None} if task == "cls"
                     else {b[0] for s in samples for b in s.boxes})
    if not wanted:
        return present
    unknown = [c for c in wanted if c not in present]
    if unknown:
        what = "image labels" if task == "cls" else "box labels"
        raise ValueError(f"unknown class(es) {', '.join(map(repr, unknown))}: the {what} of {name!r} are "
                         f"{', '.join(present) or 'none'}")
    if task == "cls" and len(set(wanted)) < 2:
        raise ValueError("classification needs at least two classes")
    return sorted(set(wanted))


def _split(samples: list[Sample], test_fraction: float, seed: int, name: str) -> tuple[list[Sample], list[Sample]]:
    """Deterministic stratified train/test split by image label (the probes' splitter)."""
    from featscope.analysis.probes import make_splits

    if len(samples) < 2:
        raise ValueError(f"data set {name!r} has {len(samples)} image(s), too few to split into train and test")
    labels = [s.label if s.label is not None else "" for s in samples]
    try:
        parts = make_splits(labels, val_fraction=0.0, test_fraction=test_fraction, seed=seed)
    except ValueError as e:
        raise ValueError(f"cannot split {name!r} into train and test: {e}") from None
    return [samples[i] for i in parts.train], [samples[i] for i in parts.test]


# ------------------------------------------------------------------------------------------------ running

def train(ctx: Context, task: str, dataset: str | int, *, preset: str = "cpu-demo", init: str | int | None = None,
          val_dataset: str | int | None = None, classes: Sequence[str] | None = None, name: str | None = None,
          restart: bool = False, progress: Callable[[TrainProgress], None] | None = None,
          check: Callable[[], None] | None = None, on_message: Say | None = None, job_id: int | None = None,
          **params: Any) -> RunInfo:
    """Pre-train a ``cls`` (ResNet + linear classifier) or ``det`` (Faster R-CNN, the study's head) run.

    Both start from the same seeded random trunk (``seed``), or from the trunk of ``init`` (a
    registered backbone). ``val_dataset``: held-out images evaluated at the end (top-1 or AP per
    IoU). The finished run is registered as backbone ``run:<id>``. ``params``: any
    :class:`~featscope.training.presets.TrainConfig` field, over the preset's values.
    """
    if task not in ("cls", "det"):
        raise ValueError(f"train task must be 'cls' or 'det', got {task!r}")
    p = plan(ctx, task, dataset, preset=preset, init=init, test_dataset=val_dataset, classes=classes, name=name,
             params=params)
    return execute(ctx, p, restart=restart, progress=progress, check=check, on_message=on_message, job_id=job_id)


def finetune(ctx: Context, task: str, backbone: str | int, dataset: str | int, *, preset: str = "cpu-demo",
             test_dataset: str | int | None = None, classes: Sequence[str] | None = None, name: str | None = None,
             restart: bool = False, progress: Callable[[TrainProgress], None] | None = None,
             check: Callable[[], None] | None = None, on_message: Say | None = None, job_id: int | None = None,
             **params: Any) -> RunInfo:
    """Fine-tune ``backbone`` on ``dataset`` for detection (``det``: new heads, AP at IoU 0.1..0.9, the
    study's Table 1 / Fig. 1; the test set's boxes are kept in ``detections.json``, see
    :func:`run_detections`), classification (``cls``: the whole network, top-1 with a Wilson interval,
    Table 8) or semantic segmentation (``seg``: torchvision's DeepLabV3 head on the trunk, mIoU and
    trimap / anti-trimap accuracy, Table 4 and Fig. 2; needs the data set's masks), tested on
    ``test_dataset`` or a deterministic split of ``dataset``."""
    if task not in FINETUNE_TASKS:
        raise ValueError(f"fine-tuning task must be one of {', '.join(FINETUNE_TASKS)}, got {task!r}")
    p = plan(ctx, f"finetune-{task}", dataset, preset=preset, init=backbone, test_dataset=test_dataset,
             classes=classes, name=name, params=params)
    return execute(ctx, p, restart=restart, progress=progress, check=check, on_message=on_message, job_id=job_id)


def execute(ctx: Context, p: TrainPlan, *, restart: bool = False,
            progress: Callable[[TrainProgress], None] | None = None, check: Callable[[], None] | None = None,
            on_message: Say | None = None, job_id: int | None = None) -> RunInfo:
    """Train a checked plan: claim (or resume) its run, fit, evaluate, register; rank 0 keeps the books."""
    dist = Distributed.from_env()
    joined = dist.active and not torch.distributed.is_initialized()
    dist.init(resolve_device(p.config.device, dist))
    try:
        return _execute(ctx, p, dist, restart, progress, check, on_message, job_id)
    finally:
        if joined and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def _execute(ctx: Context, p: TrainPlan, dist: Distributed, restart: bool,
             progress: Callable[[TrainProgress], None] | None, check: Callable[[], None] | None,
             on_message: Say | None, job_id: int | None) -> RunInfo:
    say = on_message or log.info
    store = _store(ctx)
    cfg = _resolved(p.config)
    row, finished, problem = None, False, None
    if dist.rank == 0:
        try:
            row, finished = store.claim(p.key, _fields(p, cfg, job_id), restart=restart)
        except ValueError as e:
            problem = str(e)
    row_id, run_dir, finished, problem = _share(dist, row, finished, problem)
    if problem:
        raise ValueError(problem)
    if finished:
        say(f"run {row_id} is already trained (cached); `featscope runs show {row_id}`")
        return RunInfo.of(store.get(row_id), cached=True)
    say(f"run {row_id}: {p.task} on {p.dataset.name!r} ({len(p.train)} images, {len(p.classes)} classes), "
        f"{cfg.arch}, preset {p.preset}, from {p.init}")
    task = _task(ctx, p, cfg)
    ticker = _Ticker(store, row_id, progress, check, dist)
    try:
        evaluate = (lambda model, it: _eval_row(task, model, p.test)) if p.test and cfg.eval_every else None
        result = fit(task, cfg.loop(), Path(run_dir), identity=p.key, progress=ticker.progress, check=ticker.check,
                     dist=dist, evaluate=evaluate, eval_every=cfg.eval_every)
    except BaseException as e:
        if dist.rank == 0:
            _record_stop(store, row_id, e)
        raise
    if dist.rank != 0:
        return RunInfo.of(store.get(row_id))
    for note in result.notes:
        say(note)
    return _finish(ctx, store, p, cfg, task, result, row_id, Path(run_dir), say)


def _store(ctx: Context) -> RunStore:
    return RunStore(ctx.session, ctx.settings.data_dir / "runs")


def _resolved(cfg: TrainConfig) -> TrainConfig:
    """``dilated=None`` made explicit (what the detector will build)."""
    if cfg.dilated is None:
        return replace(cfg, dilated=can_dilate(cfg.arch) and not cfg.fpn)
    return cfg


def _fields(p: TrainPlan, cfg: TrainConfig, job_id: int | None) -> dict[str, Any]:
    return {"name": p.name or "", "task": p.task, "preset": p.preset, "config": cfg.to_dict(),
            "dataset_id": p.dataset.id, "test_dataset_id": p.test_dataset.id if p.test_dataset else None,
            "classes": list(p.classes), "init": p.init, "init_backbone_id": p.init_backbone_id, "job_id": job_id}


def _share(dist: Distributed, row: Any, finished: bool, problem: str | None) -> tuple[int, str, bool, str | None]:
    """Rank 0's claim, told to every rank."""
    mine = [row.id if row is not None else -1, row.dir if row is not None else "", finished, problem]
    if dist.active:
        torch.distributed.broadcast_object_list(mine, src=0)
    return int(mine[0]), str(mine[1]), bool(mine[2]), mine[3]


def _task(ctx: Context, p: TrainPlan, cfg: TrainConfig):
    from featscope.training.tasks import make_task

    if p.init_backbone_id is None:
        trunk, source = initial_trunk(cfg.arch, cfg.seed, zero_init_residual=cfg.norm == "bn" and cfg.zero_init_residual), p.init
    else:
        from featscope.workspace.backbones import open_backbone

        bb = open_backbone(ctx, p.init_backbone_id)
        trunk, source = trunk_state(bb.model), p.init
    return make_task(p.task, cfg, p.classes, p.train, trunk, source, masks=p.masks)


class _Ticker:
    """Progress and cancel checks of a running run: the caller's callbacks every iteration, the catalog
    row (progress, heartbeat, cancel flag) every couple of seconds."""

    def __init__(self, store: RunStore, run_id: int, progress, check, dist: Distributed) -> None:
        self.store, self.run_id, self.user_progress, self.user_check = store, run_id, progress, check
        self.enabled = dist.rank == 0
        self.last = 0.0
        self.cancel = False
        self.pending: dict[str, Any] = {}

    def progress(self, p: TrainProgress) -> None:
        self.pending = {"iteration": p.iteration, "total_iterations": p.iterations, "epoch": p.epoch,
                        "progress": p.iteration / max(p.iterations, 1), "message": p.line()}
        if self.user_progress is not None:
            self.user_progress(p)

    def check(self) -> None:
        if self.user_check is not None:
            self.user_check()
        if self.enabled and time.monotonic() - self.last >= _HEARTBEAT_SECONDS:
            self.last = time.monotonic()
            self.cancel = self.store.heartbeat(self.run_id, **self.pending)
        if self.cancel:
            raise RunCancelled(f"run {self.run_id} was cancelled")


def _record_stop(store: RunStore, run_id: int, e: BaseException) -> None:
    from featscope.training.loop import TrainingDiverged

    if isinstance(e, TrainingDiverged):
        store.finish(run_id, "failed", error=str(e), message="failed: the loss diverged")
    elif isinstance(e, (RunCancelled, KeyboardInterrupt)) or type(e).__name__ == "JobCancelled":
        store.finish(run_id, "cancelled", message="cancelled; run it again to continue from its last checkpoint")
    else:
        store.finish(run_id, "failed", error=f"{type(e).__name__}: {e}",
                     message="failed; run it again to continue from its last checkpoint")


def _eval_row(task, model, samples: list[Sample]) -> dict[str, Any]:
    device = next(model.parameters()).device
    res = task.evaluate(model, samples, device)
    return {k: v for k, v in res.items() if k != "per_class"}


def _image_entry(row, path: Path, root: Path) -> dict[str, Any]:
    """A test image's entry of ``detections.json``; from the file itself when the data set was rescanned
    during the run and its catalog row is gone (the evaluation is done: it must not fail now)."""
    if row is not None:
        return {"relpath": row.relpath, "width": row.width or 0, "height": row.height or 0}
    from featscope.datasets.images import probe_image

    try:
        width, height = probe_image(path)
    except (OSError, ValueError):
        width = height = 0
    return {"relpath": Path(path).relative_to(root).as_posix() if Path(path).is_relative_to(root) else str(path),
            "width": width, "height": height}


def _final_evaluation(ctx: Context, p: TrainPlan, task, model, device: torch.device, run_dir: Path) -> dict[str, Any]:
    """The test-set evaluation; a detection fine-tuning run also keeps its boxes in ``detections.json``, and its
    missed-object rates are counted from that document (see ``DetectionTask.score``)."""
    if p.task != "finetune-det":
        return task.evaluate(model, p.test, device)
    gts, preds = task.predict(model, p.test, device)
    ds = p.test_dataset or p.dataset
    root = Path(ds.root)
    rows = {str(root / im.relpath): im for im in readable_images(ctx, ds.id)}
    images = [_image_entry(rows.get(str(s.path)), s.path, root) for s in p.test]
    # the document first: the stored missed-object rates are counted from it (its rounded scores and boxes),
    # as every later recount from detections.json is, so the two agree
    doc = task.detections(gts, preds, images)
    evaluation = task.score(gts, preds, doc)
    write_detections(run_dir, doc)
    return evaluation


def _finish(ctx: Context, store: RunStore, p: TrainPlan, cfg: TrainConfig, task, result, row_id: int,
            run_dir: Path, say: Say) -> RunInfo:
    from featscope.training.loop import MetricsLog

    evaluation = None
    if p.test:
        say(f"evaluating on {len(p.test)} held-out images")
        evaluation = _final_evaluation(ctx, p, task, result.model, torch.device(result.device), run_dir)
        MetricsLog(run_dir, True).write({"kind": "eval", "iteration": result.iterations, "epoch": cfg.epochs - 1,
                                         **{k: v for k, v in evaluation.items() if k != "per_class"}})
    summary = {"iterations": result.iterations, "resumed_from": result.resumed_from, "seconds": result.seconds,
               "images_per_second": result.images_per_second, "final_loss": result.final_loss,
               "device": result.device, "precision": result.precision, "world_size": result.world_size,
               "train_images": len(p.train), "test_images": len(p.test), "eval": evaluation}
    values: dict[str, Any] = {"result": _jsonable(summary), "progress": 1.0, "iteration": result.iterations,
                              "total_iterations": result.iterations, "message": "done"}
    if p.task in ("cls", "det"):
        backbone = _register(ctx, store.get(row_id), p, cfg, task, result.model, run_dir)
        values.update(backbone_id=backbone.id, fingerprint=backbone.fingerprint)
        say(f"registered backbone {backbone.name!r} (run:{row_id})")
    return RunInfo.of(store.finish(row_id, "done", **values))


def _register(ctx: Context, row, p: TrainPlan, cfg: TrainConfig, task, model, run_dir: Path):
    from featscope.training.models import detector_to_tap_state
    from featscope.workspace.backbones import add_backbone

    model = model.cpu()
    if p.task == "det" and not cfg.fpn:
        state = detector_to_tap_state(model)
    elif p.task == "det":
        state = trunk_state(model)
    else:
        state = model.state_dict()
    cfg_dict = {**cfg.to_dict(), "dilated_resolved": bool(cfg.dilated)}
    path = write_backbone_file(run_dir / BACKBONE_FILE, state, run_id=row.id, task=p.task, arch=cfg.arch,
                               preprocess=task.preprocess, class_names=list(p.classes), cfg=cfg_dict)
    try:
        return add_backbone(ctx, f"run:{row.id}", weights=path, name=row.name)
    except ValueError:  # the name is taken by other weights (a restarted run): keep both
        return add_backbone(ctx, f"run:{row.id}", weights=path, name=f"{row.name}-{int(time.time())}")


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (np.floating, np.integer)):
        return x.item()
    return x


# ------------------------------------------------------------------------------------------------ reading

def list_runs(ctx: Context, task: str | None = None) -> list[RunInfo]:
    """Runs, newest first (``task``: only ``cls``, ``det``, ``finetune-cls``, ``finetune-det`` or ``finetune-seg``)."""
    return [RunInfo.of(r) for r in _store(ctx).list(task)]


def get_run(ctx: Context, run: int | str) -> RunInfo:
    """One run by id or name."""
    return RunInfo.of(_row(ctx, run))


def _row(ctx: Context, run: int | str):
    store = _store(ctx)
    if isinstance(run, int) or str(run).isdigit():
        try:
            return store.get(int(run))
        except LookupError as e:
            raise NotFound(str(e)) from None
    rows = [r for r in store.list() if r.name == str(run)]
    if not rows:
        raise NotFound(f"no training run {run!r}; `featscope runs list` (GET /api/v1/runs) shows the runs")
    return rows[0]


def run_metrics(ctx: Context, run: int | str, kind: str | None = None) -> list[dict[str, Any]]:
    """The run's metrics log: ``train`` rows (iteration, epoch, loss and its parts, lr, images/s) and
    ``eval`` rows (top-1 or AP per IoU), oldest first; ``kind`` keeps one of the two."""
    row = _row(ctx, run)
    rows = read_metrics(Path(row.dir)) if row.dir else []
    return [r for r in rows if kind is None or r.get("kind") == kind]


def run_detections(ctx: Context, run: int | str) -> dict[str, Any]:
    """A finished detection fine-tuning run's test-set boxes (``detections.json``): ``{"classes",
    "score_floor", "images": [{"relpath", "width", "height", "gt": [{"label", "box", "occlusion"}],
    "pred": [{"label", "box", "score"}]}]}`` (see :mod:`featscope.training.detections`)."""
    row = _row(ctx, run)
    doc = read_detections(Path(row.dir)) if row.dir else None
    if doc is None:
        if row.task != "finetune-det":
            why = f"it is a {row.task} run; only detection fine-tuning runs keep their test-set boxes"
        elif row.state != "done":
            why = f"it has not finished (state {row.state}); its boxes are written once it is done"
        else:
            why = "it finished before featscope kept test-set boxes; run it again with restart to get them"
        raise NotFound(f"run {row.id} ({row.name}) has no detections: {why}")
    return doc


def cancel_run(ctx: Context, run: int | str) -> RunInfo:
    """Ask a running run to stop (it keeps its last checkpoint; running it again continues from there)."""
    return RunInfo.of(_store(ctx).request_cancel(_row(ctx, run).id))


def run_weights(ctx: Context, run: int | str) -> Path:
    """The backbone file of a finished pre-training run (what ``run:<id>`` loads)."""
    row = _row(ctx, run)
    path = Path(row.dir) / BACKBONE_FILE
    if row.task not in ("cls", "det"):
        raise ValueError(f"run {row.id} is a {row.task} run; only pre-training runs (cls, det) are backbones")
    if row.state != "done" or not path.exists():
        raise ValueError(f"run {row.id} has not finished (state {row.state}); its backbone exists once it is done")
    return path


def export_run(ctx: Context, run: int | str, out: str | Path, *, format: str = "torchvision") -> Path:
    """Write a finished run's weights for other tools (see :func:`featscope.training.runs.export_run_weights`)."""
    return export_run_weights(run_weights(ctx, run), Path(out), format)
