"""The one training loop: devices, autocast, DDP, resumable checkpoints, metrics log, progress, cancel.

Public names: :class:`LoopConfig`, :class:`Task`, :class:`TrainProgress`, :class:`FitResult`,
:class:`TrainingDiverged`, :class:`Distributed`, :class:`CheckpointWriter`, :func:`fit`, :func:`read_metrics`,
:func:`lr_factor`, :func:`load_checkpoint`, :func:`save_checkpoint`.

Written by hand (not a trainer library) because resumability is the product here: a checkpoint holds
the model, optimizer, scheduler, AMP scaler, every rank's RNG states and the sampler position, and is
written atomically every ``checkpoint_every`` iterations and at the end (from a snapshot, in a
background thread: the steps go on while the disk writes); a run started again continues
from it and, on CPU, ends with the same weights as an uninterrupted run. The step itself is what
torchvision's detection reference does (forward, summed loss, ``zero_grad``, backward through the AMP
scaler, step, per-iteration LR scheduler), so it costs no more.

Scale-out is torch.distributed: under ``torchrun`` (``WORLD_SIZE`` > 1) the model runs in
``DistributedDataParallel`` (NCCL on GPUs, gloo on CPU) and each rank reads its share through a
``DistributedSampler``; only rank 0 writes checkpoints, metrics and progress.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import threading
import time
import uuid
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from featscope.cache.store import atomic_write_bytes
from featscope.training.data import EpochSampler

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.pt"
METRICS = "metrics.jsonl"
CHECKPOINT_VERSION = 1
PRECISIONS = ("auto", "fp32", "bf16", "fp16")


class TrainingDiverged(ValueError):
    """The loss stopped being a finite number; the last good checkpoint is kept.

    A ValueError: running the same configuration again would diverge again, so a job fails instead of retrying.
    """


OPTIMIZERS = ("sgd", "adamw")


@dataclass(frozen=True)
class LoopConfig:
    """How to train: schedule, optimiser, devices and bookkeeping. ``batch_size`` is global (all ranks)."""

    epochs: int = 1
    batch_size: int = 16
    lr: float = 0.02
    optimizer: str = "sgd"  # "sgd" (with momentum) or "adamw" (momentum is then unused)
    momentum: float = 0.9
    weight_decay: float = 1e-4
    warmup_iters: int = 0
    warmup_factor: float = 0.001
    schedule: str = "step"  # "step" (x lr_gamma at each of lr_steps, in epochs) or "cosine"
    lr_steps: tuple[int, ...] = ()
    lr_gamma: float = 0.1
    grad_clip: float | None = None
    precision: str = "auto"  # auto: bf16 on CUDA, fp32 on CPU
    channels_last: bool | None = None  # None: on CUDA only
    device: str = "auto"
    num_workers: int = 2
    seed: int = 0
    checkpoint_every: int = 200
    log_every: int = 10
    sync_bn: bool = True  # SyncBatchNorm under DDP on CUDA (not available on CPU)
    threads: int | None = None  # intra-op CPU threads while training (None: torch's default, all cores)

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "checkpoint_every", "log_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.lr <= 0 or self.weight_decay < 0 or not 0 <= self.momentum < 1:
            raise ValueError("need lr > 0, weight_decay >= 0 and 0 <= momentum < 1")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}")
        if self.schedule not in ("step", "cosine"):
            raise ValueError(f"schedule must be 'step' or 'cosine', got {self.schedule!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.warmup_iters < 0 or self.num_workers < 0:
            raise ValueError("warmup_iters and num_workers must be >= 0")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads must be >= 1 or None, got {self.threads}")
        if any(s < 1 for s in self.lr_steps):
            raise ValueError(f"lr_steps are epochs >= 1, got {list(self.lr_steps)}")


class Task(Protocol):
    """What the loop trains: a model, its data and its loss (see :mod:`featscope.training.tasks`)."""

    def build_model(self) -> nn.Module: ...

    def train_data(self) -> Dataset: ...

    def collate(self, batch: list) -> Any: ...

    def loss(self, model: nn.Module, batch: Any, device: torch.device,
             memory_format: torch.memory_format) -> tuple[torch.Tensor, dict[str, torch.Tensor]]: ...

    def batch_size_of(self, batch: Any) -> int: ...


@dataclass(frozen=True)
class TrainProgress:
    """After each iteration (rank 0): where the run is, its loss, learning rate, speed and ETA."""

    epoch: int
    epochs: int
    iteration: int
    iterations: int
    loss: float
    lr: float
    images_per_second: float
    eta_seconds: float
    message: str | None = None

    def line(self) -> str:
        eta = time.strftime("%H:%M:%S", time.gmtime(self.eta_seconds)) if math.isfinite(self.eta_seconds) else "?"
        return (f"epoch {self.epoch + 1}/{self.epochs}, iteration {self.iteration}/{self.iterations}, "
                f"loss {self.loss:.4f}, lr {self.lr:.5f}, {self.images_per_second:.1f} img/s, ETA {eta}")


@dataclass
class FitResult:
    """The trained model (unwrapped, on its device), where the run started and what it cost."""

    model: nn.Module
    iterations: int
    resumed_from: int
    seconds: float
    images_per_second: float
    final_loss: float | None
    device: str
    precision: str
    world_size: int
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Distributed:
    """This process's place in a torch.distributed job (world 1 without torchrun)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @classmethod
    def from_env(cls) -> "Distributed":
        world = int(os.environ.get("WORLD_SIZE", "1"))
        return cls(int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0")))

    @property
    def active(self) -> bool:
        return self.world > 1

    def init(self, device: torch.device) -> None:
        """Join the process group (NCCL on GPUs, gloo on CPU) if torchrun started several processes."""
        if device.type == "cuda":
            torch.cuda.set_device(device)  # NCCL collectives and .cuda() use the current device
        if self.active and not torch.distributed.is_initialized():
            backend = "nccl" if device.type == "cuda" else "gloo"
            torch.distributed.init_process_group(backend=backend)


def resolve_device(device: str, dist: Distributed) -> torch.device:
    """``auto``: this rank's GPU when CUDA is present, else the CPU."""
    if device == "auto":
        return torch.device(f"cuda:{dist.local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' requested but torch sees no CUDA GPU; use device='auto' or 'cpu'")
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device(f"cuda:{dist.local_rank}")
    return dev


def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto``: bf16 on a GPU that supports it (fp16 on older ones), fp32 on the CPU."""
    if precision != "auto":
        if precision == "fp16" and device.type != "cuda":
            raise ValueError("fp16 training needs a CUDA GPU (its loss scaling is CUDA's); use bf16 or fp32 on the CPU")
        return precision
    if device.type != "cuda":
        return "fp32"
    return "bf16" if torch.cuda.is_bf16_supported() else "fp16"


def lr_factor(step: int, cfg: LoopConfig, iters_per_epoch: int, total: int) -> float:
    """The learning-rate multiplier at ``step``: linear warmup times a step or cosine decay."""
    warm = 1.0
    if step < cfg.warmup_iters:
        warm = cfg.warmup_factor + (1.0 - cfg.warmup_factor) * step / cfg.warmup_iters
    if cfg.schedule == "cosine":
        span = max(1, total - cfg.warmup_iters)
        t = min(1.0, max(0.0, (step - cfg.warmup_iters) / span))
        return warm * 0.5 * (1.0 + math.cos(math.pi * t))
    passed = sum(1 for e in cfg.lr_steps if step >= e * iters_per_epoch)
    return warm * cfg.lr_gamma ** passed


# -- checkpoints and metrics ---------------------------------------------------------------------------

def _rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "python": random.getstate()}
    np_state = np.random.get_state()
    state["numpy"] = [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]]
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(_tuples(state["python"]))
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _tuples(x: Any) -> Any:
    return tuple(_tuples(v) for v in x) if isinstance(x, (list, tuple)) else x


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """``torch.save`` to a temp file beside ``path``, fsync, rename: readers see the old or the whole new one."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with open(tmp, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    from featscope.cache.store import _fsync_dir

    _fsync_dir(path.parent)


class CheckpointWriter:
    """Writes checkpoints in a background thread, one at a time, so training does not wait for the disk.

    :meth:`submit` copies the state into CPU buffers at the step boundary (so the weights the next
    steps change in place are never the ones being written), then writes them in the background.
    The buffers are kept and reused by the next checkpoint: a Faster R-CNN's weights and momenta are
    ~0.5 GB, and allocating (page-faulting) that much afresh every time costs more than the copy itself.
    The writer thread runs at the lowest CPU priority, so on a small CPU it yields to the training
    threads and the data loader. :meth:`wait` blocks until the last write is on disk (the loop calls it
    before it returns or raises, so "the last checkpoint" is always one that exists). A kill mid-write
    leaves the previous file (the write is atomic).
    """

    def __init__(self) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="featscope-checkpoint",
                                        initializer=_lowest_priority)
        self._pending = None
        self._buffers: Any = None

    def submit(self, path: Path, state: dict[str, Any]) -> None:
        self.wait()  # the buffers are free again only once the last write finished
        self._buffers = snapshot(state, into=self._buffers)
        self._pending = self._pool.submit(save_checkpoint, path, self._buffers)

    def wait(self) -> None:
        if self._pending is not None:
            pending, self._pending = self._pending, None
            pending.result()  # re-raises a failed write (disk full...) in the training thread

    def close(self) -> None:
        try:
            self.wait()
        finally:
            self._pool.shutdown(wait=True)
            self._buffers = None


