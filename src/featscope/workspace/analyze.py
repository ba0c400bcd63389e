"""Each analysis of :mod:`featscope.analysis` on cached embedding sets, with the study's defaults.

Parameters are resolved (defaults filled in, K grids clipped to N) *before* they key the cache, so
the key records exactly what ran. Every function returns an :class:`AnalysisResult`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from sqlalchemy import select

from featscope.catalog import Backbone as BackboneRow, EmbeddingSet
from featscope.workspace.analyses import AnalysisResult, NotCached, _check_same_dataset, _Loaded, run
from featscope.workspace.backbones import get_backbone_row
from featscope.workspace.context import Context, NotFound
from featscope.workspace.datasets import get_dataset
from featscope.workspace.embeddings import _embedding_row

if TYPE_CHECKING:
    from featscope.analysis.knn import PrebuiltIndex

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]
Say = Callable[[str], None]


def _rows(ctx: Context, set_ids: Sequence[int]) -> list[EmbeddingSet]:
    """The embedding sets' rows, refused unless they embed one data set (so their rows can be compared)."""
    rows = [_embedding_row(ctx, i) for i in set_ids]
    _check_same_dataset(rows)
    return rows


def _n_common(ctx: Context, set_ids: Sequence[int]) -> int:
    return min(r.n for r in _rows(ctx, set_ids))


def _stored_index(ctx: Context, d: _Loaded, i: int, on_message: Say | None) -> PrebuiltIndex | None:
    """Set ``i``'s stored index for the neighbour searches of an analysis of ``d``, where the analysis would
    otherwise build and tune one: a space too large for memory (one that fits is searched exactly, in memory,
    and needs none). None when the set's index cannot serve, said with the reason (an index is then built and
    tuned for the analysis, as before). The analysed rows may be some of the set's rows (those every compared
    set embeds): the index is then searched among them only and its recall measured on them."""
    from featscope.analysis.arrays import fits_in_memory
    from featscope.workspace.indexes import analysis_index

    if fits_in_memory(d.vectors[i]):
        return None
    pre, why = analysis_index(ctx, d.sets[i], d.stored[i], d.stored_rows[i])
    if pre is None:
        (on_message or log.info)(f"{why}; building and tuning an IVF index of its {len(d.vectors[i])} vectors for "
                                 f"this analysis instead (minutes at a million images)")
    return pre


_SAY_ROWS = 100_000


def _graph_progress(progress: Progress | None, on_message: Say | None, what: str, part: int = 0,
                    parts: int = 1) -> Progress | None:
    """A pair analysis's k-NN graph progress ``(rows done, rows in all)``, passed on to ``progress`` as part
    ``part`` of ``parts`` equal parts (one per space searched) and, when that search covers ``_SAY_ROWS`` rows or
    more (contrast and agreement: both graphs together), said at every tenth (``what``: which graph). A million-row graph takes minutes on a CPU, and a job (or the
    CLI) shows how far it is; a small one takes a moment and says nothing."""
    if progress is None and on_message is None:
        return None
    said = [0]

    def report(done: int, total: int) -> None:
        if progress is not None:
            progress(part * total + done, parts * total)
        tenth = 10 * done // max(total, 1)
        if on_message is not None and total >= _SAY_ROWS and tenth > said[0]:
            said[0] = tenth
            on_message(f"{what}: {done:,} of {total:,} rows searched")
    return report


def _resolve_tap(ctx: Context, bb: BackboneRow, name: str) -> str:
    """Public tap name for ``name`` (a tap or a study alias such as conv5), loading the backbone only for aliases."""
    if name in bb.taps:
        return name
    from featscope.workspace.backbones import open_backbone

    return open_backbone(ctx, bb.id).resolve_tap(name)


# Checks of the parameters against the embedding sets' sizes, made before the cache is consulted: a request the
# computation would refuse is refused at once (a 4xx from the REST API), never queued to fail in a worker.
def _int_in(value: Any, lo: int, hi: int, what: str, why: str = "") -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not lo <= value <= hi:
        raise ValueError(f"{what} must be an integer from {lo} to {hi}{why}, got {value!r}")
    return int(value)


