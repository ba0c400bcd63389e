"""Batched, resumable feature extraction: images -> pooled tap activations, in shards on disk.

The entry point is :func:`extract`; :func:`shard_ranges` and :func:`prepare_shards` let several workers
share one extraction, each computing some shards of the same folder. Images are decoded and cropped to uint8 in DataLoader
worker processes; normalisation, the network and pooling run batched on the device. Results are
written shard by shard (``work_dir/shard-00000.npz``...), each atomically, so an interrupted run
resumes where it stopped. Batches never straddle shards, so a resumed run feeds the network the
same batches as an uninterrupted one and gets bit-identical features.

What each optimisation bought, measured on the network alone (ResNet-50, 224x224, batch 32, this
project's 2-core AVX512-BF16 CPU; end to end, see ``benchmarks/bench_extract.py``):
- channels_last model and input: 11 -> 15 img/s fp32, 16 -> 31 img/s bf16 (oneDNN's NHWC kernels).
- conv-BN folding (``torch.fx.experimental.optimization.fuse``): 15 -> 18.5 img/s fp32,
  31 -> 37 img/s bf16; features move by ~1e-5 relative (rounding of the folded weights).
- keeping freed activation buffers in the heap (:func:`_keep_freed_memory`): 18.5 -> 24 img/s fp32,
  38.6 -> 46.7 img/s bf16 (removes ~23 ms/image of page faults and page zeroing).
- bf16 autocast: ~2x fp32. Features keep a mean cosine of 0.997 to fp32 on a random-init ResNet-50
  with recalibrated BN; rounding only that net's weights to bf16 already costs as much (0.998).
Measured and not kept:
- batch 64 instead of 32: no gain; 32 stays the default.
- fewer intra-op threads to leave cores to the decode workers (threads = cores - workers): halves
  the network's speed on 2 cores (22 -> 12 img/s fp32); torch's default (all cores) stays.
  1 or 2 decode workers vs decoding in-process: within noise on 2 cores (decode is ~3 ms/image).
- TorchScript ``optimize_for_inference``: a further ~15% in fp32, but deprecated and warns on trace.
- Pillow ``draft()`` (JPEG reduce-on-decode) needs the decoder's cooperation (``load_rgb`` decodes
  fully); it only helps sources at least twice the resize target (it halves at best), which the
  300-500 px benchmark images are not.
"""

from __future__ import annotations

import ctypes
import hashlib
import io
import json
import logging
import math
import platform
import time
import zipfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset

from featscope.cache.store import atomic_write_bytes
from featscope.extractors.taps import POOLINGS, pool, tap_model
from featscope.extractors.types import Backbone, Preprocess

log = logging.getLogger(__name__)
_WARNED: set[tuple[str, str]] = set()  # (what, note) logged once per process

ENGINE_VERSION = 2  # bump when a change alters the numbers shards hold, so old shards are discarded
PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
RUN_FILE = "run.json"

Loader = Callable[[Path], Image.Image]


@dataclass(frozen=True)
class ExtractProgress:
    """Progress after each batch. ``done`` counts images finished, including resumed shards;
    ``images_per_second`` is this run's rate. ``message`` carries the occasional note (fresh start)."""

    done: int
    total: int
    images_per_second: float
    shard: int
    shards: int
    message: str | None = None


@dataclass
class ExtractionResult:
    """Features of the images that decoded, keyed by ``(tap as given, pooling)``, rows in ``ok`` order.

    ``seconds`` is the whole call; ``images_per_second`` counts the images computed (not resumed) in it.
    """

    features: dict[tuple[str, str], np.ndarray]
    ok: np.ndarray
    failures: dict[int, str]
    seconds: float
    images_per_second: float
    resumed_shards: int
    device: str
    precision: str
    shards: int = 0
    notes: list[str] = field(default_factory=list)
    shard_files: list[Path] = field(default_factory=list)  # the shards holding the rows, in order
    keys: list[tuple[str, str]] = field(default_factory=list)  # (tap, pooling) in shard-file order

    def stream(self, key: tuple[str, str]) -> Iterator[np.ndarray]:
        """The rows of ``key`` shard by shard, read from the shard files (for results made with
        ``keep_features=False``: a million-image extraction is assembled without holding it)."""
        if self.features:
            yield self.features[key]
            return
        index = self.keys.index(key)
        for path in self.shard_files:
            with np.load(path, allow_pickle=False) as z:
                yield z[f"feat{index}"]