def _lowest_priority() -> None:
    """Nice the calling thread to 19 (Linux schedules threads separately); elsewhere leave it as it is."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
    except (AttributeError, OSError):
        pass


def snapshot(obj: Any, into: Any = None) -> Any:
    """A deep copy of a state (nested dicts/lists of tensors) with every tensor copied to the CPU.

    ``into``: an earlier snapshot of a state of the same structure; its tensors are reused where the
    shape and dtype still match (copied into, not allocated again).
    """
    if isinstance(obj, torch.Tensor):
        src = obj.detach()
        if isinstance(into, torch.Tensor) and into.shape == src.shape and into.dtype == src.dtype \
                and into.device.type == "cpu" and into.data_ptr() != src.data_ptr():  # copy_ takes any strides
            return into.copy_(src)
        return src.to("cpu", copy=True)
    if isinstance(obj, dict):
        old = into if isinstance(into, dict) else {}
        return {k: snapshot(v, old.get(k)) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        old = into if isinstance(into, (list, tuple)) and len(into) == len(obj) else [None] * len(obj)
        return type(obj)(snapshot(v, o) for v, o in zip(obj, old))
    return obj


def load_checkpoint(path: Path) -> dict[str, Any] | None:
    """The checkpoint at ``path`` (tensors on the CPU), or None when there is none."""
    if not path.exists():
        return None
    return torch.load(path, map_location="cpu", weights_only=True)


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """The rows of a run's metrics log (JSON lines); a torn last line (a kill mid-write) is skipped."""
    path = Path(run_dir) / METRICS
    if not path.exists():
        return []
    rows = []
    for line in path.read_text("utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except ValueError:
            continue
    return rows


def _truncate_metrics(run_dir: Path, iteration: int) -> None:
    """Keep only rows up to ``iteration`` (rows after the checkpoint are computed again)."""
    rows = [r for r in read_metrics(run_dir) if int(r.get("iteration", 0)) <= iteration]
    text = "".join(json.dumps(r) + "\n" for r in rows)
    atomic_write_bytes(Path(run_dir) / METRICS, text.encode("utf-8"))


class MetricsLog:
    """Append-only JSON-lines log of a run (rank 0 writes; other ranks hold a no-op)."""

    def __init__(self, run_dir: Path, enabled: bool) -> None:
        self.path, self.enabled = Path(run_dir) / METRICS, enabled

    def write(self, row: dict[str, Any]) -> None:
        if not self.enabled:
            return
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps({**row, "time": time.time()}) + "\n")


