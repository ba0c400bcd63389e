"""The one check every analysis makes on its inputs: a finite, real, non-empty (N, D) embedding matrix."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np


def as_embeddings(x: np.ndarray, name: str = "x") -> np.ndarray:
    """``x`` as a C-contiguous float32 (N, D) array, or a ValueError that says how to fix the call."""
    arr = np.asarray(x)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D (N, D) array of N embeddings, got shape {arr.shape}; "
                         "flatten or pool the features first (x.reshape(len(x), -1))")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"{name} is empty (shape {arr.shape}); pass at least one embedding with at least one feature")
    if not np.issubdtype(arr.dtype, np.number) or np.iscomplexobj(arr):
        raise ValueError(f"{name} must hold real numbers (a numeric dtype), got dtype {arr.dtype}")
    with np.errstate(over="ignore"):  # values beyond float32 become inf and are refused just below
        arr = np.ascontiguousarray(arr, dtype=np.float32)
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or inf (or values too large for float32); "
                         "drop or repair those rows (the same rows in every space)")
    return arr


# Above this many bytes of float32 copy, analyses stop copying an embedding matrix into memory and read it
# in row chunks instead (a memory-mapped float16 set of a million 2048-d images would be 8 GB as float32).
IN_MEMORY_MAX = 1 << 30
CHUNK = 65536


def fits_in_memory(x: np.ndarray) -> bool:
    """Whether an analysis may hold a float32 copy of ``x`` (N, D): at most :data:`IN_MEMORY_MAX` bytes."""
    shape = np.shape(x)
    return len(shape) != 2 or shape[0] * shape[1] * 4 <= IN_MEMORY_MAX


def embeddings_or_stream(x: np.ndarray, name: str = "x") -> np.ndarray:
    """:func:`as_embeddings` for a matrix whose float32 copy fits :data:`IN_MEMORY_MAX`; a larger one (memory
    mapped, typically) is checked for shape and dtype only and returned as it is, to be read with
    :func:`float_chunks`, which checks each chunk for NaN and inf on the way."""
    if fits_in_memory(x):
        return as_embeddings(x, name)
    if not np.issubdtype(x.dtype, np.number) or np.iscomplexobj(x):
        raise ValueError(f"{name} must hold real numbers (a numeric dtype), got dtype {x.dtype}")
    return x


def float_chunks(x: np.ndarray, chunk: int = CHUNK, name: str = "x", check: bool = True):
    """``(start, float32 rows start..start+len)`` blocks of ``x``, each checked to be finite (``check=False``:
    not checked, for a caller's second and later passes over rows it has already checked)."""
    for start in range(0, len(x), chunk):
        block = np.ascontiguousarray(x[start:start + chunk], dtype=np.float32)
        if check and not np.isfinite(block).all():
            raise ValueError(f"{name} contains NaN or inf (rows {start}..{start + len(block) - 1}); drop or repair "
                             "those rows (the same rows in every space)")
        yield start, block


# Bytes an analysis of a set above IN_MEMORY_MAX may still spend on float32 working copies of its rows (the
# probe's standardised training and validation rows, K-means' copy of one space); None: half the memory
# available when the analysis starts, the system's or, in a container with a memory limit, the container's
# (about 9 GiB on an idle 24 GiB machine: enough for the 650,000 training rows of a million 2048-d images,
# or one million-image space for K-means). An analysis that starts while another holds its copy sees
# half of what is left, so copies taken one after another never claim more than is free.
WORKING_COPY_MAX: int | None = None


def working_copy_budget() -> int:
    """Bytes for working copies: :data:`WORKING_COPY_MAX` when set, else half the memory available now (the
    lesser of the system's and the cgroup's limit less its use)."""
    if WORKING_COPY_MAX is not None:
        return int(WORKING_COPY_MAX)
    available = [v for v in (_system_available(), _cgroup_available()) if v is not None]
    return min(available) // 2 if available else 0


def _system_available() -> int | None:
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _cgroup_available(root: str = "/sys/fs/cgroup") -> int | None:
    """The container's memory limit less its use (cgroup v2, else v1); None without a limit."""
    for limit_file, usage_file in (("memory.max", "memory.current"),
                                   ("memory/memory.limit_in_bytes", "memory/memory.usage_in_bytes")):
        try:
            limit = Path(root, limit_file).read_text().strip()
            usage = int(Path(root, usage_file).read_text().strip())
        except (OSError, ValueError):
            continue
        if limit == "max" or not limit.isdigit() or int(limit) >= 1 << 60:  # v1 reports "no limit" as ~2^63
            return None
        return max(0, int(limit) - usage)
    return None


def working_copy(x: np.ndarray, name: str = "x", budget: int | None = None, *,
                 checked: bool = False) -> tuple[np.ndarray, bool]:
    """``(rows, in_memory)``: ``x`` as a checked in-memory float32 (N, D) matrix and True when that copy fits
    :data:`IN_MEMORY_MAX` or, above it, the working-copy budget (``budget`` bytes, default
    :func:`working_copy_budget`); else ``x`` itself, checked for shape and dtype as :func:`embeddings_or_stream`
    does, and False: read it with :func:`float_chunks`.

    For analyses that pass over the rows many times (K-means: a pass per iteration, for every K): a
    memory-mapped float16 set is converted and checked once, chunk by chunk, instead of on every pass.
    An in-memory float32 matrix is checked and used as it is, never copied. ``checked``: the caller has already
    read every row and found them finite, so the copy does not check them again."""
    x = embeddings_or_stream(x, name)
    if fits_in_memory(x):
        return x, True  # as_embeddings' checked float32 copy
    if type(x) is np.ndarray and x.dtype == np.float32 and x.flags.c_contiguous:
        for _ in () if checked else float_chunks(x, name=name):  # views, no copy: the finiteness check only
            pass
        return x, True
    if x.shape[0] * x.shape[1] * 4 > (working_copy_budget() if budget is None else int(budget)):
        return x, False
    copy = np.empty(x.shape, dtype=np.float32)
    for start, block in float_chunks(x, name=name, check=not checked):
        copy[start:start + len(block)] = block
    return copy, True
