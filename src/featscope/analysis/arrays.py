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