# -- the loop --------------------------------------------------------------------------------------------

@dataclass
class _State:
    model: nn.Module
    ddp: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler
    sampler: EpochSampler
    iters_per_epoch: int
    total: int
    per_rank_batch: int
    seed: int


def fit(task: Task, cfg: LoopConfig, run_dir: Path, *, identity: str = "",
        progress: Callable[[TrainProgress], None] | None = None, check: Callable[[], None] | None = None,
        dist: Distributed | None = None, evaluate: Callable[[nn.Module, int], dict[str, Any]] | None = None,
        eval_every: int = 0) -> FitResult:
    """Train ``task`` under ``cfg``, resuming from ``run_dir/checkpoint.pt`` if present.

    ``identity``: what the run is (a content key); a checkpoint of another identity is refused.
    ``progress``: called on rank 0 after every iteration. ``check``: called on rank 0 before every
    iteration; whatever it raises (a cancel) stops every rank and propagates, keeping the last
    checkpoint. ``evaluate(model, iteration)``: run on rank 0 every ``eval_every`` epochs, its
    numbers logged as an ``eval`` row. A non-finite loss raises :class:`TrainingDiverged`.
    """
    before = torch.get_num_threads()
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    try:
        return _fit(task, cfg, Path(run_dir), identity, progress, check, dist or Distributed.from_env(), evaluate,
                    eval_every)
    finally:
        torch.set_num_threads(before)