def extract(backbone: Backbone, paths: Sequence[Path], *, taps: Sequence[str] = ("layer4",),
            poolings: Sequence[str] = ("avg",), work_dir: Path, device: str | torch.device = "auto",
            precision: str = "fp32", batch_size: int = 32, num_workers: int = 2, shard_size: int = 512,
            channels_last: bool = True, progress: Callable[[ExtractProgress], None] | None = None,
            loader: Loader | None = None, threads: int | None = None,
            shards: Sequence[int] | None = None, keep_features: bool = True) -> ExtractionResult:
    """Extract pooled activations of ``taps`` for every image in ``paths``, resuming from ``work_dir``.

    Images that fail to decode are skipped and reported in ``failures`` (index -> error); the run
    goes on. ``work_dir`` must be private to this extraction (e.g. ``ArtifactStore.work_dir``):
    shards of a different run found there are deleted. ``loader`` decodes a path to an RGB image
    (default ``featscope.datasets.images.load_rgb``; must be picklable when ``num_workers > 0``).
    ``threads``: intra-op threads for the network during the run (default: torch's, all cores);
    restored after. The backbone is not modified: the network runs on a (folded, channels_last) copy.
    A resumed run gives bit-identical features when batch size, device and thread count are the same.

    ``shards``: compute (or resume) only these shard indices (see :func:`shard_ranges`); the result then
    holds their rows only. Several processes may work on disjoint shards of one ``work_dir`` at once
    (one extraction shared by many workers); the run that finds every shard on disk assembles the whole.

    ``keep_features=False``: shards are checked (or computed) one at a time and not kept in memory; the
    result's ``features`` is empty and :meth:`ExtractionResult.stream` reads each key back shard by shard.
    """
    started = time.perf_counter()
    taps, poolings = list(taps), list(poolings)
    plan = _make_plan(backbone, paths, taps, poolings, work_dir, device, precision, batch_size, num_workers,
                      shard_size, channels_last, loader, threads)
    wanted = list(range(plan.shards)) if shards is None else _check_shards(shards, plan.shards)

    notes = _prepare_work_dir(plan.work_dir, _run_record(backbone, plan, taps, poolings))
    if notes and progress is not None:
        progress(ExtractProgress(0, len(plan.paths), 0.0, 0, plan.shards, message=notes[0]))
    done = {i: _light(s, keep_features) for i in wanted if (s := _load_shard(plan, i)) is not None}
    resumed = len(done)
    computed = _run(backbone, plan, wanted, done, progress, keep_features) if resumed < len(wanted) else 0

    seconds = time.perf_counter() - started
    order = [done[i] for i in wanted]
    features = {key: np.concatenate([s.feats[j] for s in order]) for j, key in enumerate(plan.keys)} \
        if keep_features else {}
    return ExtractionResult(
        features=features, ok=np.concatenate([s.indices for s in order]).astype(np.int64),
        failures={i: msg for s in order for i, msg in s.failed.items()},
        seconds=seconds, images_per_second=computed / seconds if computed else 0.0, resumed_shards=resumed,
        device=str(plan.device), precision=precision, shards=plan.shards, notes=notes,
        shard_files=[plan.shard_path(i) for i in wanted], keys=list(plan.keys))


def _light(shard: _Shard, keep_features: bool) -> _Shard:
    """The shard, or (``keep_features=False``) its row indices and failures only."""
    return shard if keep_features else _Shard(shard.indices, [], shard.failed)


def shard_ranges(n_images: int, batch_size: int, shard_size: int) -> list[range]:
    """The image range of each shard of an extraction of ``n_images`` (shards hold whole batches only)."""
    if n_images < 0 or batch_size < 1 or shard_size < 1:
        raise ValueError(f"need n_images >= 0 and batch_size, shard_size >= 1, got {n_images}, {batch_size}, "
                         f"{shard_size}")
    step = math.ceil(shard_size / batch_size) * batch_size
    return [range(lo, min(n_images, lo + step)) for lo in range(0, n_images, step)]


