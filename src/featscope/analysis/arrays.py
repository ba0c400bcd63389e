"""The one check every analysis makes on its inputs: a finite, real, non-empty (N, D) embedding matrix."""

from __future__ import annotations

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


def float_chunks(x: np.ndarray, chunk: int = CHUNK, name: str = "x"):
    """``(start, float32 rows start..start+len)`` blocks of ``x``, each checked to be finite."""
    for start in range(0, len(x), chunk):
        block = np.ascontiguousarray(x[start:start + chunk], dtype=np.float32)
        if not np.isfinite(block).all():
            raise ValueError(f"{name} contains NaN or inf (rows {start}..{start + len(block) - 1}); drop or repair "
                             "those rows (the same rows in every space)")
        yield start, block