def _fit(task: Task, cfg: LoopConfig, run_dir: Path, identity: str, progress: Callable[[TrainProgress], None] | None,
         check: Callable[[], None] | None, dist: Distributed,
         evaluate: Callable[[nn.Module, int], dict[str, Any]] | None, eval_every: int) -> FitResult:
    device = resolve_device(cfg.device, dist)
    dist.init(device)
    precision = resolve_precision(cfg.precision, device)
    run_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    st = _setup(task, cfg, device, precision, dist)
    ckpt = load_checkpoint(run_dir / CHECKPOINT)
    start, notes = _resume(st, ckpt, identity, dist, run_dir)
    trainer = _Trainer(task, cfg, st, dist, device, precision, run_dir, identity, check, evaluate, eval_every,
                       _Meter(MetricsLog(run_dir, dist.rank == 0), cfg, st, dist, progress))
    try:
        step = trainer.run(start, start if ckpt is not None else None)
    finally:
        trainer.writer.close()
    st.model.eval()
    return FitResult(model=st.model, iterations=step, resumed_from=start, seconds=time.perf_counter() - started,
                     images_per_second=trainer.meter.rate(), final_loss=trainer.meter.loss, device=str(device),
                     precision=precision, world_size=dist.world, notes=notes)


@dataclass
class _Trainer:
    """The iterations of one fit: batches, steps, stop checks, checkpoints and evaluations."""

    task: Task
    cfg: LoopConfig
    st: "_State"
    dist: Distributed
    device: torch.device
    precision: str
    run_dir: Path
    identity: str
    check: Callable[[], None] | None
    evaluate: Callable[[nn.Module, int], dict[str, Any]] | None
    eval_every: int
    meter: "_Meter"
    writer: CheckpointWriter = field(default_factory=CheckpointWriter)

    def run(self, step: int, last_saved: int | None) -> int:
        """Train from iteration ``step`` to the end; returns the last iteration done."""
        st, cfg = self.st, self.cfg
        memory_format = torch.channels_last if _channels_last(cfg, self.device) else torch.contiguous_format
        dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
        autocast = torch.autocast(self.device.type, dtype=dtype) if self.precision != "fp32" else nullcontext()
        while step < st.total:
            epoch, offset = divmod(step, st.iters_per_epoch)
            st.sampler.set_position(epoch, offset * st.per_rank_batch)
            loader = DataLoader(self.task.train_data(), batch_size=st.per_rank_batch, sampler=st.sampler,
                                collate_fn=self.task.collate, num_workers=cfg.num_workers, drop_last=True,
                                pin_memory=self.device.type == "cuda",
                                generator=torch.Generator().manual_seed(cfg.seed))
            for batch in loader:
                stop = _stopping(self.check, self.dist)
                st.ddp.train()
                with autocast:
                    loss, parts = self.task.loss(st.ddp, batch, self.device, memory_format)
                bad = _any_rank(not bool(torch.isfinite(loss.detach())), self.dist)
                if bad or stop:
                    raise _stop_reason(bad, stop, loss, step, epoch, cfg, last_saved)
                _update(st, loss, cfg)
                step += 1
                self.meter.after(step, epoch, loss, parts, self.task.batch_size_of(batch))
                if step % cfg.checkpoint_every == 0 or step == st.total:
                    _checkpoint(st, step, self.identity, self.run_dir, self.dist, cfg, self.writer)
                    last_saved = step
                if self.evaluate is not None and self.eval_every and step < st.total \
                        and step % (self.eval_every * st.iters_per_epoch) == 0:
                    _evaluate(self.evaluate, st, step, epoch, self.meter.metrics, self.dist)
                if step >= st.total:
                    break
        return step


def _update(st: "_State", loss: torch.Tensor, cfg: LoopConfig) -> None:
    """One optimiser step through the AMP scaler (a no-op scaler unless fp16), then the schedule's."""
    st.optimizer.zero_grad(set_to_none=True)
    st.scaler.scale(loss).backward()
    if cfg.grad_clip:
        st.scaler.unscale_(st.optimizer)
        nn.utils.clip_grad_norm_(st.model.parameters(), cfg.grad_clip)
    st.scaler.step(st.optimizer)
    st.scaler.update()
    st.scheduler.step()