def prepare_shards(backbone: Backbone, paths: Sequence[Path], *, taps: Sequence[str], poolings: Sequence[str],
                   work_dir: Path, precision: str = "fp32", batch_size: int = 32,
                   shard_size: int = 512) -> list[int]:
    """Ready ``work_dir`` for workers sharing one extraction; return the shards already on disk.

    Writes the run record (discarding shards of a different run) before any worker starts, so workers
    that begin at once never see a half-prepared folder. Shards are only listed, not read: the worker
    that computes or assembles them checks each one."""
    taps, poolings = list(taps), list(poolings)
    plan = _make_plan(backbone, paths, taps, poolings, work_dir, "cpu", precision, batch_size, 0, shard_size,
                      True, None, None)
    _prepare_work_dir(plan.work_dir, _run_record(backbone, plan, taps, poolings))
    return [i for i in range(plan.shards) if plan.shard_path(i).exists()]


def _make_plan(backbone: Backbone, paths: Sequence[Path], taps: list[str], poolings: list[str], work_dir: Path,
               device: str | torch.device, precision: str, batch_size: int, num_workers: int, shard_size: int,
               channels_last: bool, loader: Loader | None, threads: int | None) -> "_Plan":
    paths = [Path(p) for p in paths]
    if not paths:
        raise ValueError("no image paths to extract; check the dataset's manifest")
    _check_args(backbone, taps, poolings, precision, batch_size, num_workers, shard_size, threads)
    step = math.ceil(shard_size / batch_size) * batch_size  # whole batches only: no short batch per shard
    plan = _Plan(paths=paths, keys=[(t, p) for t in taps for p in poolings], step=step,
                 shards=math.ceil(len(paths) / step), work_dir=Path(work_dir), device=_resolve_device(device),
                 precision=precision, batch_size=batch_size, num_workers=num_workers,
                 channels_last=channels_last, loader=loader or _default_loader, threads=threads)
    plan.work_dir.mkdir(parents=True, exist_ok=True)
    return plan


def _native_cpu_kernels(dtype: torch.dtype) -> bool | None:
    """Whether this x86 CPU computes ``dtype`` natively: AVX512-BF16 or AMX for bf16 (oneDNN's own
    ``_is_mkldnn_bf16_supported`` is true on any AVX512 CPU, where bf16 is still emulated), oneDNN's check
    (AVX512-FP16 or AMX-FP16) for fp16; ``None`` on other CPUs (ARM's bf16 is not told apart) or when torch
    cannot say."""
    if platform.machine().lower() not in ("x86_64", "amd64", "i386", "i686"):
        return None
    try:  # private, but the only place torch says so
        if dtype == torch.bfloat16:
            return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
        return bool(torch.ops.mkldnn._is_mkldnn_fp16_supported())
    except (AttributeError, RuntimeError):
        return None


def slow_low_precision(device: torch.device, dtype: torch.dtype, what: str | None = None) -> str | None:
    """A note when ``dtype`` (bf16/fp16) has no native support on this CPU (no AVX512-BF16/AMX-class
    instructions: oneDNN then converts around fp32 kernels), where it runs slower than fp32; else ``None``.
    With ``what`` (e.g. "mask-out") the note is also logged, once per process."""
    if device.type != "cpu" or dtype == torch.float32 or _native_cpu_kernels(dtype) is not False:
        return None
    kind = "bf16" if dtype == torch.bfloat16 else "fp16"
    note = f"this CPU has no native {kind} kernels, so {kind} is emulated and slower than fp32 here: use fp32, or a GPU"
    if what is not None and (what, note) not in _WARNED:
        _WARNED.add((what, note))
        log.warning("%s: %s", what, note)
    return note


def _check_shards(shards: Sequence[int], n_shards: int) -> list[int]:
    wanted = sorted({int(i) for i in shards})
    if not wanted or wanted[0] < 0 or wanted[-1] >= n_shards:
        raise ValueError(f"shards must be a non-empty list of shard indices in [0, {n_shards}), got {list(shards)}")
    return wanted


@dataclass(frozen=True)
class _Plan:
    """Everything a run needs besides the backbone: what to compute, where, and how it is sharded."""

    paths: list[Path]
    keys: list[tuple[str, str]]  # (tap as given, pooling), in output order
    step: int  # images per shard, a multiple of batch_size
    shards: int
    work_dir: Path
    device: torch.device
    precision: str
    batch_size: int
    num_workers: int
    channels_last: bool
    loader: Loader
    threads: int | None

    def bounds(self, shard: int) -> tuple[int, int]:
        return shard * self.step, min(len(self.paths), (shard + 1) * self.step)

    def shard_path(self, shard: int) -> Path:
        return self.work_dir / f"shard-{shard:05d}.npz"