def _check_k(k: Any, n: int) -> int:
    return _int_in(k, 1, n - 1, "k", f" (an image's neighbours among the N={n} images, itself excluded)")


def _two(set_ids: Sequence[int], what: str) -> None:
    if len(set_ids) != 2 or set_ids[0] == set_ids[1]:
        raise ValueError(f"{what} compares two different embedding sets (A and B), got {list(set_ids)}")


# ---------------------------------------------------------------- co-membership (Fig. 6)
def comembership(ctx: Context, a: int, b: int, *, ks: Sequence[int] | None = None, k_min: int = 2,
                 k_max: int = 1000, n_k: int = 20, seeds: Sequence[int] = (0, 1, 2), niter: int = 20,
                 sample: int | None = None, force: bool = False, cached_only: bool = False, progress: Progress | None = None,
                 on_message: Say | None = None) -> AnalysisResult:
    """P(same cluster in B | same in A) and the reverse, ARI, NMI and Fowlkes-Mallows against K.

    K-means runs on every image unless ``sample`` is given (then centroids are trained on that many
    images and every image is assigned; the result says so). Default grid: ``n_k`` values log-spaced
    from ``k_min`` to ``k_max``, clipped to the number of images."""
    from featscope.analysis.clustering import clip_k_grid, k_grid
    from featscope.analysis.comembership import comembership_curve

    _two([a, b], "co-membership")
    n = _n_common(ctx, [a, b])
    # a given K list is sorted and de-duplicated, so [8, 4, 2] and [2, 4, 8, 8] share one cached result
    grid = np.unique(np.asarray(ks, dtype=np.int64)) if ks is not None else clip_k_grid(k_grid(k_min, k_max, n_k), n)
    if ks is not None and grid.size and grid[-1] > n:
        raise ValueError(f"k={int(grid[-1])} exceeds N={n}, the images both sets share; drop the K values above {n}")
    if ks is not None and (grid.size == 0 or grid[0] < 2):
        raise ValueError(f"every K must be >= 2 (K=1 puts every image in one cluster), got {list(ks)}")
    if not list(seeds):
        raise ValueError("seeds is empty; give at least one seed, e.g. [0]")
    _int_in(niter, 1, 10**6, "niter")
    if sample is not None:
        _int_in(sample, int(grid[-1]), 10**9, "sample", " (at least the largest K: each centroid needs a training "
                                                        "image)")
    params = {"ks": [int(k) for k in grid], "seeds": [int(s) for s in seeds], "niter": int(niter),
              "sample": None if sample is None else int(sample)}
    if sample is not None and on_message:
        on_message(f"K-means centroids trained on a sample of {sample} images (every image is still assigned)")

    def compute(d: _Loaded):
        curve = comembership_curve(d.vectors[0], d.vectors[1], ks=grid, seeds=params["seeds"], niter=niter,
                                   sample=sample, progress=progress)
        return curve.to_dict(), {f"per_seed_{m}": v for m, v in curve.per_seed.items()}

    return run(ctx, "comembership", [a, b], params, compute, force=force, cached_only=cached_only, on_message=on_message)


# ---------------------------------------------------------------- neighbour pairs (Fig. 3, appendix 6.1)
def _pairs_dict(pl, extra: Sequence[str] = ()) -> list[dict[str, Any]]:
    out = []
    for r in range(len(pl.i)):
        d = {"i": int(pl.i[r]), "j": int(pl.j[r]), "score_a" if extra else "score": float(pl.score[r])}
        for name in extra:
            v = pl.extra[name][r]
            d[name] = int(v) if np.issubdtype(np.asarray(v).dtype, np.integer) else float(v)
        out.append(d)
    return out