class _Meter:
    """Speed, metrics rows (every ``log_every`` iterations) and progress callbacks, on rank 0."""

    def __init__(self, metrics: MetricsLog, cfg: LoopConfig, st: "_State", dist: Distributed,
                 progress: Callable[[TrainProgress], None] | None) -> None:
        self.metrics, self.cfg, self.st, self.dist, self.progress = metrics, cfg, st, dist, progress
        self.t0 = time.perf_counter()
        self.seen, self.window, self.loss = 0, (self.t0, 0), None

    def rate(self) -> float:
        return self.seen / max(time.perf_counter() - self.t0, 1e-9) if self.seen else 0.0

    def after(self, step: int, epoch: int, loss: torch.Tensor, parts: dict[str, torch.Tensor], batch: int) -> None:
        self.seen += batch * self.dist.world
        self.loss = float(loss.detach())
        if self.dist.rank != 0:
            return
        lr = self.st.optimizer.param_groups[0]["lr"]
        if step % self.cfg.log_every == 0 or step == self.st.total:
            now = time.perf_counter()
            window_rate = (self.seen - self.window[1]) / max(now - self.window[0], 1e-9)
            self.window = (now, self.seen)
            self.metrics.write({"kind": "train", "iteration": step, "epoch": epoch, "loss": self.loss,
                                **{k: float(v) for k, v in parts.items()}, "lr": lr,
                                "images_per_second": window_rate})
        if self.progress is not None:
            rate = self.rate()
            eta = (self.st.total - step) * self.st.per_rank_batch * self.dist.world / max(rate, 1e-9)
            self.progress(TrainProgress(epoch, self.cfg.epochs, step, self.st.total, self.loss, lr, rate, eta))


def _setup(task: Task, cfg: LoopConfig, device: torch.device, precision: str, dist: Distributed) -> _State:
    if cfg.batch_size % dist.world:
        raise ValueError(f"batch_size {cfg.batch_size} is global and must divide by the {dist.world} processes")
    per_rank = cfg.batch_size // dist.world
    data = task.train_data()
    sampler = EpochSampler(len(data), num_replicas=dist.world, rank=dist.rank, seed=cfg.seed)
    iters_per_epoch = sampler.num_samples // per_rank
    if iters_per_epoch < 1:
        raise ValueError(f"the training split has {len(data)} images, fewer than one batch of {cfg.batch_size}; "
                         f"lower batch_size or use more images")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        model = task.build_model()
    model = model.to(device)
    if _channels_last(cfg, device):
        model = model.to(memory_format=torch.channels_last)
    ddp: nn.Module = model
    if dist.active:
        if device.type == "cuda" and cfg.sync_bn:
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        ddp = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.optimizer == "adamw":
        optimizer: torch.optim.Optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    else:
        optimizer = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    total = cfg.epochs * iters_per_epoch
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, cfg, iters_per_epoch, total))
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    return _State(model, ddp, optimizer, scheduler, scaler, sampler, iters_per_epoch, total, per_rank, cfg.seed)


def _channels_last(cfg: LoopConfig, device: torch.device) -> bool:
    return device.type == "cuda" if cfg.channels_last is None else bool(cfg.channels_last)