@dataclass
class _Shard:
    """Results for one shard: indices of the decoded images, one (rows, D) array per key, failures."""

    indices: np.ndarray
    feats: list[np.ndarray]
    failed: dict[int, str]


# -- arguments and run identity ------------------------------------------------------------------

def _check_args(backbone: Backbone, taps: list[str], poolings: list[str], precision: str, batch_size: int,
                num_workers: int, shard_size: int, threads: int | None) -> None:
    if not taps:
        raise ValueError("ask for at least one tap; `featscope backbone layers NAME` (GET /api/v1/backbones/NAME/taps) lists them")
    for t in taps:
        backbone.resolve_tap(t)  # raises with the list of choices
    if not poolings or len(set(poolings)) != len(poolings):
        raise ValueError(f"poolings must be a non-empty list without repeats, got {poolings}")
    for p in poolings:
        if p not in POOLINGS:
            raise ValueError(f"unknown pooling {p!r}; choose from {', '.join(POOLINGS)}")
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if batch_size < 1 or shard_size < 1:
        raise ValueError(f"batch_size and shard_size must be >= 1, got {batch_size} and {shard_size}")
    if num_workers < 0:
        raise ValueError(f"num_workers must be >= 0 (0 decodes in this process), got {num_workers}")
    if threads is not None and threads < 1:
        raise ValueError(f"threads must be >= 1 or None, got {threads}")


def _resolve_device(device: str | torch.device) -> torch.device:
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' requested but torch sees no CUDA GPU; use device='auto' or 'cpu'")
    return dev


def _run_record(backbone: Backbone, plan: _Plan, taps: list[str], poolings: list[str]) -> dict[str, Any]:
    """What the shards in a work dir belong to; any difference means they cannot be reused."""
    listing = json.dumps([str(p) for p in plan.paths]).encode("utf-8")
    record = {"engine": ENGINE_VERSION, "n_paths": len(plan.paths),
              "paths_sha256": hashlib.sha256(listing).hexdigest(), "taps": taps, "poolings": poolings,
              "shard_size": plan.step, "batch_size": plan.batch_size, "precision": plan.precision,
              "fingerprint": backbone.fingerprint, "preprocess": backbone.preprocess.to_dict()}
    return json.loads(json.dumps(record))  # as it reads back from run.json (tuples become lists)


def _prepare_work_dir(work_dir: Path, record: dict[str, Any]) -> list[str]:
    """Keep the shards if ``run.json`` matches ``record``; otherwise delete them. Returns notes."""
    run_file = work_dir / RUN_FILE
    notes: list[str] = []
    if run_file.exists():
        try:
            previous = json.loads(run_file.read_text("utf-8"))
        except (OSError, ValueError):
            previous = None
        if previous == record:
            return notes
        diff = sorted(k for k in record if not isinstance(previous, dict) or previous.get(k) != record[k])
        notes.append(f"{work_dir} holds shards of a different run (differs in: {', '.join(diff)}); starting fresh")
    elif any(work_dir.glob("shard-*.npz")):
        notes.append(f"{work_dir} holds shards without {RUN_FILE}; starting fresh")
    for note in notes:
        log.warning(note)
    if notes:
        for stale in work_dir.glob("shard-*.npz"):
            stale.unlink()
    atomic_write_bytes(run_file, json.dumps(record, indent=1).encode("utf-8"))
    return notes


# -- shards ----------------------------------------------------------------------------------------

def _save_shard(path: Path, shard: _Shard) -> None:
    arrays = {"indices": shard.indices,
              "failed_indices": np.array(list(shard.failed), dtype=np.int64),
              "failed_messages": np.array(list(shard.failed.values()), dtype=np.str_)}
    arrays |= {f"feat{j}": f for j, f in enumerate(shard.feats)}
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    atomic_write_bytes(path, buf.getvalue())