def closest(ctx: Context, set_ids: Sequence[int], *, n_pairs: int = 50, k: int = 10, force: bool = False, cached_only: bool = False,
            on_message: Say | None = None, progress: Progress | None = None) -> AnalysisResult:
    """The ``n_pairs`` most similar image pairs in each embedding set (self-matches and duplicates removed)."""
    from featscope.analysis.pairs import closest_pairs

    if not set_ids or len(set(set_ids)) != len(set_ids):
        raise ValueError(f"give one or more different embedding sets, got {list(set_ids)}")
    _check_k(k, _n_common(ctx, set_ids))
    _int_in(n_pairs, 1, 10**7, "n_pairs")
    params = {"n_pairs": int(n_pairs), "k": int(k)}

    def compute(d: _Loaded):
        found = [closest_pairs(x, n_pairs, k=k, index=_stored_index(ctx, d, i, on_message),
                               progress=_graph_progress(progress, on_message, f"neighbours in set {d.sets[i].id}",
                                                        i, len(d.vectors)))
                 for i, x in enumerate(d.vectors)]
        spaces = [{"embedding_set": s.id, "pairs": _pairs_dict(pl), "knn": pl.info} for s, pl in zip(d.sets, found)]
        return {"spaces": spaces}, {}

    return run(ctx, "closest", list(set_ids), params, compute, force=force, cached_only=cached_only, on_message=on_message)