def _resume(st: _State, ckpt: dict[str, Any] | None, identity: str, dist: Distributed,
            run_dir: Path) -> tuple[int, list[str]]:
    """Load ``ckpt`` into the state; returns (iteration to start from, notes)."""
    notes: list[str] = []
    if ckpt is None:  # a fresh run seeds the process's random streams (the detector's RoI sampling draws from them)
        seed = st.seed * 1000 + dist.rank
        torch.manual_seed(seed)
        random.seed(seed)
        np.random.seed(seed % 2**32)
        if dist.rank == 0:
            _truncate_metrics(run_dir, 0)
        return 0, notes
    if ckpt.get("version") != CHECKPOINT_VERSION or ckpt.get("identity") != identity:
        raise ValueError(f"{run_dir / CHECKPOINT} belongs to another run or featscope version; "
                         f"delete it (or the run) to start this one over")
    if ckpt["sampler"]["num_samples"] != len(st.sampler.dataset) or ckpt["total"] != st.total:
        raise ValueError(f"{run_dir / CHECKPOINT} was made for {ckpt['sampler']['num_samples']} training images and "
                         f"{ckpt['total']} iterations; the data or schedule changed: start a new run")
    made_with = (ckpt.get("config") or {}).get("optimizer", "sgd")
    if made_with != type(st.optimizer).__name__.lower():
        raise ValueError(f"{run_dir / CHECKPOINT} was made with the {made_with} optimiser, this run uses "
                         f"{type(st.optimizer).__name__}; start a new run (or keep optimizer={made_with})")
    st.model.load_state_dict(ckpt["model"])
    st.optimizer.load_state_dict(ckpt["optimizer"])
    st.scheduler.load_state_dict(ckpt["scheduler"])
    st.scaler.load_state_dict(ckpt["scaler"])
    rngs = ckpt["rng"]
    if len(rngs) == dist.world:
        _set_rng_state(rngs[dist.rank])
    else:
        notes.append(f"checkpoint made by {len(rngs)} process(es), resumed by {dist.world}: random streams reseeded")
        torch.manual_seed(ckpt["iteration"] * 1000 + dist.rank)
    if dist.rank == 0:
        _truncate_metrics(run_dir, ckpt["iteration"])
    notes.append(f"resumed from the checkpoint at iteration {ckpt['iteration']} of {st.total}")
    return int(ckpt["iteration"]), notes


def _checkpoint(st: _State, step: int, identity: str, run_dir: Path, dist: Distributed, cfg: LoopConfig,
                writer: CheckpointWriter) -> None:
    rngs = [_rng_state()]
    if dist.active:
        rngs = [None] * dist.world
        torch.distributed.all_gather_object(rngs, _rng_state())
    if dist.rank != 0:
        return
    epoch, offset = divmod(step, st.iters_per_epoch)
    writer.submit(run_dir / CHECKPOINT, {
        "version": CHECKPOINT_VERSION, "identity": identity, "iteration": step, "total": st.total,
        "model": st.model.state_dict(), "optimizer": st.optimizer.state_dict(),
        "scheduler": st.scheduler.state_dict(), "scaler": st.scaler.state_dict(), "rng": rngs,
        "sampler": {"epoch": epoch, "position": offset * st.per_rank_batch, "seed": cfg.seed,
                    "num_samples": len(st.sampler.dataset), "world_size": dist.world},
        "config": _plain(asdict(cfg)),
    })


def _plain(d: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(d))


def _stopping(check: Callable[[], None] | None, dist: Distributed) -> BaseException | None:
    """Rank 0 runs ``check``; what it raised (or None) is what every rank acts on."""
    caught: BaseException | None = None
    if dist.rank == 0 and check is not None:
        try:
            check()
        except BaseException as e:  # noqa: BLE001 - re-raised by every rank once they all know
            caught = e
    if dist.active and _any_rank(caught is not None, dist) and caught is None:
        caught = KeyboardInterrupt("stopped by rank 0")
    return caught


def _any_rank(flag: bool, dist: Distributed) -> bool:
    if not dist.active:
        return flag
    t = torch.tensor([1.0 if flag else 0.0])
    if torch.distributed.get_backend() == "nccl":
        t = t.cuda(torch.cuda.current_device())
    torch.distributed.all_reduce(t)
    return bool(t.item() > 0)


def _stop_reason(bad: bool, stop: BaseException | None, loss: torch.Tensor, step: int, epoch: int,
                 cfg: LoopConfig, last_saved: int | None) -> BaseException:
    if stop is not None:
        return stop
    kept = (f"the last good checkpoint (iteration {last_saved}) is kept" if last_saved is not None
            else "no checkpoint was written yet")
    return TrainingDiverged(
        f"the loss became {float(loss.detach())} at iteration {step + 1} (epoch {epoch + 1}); {kept}. "
        f"Lower the learning rate (lr={cfg.lr}), lengthen the warmup (warmup_iters={cfg.warmup_iters}) or "
        f"set grad_clip, and start the run again")


def _evaluate(evaluate: Callable[[nn.Module, int], dict[str, Any]], st: _State, step: int, epoch: int,
              metrics: MetricsLog, dist: Distributed) -> None:
    if dist.rank == 0:
        was = st.model.training
        st.model.eval()
        row = evaluate(st.model, step)
        st.model.train(was)
        metrics.write({"kind": "eval", "iteration": step, "epoch": epoch, **row})
    if dist.active:
        torch.distributed.barrier()