def _load_shard(plan: _Plan, i: int) -> _Shard | None:
    """Shard ``i`` from disk, or None when absent or unusable (truncated, wrong rows): then recompute."""
    path = plan.shard_path(i)
    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            shard = _Shard(indices=z["indices"], feats=[z[f"feat{j}"] for j in range(len(plan.keys))],
                           failed=dict(zip(z["failed_indices"].tolist(), z["failed_messages"].tolist())))
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
        log.warning("shard %s is unreadable (%s); recomputing it", path, e)
        return None
    lo, hi = plan.bounds(i)
    expected = [j for j in range(lo, hi) if j not in shard.failed]
    if shard.indices.tolist() != expected or any(f.shape[0] != len(expected) or f.dtype != np.float32
                                                 for f in shard.feats):
        log.warning("shard %s does not hold images %d..%d as expected; recomputing it", path, lo, hi - 1)
        return None
    return shard


# -- decoding (runs in DataLoader workers) -----------------------------------------------------------

def _default_loader(path: Path) -> Image.Image:
    from featscope.datasets.images import load_rgb  # imported late: keeps this layer importable alone

    return load_rgb(path)


class _Images(Dataset):
    """Index -> (uint8 (3, crop, crop) tensor, index, error). A failed decode gives zeros + the error."""

    def __init__(self, paths: list[Path], preprocess: Preprocess, loader: Loader) -> None:
        self.paths, self.preprocess, self.loader = paths, preprocess, loader

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int, str]:
        try:
            return self.preprocess.to_uint8(self.loader(self.paths[i])), i, ""
        except Exception as e:  # noqa: BLE001 - one bad file must not end a long run
            crop = self.preprocess.crop
            return torch.zeros(3, crop, crop, dtype=torch.uint8), i, f"{type(e).__name__}: {e}"


def _batches(plan: _Plan, pending: list[int]) -> list[list[int]]:
    """Index batches of the pending shards; a shard splits into the same batches on every run."""
    out = []
    for s in pending:
        lo, hi = plan.bounds(s)
        out.extend(list(range(b, min(hi, b + plan.batch_size))) for b in range(lo, hi, plan.batch_size))
    return out


# -- the network ---------------------------------------------------------------------------------

def _inference_copy(backbone: Backbone, plan: _Plan) -> nn.Module:
    """Tap model, conv-BN folded, on the device. ``tap_model`` works on its own copy of the weights,
    so folding, channels_last and the move to the device leave the caller's model as it is."""
    taps = list(dict.fromkeys(t for t, _ in plan.keys))
    module = tap_model(backbone, taps).eval()
    if isinstance(module, torch.fx.GraphModule):
        from torch.fx.experimental.optimization import fuse

        try:
            module = fuse(module, inplace=True, no_trace=True).eval()
        except Exception as e:  # noqa: BLE001 - folding is an optimisation; run unfolded if it fails
            log.info("conv-BN folding skipped (%s)", e)
    module = module.to(plan.device)
    return module.to(memory_format=torch.channels_last) if plan.channels_last else module


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc mallopt parameters (malloc.h)
# Where glibc's own dynamic thresholds settle once a process has freed large buffers (64-bit):
_GLIBC_SETTLED_MMAP, _GLIBC_SETTLED_TRIM = 32 << 20, 64 << 20


@contextmanager
def _keep_freed_memory():
    """glibc only: keep freed activation buffers in the heap for the run instead of unmapping them.

    Activations of a batch are tens of MB each; glibc serves those with mmap and returns them to the
    kernel on free, so every batch page-faults and zeroes gigabytes again (measured: 23 ms of
    system time per image, ResNet-50 fp32, batch 32). Raising the mmap and trim thresholds while
    the network runs lifted fp32 from 18.5 to 24 img/s and bf16 from 38.6 to 46.7 img/s. Afterwards
    the thresholds are set where glibc's dynamic ones settle in a process that allocates large
    buffers (mallopt cannot re-enable the dynamic rule) and ``malloc_trim`` hands the memory back.
    """
    libc = _glibc()
    if libc is None:
        yield
        return
    if not libc.mallopt(_M_MMAP_THRESHOLD, 1 << 30):
        libc.mallopt(_M_MMAP_THRESHOLD, 32 << 20)  # older glibc caps the threshold at 32 MiB
    libc.mallopt(_M_TRIM_THRESHOLD, 1 << 30)
    try:
        yield
    finally:
        libc.mallopt(_M_MMAP_THRESHOLD, _GLIBC_SETTLED_MMAP)
        libc.mallopt(_M_TRIM_THRESHOLD, _GLIBC_SETTLED_TRIM)
        libc.malloc_trim(0)