def contrast(ctx: Context, a: int, b: int, *, definition: str = "ranks", n_pairs: int = 50, k: int = 10,
             k_large: int | None = None, k_small: int = 4, seed: int = 0, force: bool = False, cached_only: bool = False,
             on_message: Say | None = None, progress: Progress | None = None) -> AnalysisResult:
    """Pairs close in A but distant in B, ranked.

    ``definition="ranks"``: by the partner's exact rank in B's neighbour lists. ``"clusters"``: the
    study's definition, same cluster of A at ``k_large`` clusters and different clusters of B at
    ``k_small`` (the study: K > 1000 and K < 5); ``k_large`` defaults to min(1000, N // 4)."""
    from featscope.analysis.clustering import kmeans_labels
    from featscope.analysis.pairs import close_in_a_distant_in_b_clusters, close_in_a_distant_in_b_ranks

    _two([a, b], "close-in-A/distant-in-B")
    if definition not in ("ranks", "clusters"):
        raise ValueError(f"definition must be 'ranks' or 'clusters', got {definition!r}")
    n = _n_common(ctx, [a, b])
    _check_k(k, n)
    _int_in(n_pairs, 1, 10**7, "n_pairs")
    params: dict[str, Any] = {"definition": definition, "n_pairs": int(n_pairs), "k": int(k)}
    if definition == "clusters":
        k_large = int(k_large) if k_large is not None else max(2, min(1000, n // 4))
        for name, value in (("k_large", k_large), ("k_small", k_small)):
            _int_in(value, 2, n, name, f" (clusters of the N={n} images both sets share)")
        params.update(k_large=k_large, k_small=int(k_small), seed=int(seed))

    def compute(d: _Loaded):
        xa, xb = d.vectors
        if definition == "ranks":
            pl = close_in_a_distant_in_b_ranks(xa, xb, n_pairs, k=k, index_a=_stored_index(ctx, d, 0, on_message),
                                               index_b=lambda: _stored_index(ctx, d, 1, on_message),  # if needed
                                               progress=_graph_progress(progress, on_message, "neighbours in A, then B"))
            return {"pairs": _pairs_dict(pl, ("score_b", "rank_b", "rank_b_ij", "rank_b_ji")), "knn": pl.info}, {}
        la = kmeans_labels(xa, k_large, seed=seed).labels
        lb = kmeans_labels(xb, int(k_small), seed=seed).labels
        pl = close_in_a_distant_in_b_clusters(la, lb, xa, n_pairs, k=k, index_a=_stored_index(ctx, d, 0, on_message),
                                              progress=_graph_progress(progress, on_message, "neighbours in A"))
        return {"pairs": _pairs_dict(pl, ("cluster_a", "cluster_b_i", "cluster_b_j")), "knn": pl.info}, {}

    return run(ctx, "contrast", [a, b], params, compute, force=force, cached_only=cached_only, on_message=on_message)


def agreement(ctx: Context, a: int, b: int, *, k: int = 10, n_worst: int = 20, force: bool = False, cached_only: bool = False,
              on_message: Say | None = None, progress: Progress | None = None) -> AnalysisResult:
    """Per-image overlap of the k nearest neighbours in A and in B; the least-agreeing images."""
    from featscope.analysis.pairs import neighbourhood_agreement

    _two([a, b], "neighbourhood agreement")
    _check_k(k, _n_common(ctx, [a, b]))
    _int_in(n_worst, 0, 10**7, "n_worst")
    params = {"k": int(k), "n_worst": int(n_worst)}

    def compute(d: _Loaded):
        ag = neighbourhood_agreement(d.vectors[0], d.vectors[1], k, n_worst=n_worst,
                                     index_a=_stored_index(ctx, d, 0, on_message),
                                     index_b=_stored_index(ctx, d, 1, on_message),
                                     progress=_graph_progress(progress, on_message, "neighbours in A, then B"))
        return ({"k": ag.k, "mean": ag.mean, "knn": ag.info,
                 "worst": [{"row": int(r), "overlap": float(ag.per_image[r])} for r in ag.worst]},
                {"per_image": ag.per_image})

    return run(ctx, "agreement", [a, b], params, compute, force=force, cached_only=cached_only, on_message=on_message)


# ---------------------------------------------------------------- projections (Fig. 7)
def projection(ctx: Context, set_ids: Sequence[int], *, method: str = "tsne", perplexity: float = 30.0,
               n_neighbors: int = 15, min_dist: float = 0.1, pca_dims: int | None = 50, seed: int | None = 0,
               metric: str = "cosine", n_iter: int = 500, early_exaggeration_iter: int = 250,
               force: bool = False, cached_only: bool = False, on_message: Say | None = None) -> AnalysisResult:
    """2-D maps of one or more embedding sets of the same images; maps after the first are aligned to
    it by orthogonal Procrustes so they can be drawn side by side in one frame."""
    from featscope.analysis.projection import align_procrustes, project

    if not set_ids or len(set(set_ids)) != len(set_ids):
        raise ValueError(f"give one or more different embedding sets, got {list(set_ids)}")
    from featscope.analysis.projection import check_params

    rows = _rows(ctx, set_ids)
    check_params(min(r.n for r in rows), min(r.dim for r in rows), method, perplexity=perplexity,
                 n_neighbors=n_neighbors, min_dist=min_dist, pca_dims=pca_dims, metric=metric, n_iter=n_iter,
                 early_exaggeration_iter=early_exaggeration_iter)
    params = {"method": method, "perplexity": float(perplexity), "n_neighbors": int(n_neighbors),
              "min_dist": float(min_dist), "pca_dims": pca_dims, "seed": seed, "metric": metric,
              "n_iter": int(n_iter), "early_exaggeration_iter": int(early_exaggeration_iter)}

    def compute(d: _Loaded):
        arrays, used = {}, {}
        for i, x in enumerate(d.vectors):
            if on_message:
                on_message(f"projecting embedding set {d.sets[i].id} ({method}, {len(x)} images)")
            p = project(x, method, perplexity=perplexity, n_neighbors=n_neighbors, min_dist=min_dist,
                        pca_dims=pca_dims, seed=seed, metric=metric, n_iter=n_iter,
                        early_exaggeration_iter=early_exaggeration_iter)
            used = p.params
            coords = p.coords
            if i > 0:
                coords = align_procrustes(arrays["coords_0"], coords).aligned.astype(np.float32)
            arrays[f"coords_{i}"] = coords
        return {"method": method, "params": used, "sets": [s.id for s in d.sets], "aligned_to": d.sets[0].id}, arrays

    return run(ctx, "projection", list(set_ids), params, compute, force=force, cached_only=cached_only, on_message=on_message)


# ---------------------------------------------------------------- linear probes (Tables 5, 6)
def probe(ctx: Context, embedding_set: int, *, val_fraction: float = 0.15, test_fraction: float = 0.2,
          seed: int = 0, c_grid: Sequence[float] | None = None, max_iter: int = 1000, knn_k: int = 20,
          force: bool = False, cached_only: bool = False, on_message: Say | None = None) -> AnalysisResult:
    """Linear probe (multinomial logistic regression, C chosen on validation, refit on train+val, top-1
    on test with a 95% Wilson interval) and cosine k-NN accuracy on the same split. The probe's arrays
    are kept (``coef``, ``intercept``, ``scaler_mean``, ``scaler_scale``, ``classes``): :func:`load_probe`."""
    from featscope.analysis.probes import knn_accuracy, linear_probe, make_splits

    grid = [float(c) for c in (np.logspace(-4, 2, 7) if c_grid is None else c_grid)]
    params = {"val_fraction": float(val_fraction), "test_fraction": float(test_fraction), "seed": int(seed),
              "c_grid": grid, "max_iter": int(max_iter), "knn_k": int(knn_k)}
    row = _embedding_row(ctx, embedding_set)
    _check_probe(ctx, row, grid, max_iter=max_iter, knn_k=knn_k, val_fraction=val_fraction,
                 test_fraction=test_fraction, seed=seed)

    def compute(d: _Loaded):
        from featscope.workspace.analyses import _images

        labels = _images(ctx, row.dataset_id, d.positions).labels
        missing = sum(lab is None for lab in labels)
        if missing:
            raise ValueError(f"{missing} of {len(labels)} images of this data set have no class label; a probe needs "
                             f"labelled images (an ImageFolder, a CSV with labels, or COCO/VOC)")
        splits = make_splits(labels, val_fraction=val_fraction, test_fraction=test_fraction, seed=seed)
        x = d.vectors[0]
        res = linear_probe(x, labels, splits, c_grid=grid, max_iter=max_iter, seed=seed)
        k = min(knn_k, len(splits.train) + len(splits.val))
        knn = knn_accuracy(x, labels, splits, k=k, index=_stored_index(ctx, d, 0, on_message))
        data = {**res.to_dict(), "n_classes": len(res.classes), "knn_accuracy": knn.accuracy,
                "knn_ci_low": knn.ci_low, "knn_ci_high": knn.ci_high, "knn_k": knn.k, "knn_search": knn.info,
                "n_train": len(splits.train), "n_val": len(splits.val), "stratified": splits.stratified}
        arrays = {"coef": res.coef, "intercept": res.intercept, "scaler_mean": res.scaler_mean,
                  "scaler_scale": res.scaler_scale, "classes": np.asarray(res.classes, dtype=str),
                  "train": splits.train, "val": splits.val, "test": splits.test}
        return data, arrays

    return run(ctx, "probe", [embedding_set], params, compute, force=force, cached_only=cached_only, on_message=on_message)


def _check_probe(ctx: Context, row: EmbeddingSet, grid: list[float], *, max_iter: int, knn_k: int,
                 val_fraction: float, test_fraction: float, seed: int) -> None:
    """What the probe needs of its data set's labels and parameters, from the catalog (no vectors loaded)."""
    import warnings

    from featscope.analysis.probes import make_splits
    from featscope.workspace.datasets import readable_images

    if not grid or not all(np.isfinite(c) and c > 0 for c in grid):
        raise ValueError(f"c_grid must hold positive values, e.g. [0.0001, 0.001, ..., 100]; got {grid}")
    _int_in(max_iter, 1, 10**7, "max_iter")
    _int_in(knn_k, 1, 10**6, "knn_k")
    labels = [im.label for im in readable_images(ctx, row.dataset_id)]
    missing = sum(lab is None for lab in labels)
    if missing:
        raise ValueError(f"{missing} of {len(labels)} images of this data set have no class label; a probe needs "
                         f"labelled images (an ImageFolder, a CSV with labels, or COCO/VOC)")
    if len(set(labels)) < 2:
        raise ValueError(f"the data set's images are all of one class ({labels[0] if labels else 'none'}); a probe "
                         f"tells classes apart, so it needs at least two")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        splits = make_splits(labels, val_fraction=val_fraction, test_fraction=test_fraction, seed=seed)
    if len(grid) > 1 and len(splits.val) == 0:
        raise ValueError("choosing C needs a validation part: give val_fraction > 0 or a single-value c_grid")
    if len({labels[i] for i in splits.train}) < 2:
        raise ValueError(f"the training part of {len(labels)} images holds a single class; a probe needs at least "
                         f"two: use more images per class or a smaller test_fraction")


@dataclass(frozen=True)
class KeptProbe:
    """A trained probe's arrays: p = softmax(((f - scaler_mean) / scaler_scale) @ coef.T + intercept)."""

    embedding_set: int
    tap: str
    pooling: str
    coef: np.ndarray
    intercept: np.ndarray
    scaler_mean: np.ndarray
    scaler_scale: np.ndarray
    classes: list[str]
    accuracy: float


def load_probe(ctx: Context, backbone: str | int, dataset: str | int, *, tap: str | None = None,
               pooling: str = "avg", train: bool = True, on_message: Say | None = None) -> KeptProbe:
    """The probe of ``backbone`` on ``dataset`` at ``tap`` (default: the last tap, Conv5 for ResNets) and
    ``pooling`` (trained now with the default parameters if ``train`` and none is cached): the
    classification head the study puts on detection networks for mask-out maps."""
    bb, ds = get_backbone_row(ctx, backbone), get_dataset(ctx, dataset)
    tap = _resolve_tap(ctx, bb, tap) if tap is not None else list(bb.taps)[-1]
    with ctx.session() as s:
        es = s.scalars(select(EmbeddingSet).where(EmbeddingSet.backbone_id == bb.id, EmbeddingSet.dataset_id == ds.id,
                                                  EmbeddingSet.tap == tap, EmbeddingSet.pooling == pooling)
                       .order_by(EmbeddingSet.id.desc())).first()
    if es is None:
        raise NotFound(f"backbone {bb.name!r} has no {tap}/{pooling} embeddings of {ds.name!r}; extract them first "
                       f"(`featscope extract -b {bb.name} -d {ds.name} -t {tap} -p {pooling}`, or POST "
                       f"/api/v1/embedding-sets/extract)")
    res = probe(ctx, es.id, on_message=on_message) if train else _cached_probe(ctx, es.id)
    a = res.arrays
    return KeptProbe(es.id, tap, pooling, a["coef"], a["intercept"], a["scaler_mean"], a["scaler_scale"],
                     [str(c) for c in a["classes"]], float(res.data["accuracy"]))


def _cached_probe(ctx: Context, embedding_set: int) -> AnalysisResult:
    from featscope.catalog import Analysis

    with ctx.session() as s:
        rows = [r for r in s.scalars(select(Analysis).where(Analysis.kind == "probe").order_by(Analysis.id.desc()))
                if list(r.inputs) == [embedding_set]]
    if not rows:
        raise NotFound(f"no probe trained on embedding set {embedding_set}; train one (`featscope analyze probe "
                       f"{embedding_set}`, POST /api/v1/analyses/probe)")
    try:
        return probe(ctx, embedding_set, cached_only=True, **{k: v for k, v in rows[0].params.items()})
    except NotCached:
        raise NotFound(f"the probe trained on embedding set {embedding_set} is no longer in the artifact store; "
                       f"train it again (`featscope analyze probe {embedding_set}`, POST /api/v1/analyses/probe)") from None


def probe_table(ctx: Context, backbones: Sequence[str | int], dataset: str | int, *,
                taps: Sequence[str] | None = None, poolings: Sequence[str] | None = None,
                on_message: Say | None = None, **probe_params: Any) -> list[dict[str, Any]]:
    """Probe accuracy over backbones x taps x pooling (the study's Tables 5 and 6) from the cached
    embedding sets of ``dataset``; each cell is an individually cached probe."""
    ds = get_dataset(ctx, dataset)
    rows = []
    for b in backbones:
        bb = get_backbone_row(ctx, b)
        with ctx.session() as s:
            sets = list(s.scalars(select(EmbeddingSet).where(EmbeddingSet.backbone_id == bb.id,
                                                             EmbeddingSet.dataset_id == ds.id)
                                  .order_by(EmbeddingSet.tap, EmbeddingSet.pooling, EmbeddingSet.id)))
        want_taps = None if taps is None else {_resolve_tap(ctx, bb, t) for t in taps}
        chosen: dict[tuple[str, str], EmbeddingSet] = {}
        for es in sets:
            if (want_taps is None or es.tap in want_taps) and (poolings is None or es.pooling in poolings):
                chosen[(es.tap, es.pooling)] = es  # newest set of each tap x pooling
        if not chosen:
            raise NotFound(f"backbone {bb.name!r} has no embedding sets of {ds.name!r} matching taps={taps} "
                           f"poolings={poolings}; extract them first (`featscope extract -b {bb.name} -d {ds.name}`, "
                           f"POST /api/v1/embedding-sets/extract)")
        for (tap, pooling), es in sorted(chosen.items()):
            if on_message:
                on_message(f"probe: {bb.name} {tap}/{pooling} (embedding set {es.id}, dim {es.dim})")
            res = probe(ctx, es.id, on_message=on_message, **probe_params)
            d = res.data
            rows.append({"backbone": bb.name, "tap": tap, "pooling": pooling, "dim": es.dim, "embedding_set": es.id,
                         "accuracy": d["accuracy"], "ci_low": d["ci_low"], "ci_high": d["ci_high"],
                         "knn_accuracy": d["knn_accuracy"], "best_c": d["best_c"], "n_test": d["n_test"],
                         "analysis": res.id, "cached": res.cached})
    return rows


# ---------------------------------------------------------------- representation similarity
def similarity(ctx: Context, a: int, b: int, *, k: int = 10, force: bool = False, cached_only: bool = False,
               on_message: Say | None = None) -> AnalysisResult:
    """Linear CKA (biased and debiased) and mutual k-NN alignment between two embedding sets."""
    from featscope.analysis.similarity import linear_cka, mutual_knn_alignment

    _two([a, b], "similarity")
    _check_k(k, _n_common(ctx, [a, b]))
    params = {"k": int(k)}

    def compute(d: _Loaded):
        xa, xb = d.vectors
        data = {"cka": linear_cka(xa, xb), "cka_debiased": linear_cka(xa, xb, debiased=True) if len(xa) >= 4 else None,
                "mutual_knn": mutual_knn_alignment(xa, xb, k, index_x=_stored_index(ctx, d, 0, on_message),
                                                   index_y=_stored_index(ctx, d, 1, on_message)),
                "k": int(k), "n": len(xa)}
        return data, {}

    return run(ctx, "similarity", [a, b], params, compute, force=force, cached_only=cached_only, on_message=on_message)


def cka_matrix(ctx: Context, backbone_a: str | int, backbone_b: str | int, dataset: str | int, *,
               pooling: str = "avg", debiased: bool = False, force: bool = False, cached_only: bool = False,
               on_message: Say | None = None) -> AnalysisResult:
    """Layer-by-layer linear CKA between two backbones: every cached tap of A (rows) against every tap of B."""
    from featscope.analysis.similarity import cka_matrix as cka_m

    ds = get_dataset(ctx, dataset)
    per_backbone = []
    for b in (backbone_a, backbone_b):
        bb: BackboneRow = get_backbone_row(ctx, b)
        with ctx.session() as s:
            sets = list(s.scalars(select(EmbeddingSet).where(EmbeddingSet.backbone_id == bb.id,
                                                             EmbeddingSet.dataset_id == ds.id,
                                                             EmbeddingSet.pooling == pooling)
                                  .order_by(EmbeddingSet.id)))
        by_tap = {es.tap: es.id for es in sets}
        if not by_tap:
            raise NotFound(f"backbone {bb.name!r} has no {pooling} embedding sets of {ds.name!r}; extract its taps "
                           f"first (`featscope extract -b {bb.name} -d {ds.name} -p {pooling} -t conv2 -t conv3 -t conv4 "
                           f"-t conv5`, or POST /api/v1/embedding-sets/extract)")
        per_backbone.append(dict(sorted(by_tap.items())))
    taps_a, taps_b = list(per_backbone[0]), list(per_backbone[1])
    ids = list(per_backbone[0].values()) + list(per_backbone[1].values())
    if len(set(ids)) != len(ids):
        raise ValueError("backbone_a and backbone_b must be different backbones")
    params = {"pooling": pooling, "debiased": bool(debiased), "taps_a": taps_a, "taps_b": taps_b}

    def compute(d: _Loaded):
        xs, ys = d.vectors[:len(taps_a)], d.vectors[len(taps_a):]
        m = cka_m(xs, ys, debiased=debiased)
        return {"taps_a": taps_a, "taps_b": taps_b, "cka": m.tolist(), "debiased": bool(debiased)}, {"cka": m}

    return run(ctx, "cka-matrix", ids, params, compute, force=force, cached_only=cached_only, on_message=on_message)
