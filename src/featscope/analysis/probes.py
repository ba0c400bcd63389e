"""Linear and k-NN probes on frozen features (METHOD.md, Tables 5 and 6).

A linear probe is a softmax (multinomial logistic regression) classifier trained on frozen,
standardised features; its test top-1 accuracy says how linearly separable the classes are in a
backbone's feature space. ``linear_probe`` picks the regularisation C on a validation split, refits
on train+val and reports test accuracy with a 95% Wilson interval. The trained probe is kept as plain
arrays (``ProbeResult.predict_proba``) so it can serve as the classification head on a detection
backbone (mask-out maps, METHOD.md analysis 6). ``knn_accuracy`` is the non-parametric companion.

Labels may be strings or ints; unlabelled rows (None/NaN) are rejected.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Sequence

import faiss
import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

from featscope.analysis.arrays import fits_in_memory, working_copy_budget
from featscope.cache.index import normalize

if TYPE_CHECKING:
    from featscope.analysis.knn import PrebuiltIndex

_Z95 = 1.959963984540054  # two-sided 95% standard-normal quantile


@dataclass(frozen=True, eq=False)
class Splits:
    """Row indices (sorted) of the train, validation and test parts; ``stratified`` is False when
    a class was too small to stratify and a plain random split was used instead."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    stratified: bool = True

    def to_dict(self) -> dict[str, Any]:
        return {"train": self.train.tolist(), "val": self.val.tolist(), "test": self.test.tolist(),
                "stratified": self.stratified}


@dataclass(frozen=True, eq=False)
class ProbeResult:
    """Test top-1 ``accuracy`` with its 95% Wilson interval, the C search, and the refit probe.

    The probe: p = softmax(((x - scaler_mean) / scaler_scale) @ coef.T + intercept) over ``classes``
    (label strings, in the order of coef's rows). Binary problems are stored as two rows
    (0 and sklearn's single row), which gives the same probabilities."""

    accuracy: float
    ci_low: float
    ci_high: float
    n_test: int
    best_c: float
    c_grid: np.ndarray
    val_accuracy: np.ndarray
    coef: np.ndarray
    intercept: np.ndarray
    scaler_mean: np.ndarray
    scaler_scale: np.ndarray
    classes: np.ndarray
    converged: bool

    def decision_function(self, x: np.ndarray) -> np.ndarray:
        """Class logits (N, n_classes) for features ``x`` (N, D)."""
        arr = np.asarray(x, dtype=np.float64)
        if arr.ndim != 2 or arr.shape[1] != self.coef.shape[1]:
            raise ValueError(f"x must be (N, {self.coef.shape[1]}) features from the same tap and pooling "
                             f"the probe was trained on, got shape {arr.shape}")
        return ((arr - self.scaler_mean) / self.scaler_scale) @ self.coef.T + self.intercept

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """Class probabilities (N, n_classes), columns in ``classes`` order (numerically stable softmax)."""
        z = self.decision_function(x)
        z -= z.max(axis=1, keepdims=True)
        np.exp(z, out=z)
        return z / z.sum(axis=1, keepdims=True)

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Predicted label strings (N,)."""
        return self.classes[np.argmax(self.decision_function(x), axis=1)]

    def to_dict(self, weights: bool = False) -> dict[str, Any]:
        """JSON-ready summary; ``weights=True`` adds the probe's arrays (large: n_classes x D)."""
        out: dict[str, Any] = {
            "accuracy": self.accuracy, "ci_low": self.ci_low, "ci_high": self.ci_high,
            "n_test": self.n_test, "best_c": self.best_c, "c_grid": self.c_grid.tolist(),
            "val_accuracy": self.val_accuracy.tolist(), "classes": self.classes.tolist(),
            "converged": self.converged}
        if weights:
            out.update(coef=self.coef.tolist(), intercept=self.intercept.tolist(),
                       scaler_mean=self.scaler_mean.tolist(), scaler_scale=self.scaler_scale.tolist())
        return out