def _glibc() -> Any:
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        libc = ctypes.CDLL(None)
        return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None
    except OSError:
        return None


@contextmanager
def _intra_op_threads(threads: int | None):
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextmanager
def _exact_fp32(cuda: bool):
    """On CUDA, make fp32 convolutions really fp32 for the run: cuDNN defaults to TF32 (10-bit
    mantissa), which would make "fp32" features differ from the CPU's by ~1e-3."""
    if not cuda:
        yield
        return
    conv = getattr(torch.backends.cudnn, "conv", None)
    if conv is not None and hasattr(conv, "fp32_precision"):
        before, conv.fp32_precision = conv.fp32_precision, "ieee"
        try:
            yield
        finally:
            conv.fp32_precision = before
    else:  # torch < 2.9
        before, torch.backends.cudnn.allow_tf32 = torch.backends.cudnn.allow_tf32, False
        try:
            yield
        finally:
            torch.backends.cudnn.allow_tf32 = before


def _run(backbone: Backbone, plan: _Plan, wanted: list[int], shards: dict[int, _Shard],
         progress: Callable[[ExtractProgress], None] | None, keep_features: bool = True) -> int:
    """Compute the ``wanted`` shards missing from ``shards``, saving each; returns the number of images run."""
    n, cuda = sum(len(range(*plan.bounds(i))) for i in wanted), plan.device.type == "cuda"
    done_before = sum(len(s.indices) + len(s.failed) for s in shards.values())
    pending = [i for i in wanted if i not in shards]
    data = DataLoader(_Images(plan.paths, backbone.preprocess, plan.loader), batch_sampler=_batches(plan, pending),
                      num_workers=plan.num_workers, pin_memory=cuda,
                      prefetch_factor=4 if plan.num_workers else None)
    module = _inference_copy(backbone, plan)
    dtype = PRECISIONS[plan.precision]
    autocast = torch.autocast(plan.device.type, dtype=dtype) if dtype != torch.float32 else nullcontext()
    slow_low_precision(plan.device, dtype, "extraction")  # logged once per process, not per shard
    memory_format = torch.channels_last if plan.channels_last else torch.contiguous_format
    start, done, parts = time.perf_counter(), 0, _Parts(len(plan.keys))
    batches = iter(data)
    try:
        with _intra_op_threads(plan.threads), _keep_freed_memory(), _exact_fp32(cuda), torch.inference_mode():
            for images, idx, errors in batches:
                shard = int(idx[0]) // plan.step
                x = backbone.preprocess.normalize(images.to(plan.device, non_blocking=cuda))
                with autocast:
                    acts = module(x.contiguous(memory_format=memory_format))
                good = np.array([not e for e in errors])
                parts.add(idx.numpy()[good], [pool(acts[t].float(), p).cpu().numpy()[good] for t, p in plan.keys],
                          {int(i): e for i, e in zip(idx.tolist(), errors) if e})
                done += len(idx)
                if int(idx[-1]) == plan.bounds(shard)[1] - 1:
                    finished = parts.take()
                    _save_shard(plan.shard_path(shard), finished)
                    shards[shard] = _light(finished, keep_features)
                if progress is not None:
                    rate = done / max(time.perf_counter() - start, 1e-9)
                    progress(ExtractProgress(done_before + done, n, rate, shard, plan.shards))
    finally:
        del batches  # shuts the loader workers down now, even when a callback raised
    return done


class _Parts:
    """The finished batches of the shard being computed, until the shard is complete."""

    def __init__(self, n_keys: int) -> None:
        self.n_keys = n_keys
        self._reset()

    def _reset(self) -> None:
        self.indices: list[np.ndarray] = []
        self.feats: list[list[np.ndarray]] = [[] for _ in range(self.n_keys)]
        self.failed: dict[int, str] = {}

    def add(self, indices: np.ndarray, feats: list[np.ndarray], failed: dict[int, str]) -> None:
        self.indices.append(indices)
        for j, f in enumerate(feats):
            self.feats[j].append(f)
        self.failed |= failed

    def take(self) -> _Shard:
        shard = _Shard(indices=np.concatenate(self.indices).astype(np.int64),
                       feats=[np.concatenate(f) for f in self.feats], failed=dict(sorted(self.failed.items())))
        self._reset()
        return shard