@dataclass(frozen=True)
class KnnResult:
    """Test top-1 ``accuracy`` of cosine k-NN voting, with its 95% Wilson interval, and how the neighbours
    were found (``info``: exact, or the IVF index's recall, nprobe and source: :mod:`featscope.analysis.knn`)."""

    accuracy: float
    ci_low: float
    ci_high: float
    n_test: int
    k: int
    info: dict = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"accuracy": self.accuracy, "ci_low": self.ci_low, "ci_high": self.ci_high,
                "n_test": self.n_test, "k": self.k}


def wilson_interval(correct: int, n: int, z: float = _Z95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion ``correct / n``.

    Used instead of the normal (Wald) interval because probes often score near 0% or 100%, where
    Wald collapses to zero width and undercovers; Wilson stays inside [0, 1] with near-nominal coverage.
    """
    if n <= 0 or not 0 <= correct <= n:
        raise ValueError(f"need 0 <= correct <= n and n > 0, got correct={correct}, n={n}")
    p = correct / n
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def _encode_labels(labels: Sequence[Any] | np.ndarray, n: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Integer codes (N,) and class names (label strings, sorted) for ``labels``."""
    arr = np.asarray(labels, dtype=object)
    if arr.ndim != 1:
        raise ValueError(f"labels must be 1-D (one per row), got shape {arr.shape}")
    if n is not None and len(arr) != n:
        raise ValueError(f"labels has {len(arr)} entries but x has {n} rows; pass one label per row")
    missing = [i for i, v in enumerate(arr) if v is None or (isinstance(v, float) and math.isnan(v))]
    if missing:
        raise ValueError(f"{len(missing)} rows have no label (first at row {missing[0]}); drop unlabelled "
                         "rows before probing, or use a labelled data set")
    try:
        uniq, codes = np.unique(arr, return_inverse=True)
    except TypeError:  # mixed label types (e.g. 3 and "3"): compare as strings
        uniq, codes = np.unique(arr.astype(str), return_inverse=True)
    return codes.astype(np.int64), np.array([str(u) for u in uniq])


def make_splits(labels: Sequence[Any] | np.ndarray, *, val_fraction: float = 0.15, test_fraction: float = 0.2,
                seed: int = 0) -> Splits:
    """Deterministic stratified train/val/test split of row indices (same labels + seed -> same split).

    Falls back to an unstratified random split, with a warning and ``stratified=False``, when a
    class has too few rows to appear in every part."""
    codes, _ = _encode_labels(labels)
    n = len(codes)
    if not 0 < test_fraction < 1 or not 0 <= val_fraction < 1 or val_fraction + test_fraction >= 1:
        raise ValueError("need 0 < test_fraction < 1, 0 <= val_fraction, and val_fraction + test_fraction < 1; "
                         f"got val_fraction={val_fraction}, test_fraction={test_fraction}")
    idx = np.arange(n)
    val_rel = val_fraction / (1.0 - test_fraction)
    try:
        rest, test = train_test_split(idx, test_size=test_fraction, stratify=codes, random_state=seed)
        train, val = (train_test_split(rest, test_size=val_rel, stratify=codes[rest], random_state=seed)
                      if val_fraction > 0 else (rest, idx[:0]))
        stratified = True
    except ValueError as err:
        warnings.warn(f"stratified split impossible ({err}); using an unstratified random split. "
                      "Merge or drop classes with very few rows to get stratified splits.", stacklevel=2)
        rest, test = train_test_split(idx, test_size=test_fraction, random_state=seed)
        train, val = (train_test_split(rest, test_size=val_rel, random_state=seed)
                      if val_fraction > 0 else (rest, idx[:0]))
        stratified = False
    if len(train) == 0 or len(test) == 0:
        raise ValueError(f"N={n} rows is too few for a train and a test part; use more data")
    return Splits(np.sort(train), np.sort(val), np.sort(test), stratified)


def _check_inputs(x: np.ndarray, labels: Any, splits: Splits) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    arr = np.asarray(x)
    if arr.ndim != 2 or not np.issubdtype(arr.dtype, np.number):
        raise ValueError(f"x must be a numeric 2-D (N, D) feature array, got shape {arr.shape}, "
                         f"dtype {arr.dtype}")
    if fits_in_memory(arr) and not np.isfinite(arr).all():  # larger ones are checked chunk by chunk
        raise ValueError("x contains NaN or inf; drop or repair those rows first")
    codes, classes = _encode_labels(labels, len(arr))
    parts = [np.asarray(p) for p in (splits.train, splits.val, splits.test)]
    for name, p in zip(("train", "val", "test"), parts):
        if p.size and (not np.issubdtype(p.dtype, np.integer) or p.min() < 0 or p.max() >= len(arr)):
            raise ValueError(f"splits.{name} must hold row indices in [0, {len(arr)}); "
                             "build it with make_splits")
    joined = np.concatenate(parts)
    if len(np.unique(joined)) != len(joined):
        raise ValueError("splits overlap (a row is in two parts); build them with make_splits")
    if len(parts[0]) == 0 or len(parts[2]) == 0:
        raise ValueError("splits need non-empty train and test parts")
    return arr, codes, classes


def _fit(x: np.ndarray, y: np.ndarray, c: float, max_iter: int,
         seed: int) -> tuple[StandardScaler, LogisticRegression]:
    scaler = StandardScaler().fit(x)
    model = LogisticRegression(C=c, solver="lbfgs", max_iter=max_iter, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # reported once, as ProbeResult.converged
        model.fit(scaler.transform(x), y)
    return scaler, model


def _search(x_tr: np.ndarray, y_tr: np.ndarray, x_val: np.ndarray, y_val: np.ndarray, grid: np.ndarray,
            max_iter: int, seed: int) -> np.ndarray:
    """Validation accuracy of each C, fitted along the regularisation path from the strongest C up.

    One scaler for all C (it depends on the training rows only), and each fit starts from the
    previous C's solution (warm start): the optimum moves little between neighbouring C on a log grid,
    so L-BFGS needs a fraction of the iterations of a cold start. The problem is strictly convex, so
    the solutions are the cold-start ones up to the solver's tolerance."""
    scaler = StandardScaler().fit(x_tr)
    xs_tr, xs_val = scaler.transform(x_tr), scaler.transform(x_val)
    model = LogisticRegression(solver="lbfgs", max_iter=max_iter, random_state=seed, warm_start=True)
    acc = np.empty(grid.size)
    for i in np.argsort(grid, kind="stable"):
        model.set_params(C=float(grid[i]))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            model.fit(xs_tr, y_tr)
        acc[i] = float(np.mean(model.predict(xs_val) == y_val))
    return acc


def linear_probe(x: np.ndarray, labels: Sequence[Any] | np.ndarray, splits: Splits | None = None, *,
                 c_grid: Sequence[float] | np.ndarray | None = None, max_iter: int = 1000,
                 seed: int = 0, blas_threads: int | None = 1) -> ProbeResult:
    """Softmax linear probe on frozen features ``x`` (N, D) with ``labels`` (N,).

    For each C in ``c_grid`` (default ``np.logspace(-4, 2, 7)``): standardise on train, fit
    multinomial logistic regression (lbfgs), score top-1 on val. The best C (ties -> the smaller,
    more regularised C) is refit on train+val (scaler too) and scored on test. ``splits`` defaults
    to ``make_splits(labels, seed=seed)``. The search runs along the regularisation path with warm
    starts (:func:`_search`); the reported probe is a cold refit. Features whose float32 copy exceeds
    ``arrays.IN_MEMORY_MAX`` are fitted on the same objective by :mod:`probes_stream` (same solver settings;
    float32 working copy within a memory budget; for two classes a two-row softmax, i.e. the binary model
    with C doubled).

    ``blas_threads`` (default 1; ``None`` leaves the BLAS library's own setting): each L-BFGS step is a
    few small matrix products, too small to gain from threads, and BLAS threads that spin-wait for
    work are slowed by any other busy process: on a loaded 2-core machine one thread fitted the
    7-value path 27x faster than two (0.77 s vs 20.7 s, N=1,300, D=1,024, 30 classes).
    """
    if blas_threads is not None:
        from threadpoolctl import threadpool_limits

        with threadpool_limits(limits=int(blas_threads), user_api="blas"):
            return linear_probe(x, labels, splits, c_grid=c_grid, max_iter=max_iter, seed=seed, blas_threads=None)
    if splits is None:
        splits = make_splits(labels, seed=seed)
    arr, codes, classes = _check_inputs(x, labels, splits)
    grid = np.asarray(np.logspace(-4, 2, 7) if c_grid is None else c_grid, dtype=np.float64).ravel()
    if grid.size == 0 or not (np.isfinite(grid).all() and (grid > 0).all()):
        raise ValueError(f"c_grid must hold positive finite values, e.g. np.logspace(-4, 2, 7); got {grid}")
    if max_iter < 1:
        raise ValueError(f"max_iter must be >= 1, got {max_iter}")
    if len(splits.val) == 0 and grid.size > 1:
        raise ValueError("choosing C needs a validation part: use make_splits(val_fraction > 0) or pass a "
                         "single-value c_grid")
    if len(np.unique(codes[splits.train])) < 2:
        raise ValueError("the training part holds a single class; a probe needs at least two")
    if not fits_in_memory(arr):
        return _streamed_linear_probe(arr, codes, classes, splits, grid, max_iter)
    x_tr, y_tr = arr[splits.train], codes[splits.train]
    val_acc = np.full(grid.size, np.nan)
    if len(splits.val):
        val_acc[:] = _search(x_tr, y_tr, arr[splits.val], codes[splits.val], grid, max_iter, seed)
        best = int(min(np.flatnonzero(val_acc == val_acc.max()), key=lambda j: grid[j]))
    else:
        best = 0
    fit_rows = np.concatenate([splits.train, splits.val])
    scaler, model = _fit(arr[fit_rows], codes[fit_rows], float(grid[best]), max_iter, seed)
    y_test = codes[splits.test]
    correct = int(np.sum(model.predict(scaler.transform(arr[splits.test])) == y_test))
    low, high = wilson_interval(correct, len(y_test))
    coef, intercept = model.coef_.astype(np.float64), model.intercept_.astype(np.float64)
    if coef.shape[0] == 1:  # binary: sigmoid(z) == softmax([0, z])
        coef = np.vstack([np.zeros_like(coef), coef])
        intercept = np.concatenate([[0.0], intercept])
    return ProbeResult(
        accuracy=correct / len(y_test), ci_low=low, ci_high=high, n_test=len(y_test),
        best_c=float(grid[best]), c_grid=grid, val_accuracy=val_acc, coef=coef, intercept=intercept,
        scaler_mean=scaler.mean_.astype(np.float64), scaler_scale=scaler.scale_.astype(np.float64),
        classes=classes[model.classes_], converged=bool(np.max(model.n_iter_) < max_iter))


def _streamed_linear_probe(arr: np.ndarray, codes: np.ndarray, classes: np.ndarray, splits: Splits,
                           grid: np.ndarray, max_iter: int, budget: int | None = None) -> ProbeResult:
    """:func:`linear_probe` for features too large for memory (see :mod:`probes_stream`): same C search along
    the path with warm starts, cold refit on train+val (as the in-memory path), test top-1 with its Wilson
    interval. ``budget``: bytes for standardised working copies (default
    :func:`arrays.working_copy_budget`)."""
    from featscope.analysis import probes_stream as ps

    budget = working_copy_budget() if budget is None else int(budget)
    n_cls, train = len(classes), splits.train
    mean, scale = ps.scaler(arr, train)
    val_acc, init = np.full(grid.size, np.nan), None
    if len(splits.val):
        data = ps.Standardised(arr, train, mean, scale, budget=budget)
        term = ps.CrossEntropy(data, codes[train], n_cls)
        left = budget - (data.nbytes if data.copy is not None else 0)
        val = ps.Standardised(arr, splits.val, mean, scale, budget=left)
        for i in np.argsort(grid, kind="stable"):
            init = ps.fit(term, float(grid[i]), max_iter, init)[:2]
            val_acc[i] = float(np.mean(ps.predict_standardised(val, *init) == codes[splits.val]))
        del data, term, val  # free the working copies before the refit's
        best = int(min(np.flatnonzero(val_acc == val_acc.max()), key=lambda j: grid[j]))
    else:
        best = 0
    fit_rows = np.sort(np.concatenate([train, splits.val]))
    mean, scale = ps.scaler(arr, fit_rows)
    term = ps.CrossEntropy(ps.Standardised(arr, fit_rows, mean, scale, budget=budget), codes[fit_rows], n_cls)
    # a cold refit, as the in-memory path's: at a large C the problem is ill-conditioned and a start from the
    # train-only solution can stop, within the gradient tolerance, at another point than a cold start
    coef, intercept, converged = ps.fit(term, float(grid[best]), max_iter)
    del term
    correct = int(np.sum(ps.predict(arr, splits.test, coef, intercept, mean, scale) == codes[splits.test]))
    low, high = wilson_interval(correct, len(splits.test))
    return ProbeResult(accuracy=correct / len(splits.test), ci_low=low, ci_high=high, n_test=len(splits.test),
                       best_c=float(grid[best]), c_grid=grid, val_accuracy=val_acc, coef=coef, intercept=intercept,
                       scaler_mean=mean, scaler_scale=scale, classes=classes, converged=converged)


def knn_accuracy(x: np.ndarray, labels: Sequence[Any] | np.ndarray, splits: Splits, *,
                 k: int = 20, index: PrebuiltIndex | None = None) -> KnnResult:
    """Top-1 accuracy of cosine k-NN classification of the test rows from the train+val rows.

    Neighbours come from an exact FAISS ``IndexFlatIP`` on L2-normalised vectors (features too large for
    memory: an IVF index tuned to recall@10 >= 0.95, ``index`` when given, x's prebuilt index, searched among
    the train+val rows; see :func:`featscope.analysis.knn.approximate_search`). Each test row takes
    the class most frequent among its k neighbours; a tie in votes goes to the tied class with the
    larger summed cosine similarity (closer neighbours win), then to the first class in sorted order.
    """
    arr, codes, _ = _check_inputs(x, labels, splits)
    db_rows = np.concatenate([splits.train, splits.val])
    if not isinstance(k, (int, np.integer)) or not 1 <= k <= len(db_rows):
        raise ValueError(f"k must be an int in [1, {len(db_rows)}] (train+val rows), got {k!r}")
    if fits_in_memory(arr):
        db = normalize(arr[db_rows])
        flat = faiss.IndexFlatIP(db.shape[1])  # exact: affordable in memory (``index`` is not needed)
        flat.add(db)
        sims, nbrs = flat.search(normalize(arr[splits.test]), int(k))
        info = {"exact": True, "recall": 1.0}
    else:  # too large for memory: an IVF index tuned to recall@10 >= 0.95 (probes_stream.knn_votes)
        from featscope.analysis.probes_stream import knn_votes

        nbrs, sims, info = knn_votes(arr, np.sort(db_rows), splits.test, int(k), prebuilt=index)
        db_rows = np.sort(db_rows)
    n_cls = int(codes.max()) + 1
    valid = nbrs >= 0  # an IVF search may leave slots empty: they do not vote
    nbr_codes = codes[db_rows][np.where(valid, nbrs, 0)]
    rows = np.repeat(np.arange(len(nbrs)), k)
    votes = np.zeros((len(nbrs), n_cls))
    weight = np.zeros((len(nbrs), n_cls))
    np.add.at(votes, (rows, nbr_codes.ravel()), valid.ravel().astype(np.float64))
    np.add.at(weight, (rows, nbr_codes.ravel()), np.where(valid, sims, 0.0).ravel().astype(np.float64))
    tied = votes == votes.max(axis=1, keepdims=True)
    pred = np.argmax(np.where(tied, weight, -np.inf), axis=1)
    correct = int(np.sum(pred == codes[splits.test]))
    low, high = wilson_interval(correct, len(pred))
    return KnnResult(correct / len(pred), low, high, len(pred), int(k), info)
