"""Extraction into the artifact store, the catalog's embedding sets, and neighbour queries.

Keys: an embedding set is keyed by everything that determines its numbers (backbone weights
fingerprint, data set fingerprint, tap, pooling, preprocessing, precision, storage dtype) and
nothing else; in particular not the device, so a GPU worker's result is a CPU user's cache hit.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sqlalchemy import select

from featscope.cache.index import neighbours as index_neighbours
from featscope.cache.store import ChunkedArray, CorruptArtifact, content_key
from featscope.catalog import Backbone as BackboneRow, Dataset, EmbeddingSet, Image
from featscope.extractors.extract import ENGINE_VERSION, ExtractProgress, extract as run_extraction
from featscope.extractors.taps import POOLINGS
from featscope.workspace.backbones import get_backbone_row, open_backbone
from featscope.workspace.context import Context, NotFound
from featscope.workspace.datasets import get_dataset, readable_relpaths
from featscope.workspace.indexes import open_query_set, store_index, summary as index_summary

log = logging.getLogger(__name__)

DTYPES = ("float32", "float16")


@dataclass(frozen=True)
class EmbeddingSetInfo:
    id: int
    backbone: str
    dataset: str
    tap: str
    pooling: str
    precision: str
    dtype: str
    n: int
    dim: int
    n_failed: int
    index_kind: str
    artifact_key: str
    cached: bool = False  # True when this call found it already computed
    index_nprobe: int | None = None  # IVF: lists searched per query, tuned for ...
    index_recall: float | None = None  # ... this recall@10 against exact search (None: exact flat index)

    @classmethod
    def of(cls, row: EmbeddingSet, bb_name: str, ds_name: str, cached: bool = False) -> "EmbeddingSetInfo":
        meta = row.index_meta or {}
        return cls(row.id, bb_name, ds_name, row.tap, row.pooling, row.precision, row.dtype, row.n, row.dim,
                   row.n_failed, row.index_kind, row.artifact_key, cached, meta.get("nprobe"), meta.get("recall_at_10"))


@dataclass(frozen=True)
class Embeddings:
    """An embedding set's vectors (float32) and the catalog images of its rows."""

    vectors: np.ndarray
    image_ids: np.ndarray
    relpaths: list[str]
    labels: list[str | None]


@dataclass(frozen=True)
class Neighbour:
    rank: int
    image_id: int
    relpath: str
    label: str | None
    score: float


def _embedding_key(bb: BackboneRow, ds: Dataset, tap: str, pooling: str, precision: str, dtype: str) -> str:
    return content_key({
        "kind": "embeddings", "backbone": bb.fingerprint, "arch": bb.arch, "dataset": ds.fingerprint,
        "tap": tap, "pooling": pooling, "preprocess": bb.preprocess, "precision": precision, "dtype": dtype,
        "engine": ENGINE_VERSION,  # a change in how pixels become numbers invalidates old artifacts
    })


@dataclass(frozen=True)
class ExtractionPlan:
    """What an extraction request still has to compute: the (tap, pooling) combinations without a usable
    cached artifact, the taps x poolings run that computes them, and the key of that run's shard folder."""

    backbone: BackboneRow
    dataset: Dataset
    precision: str
    dtype: str
    wanted: list[tuple[str, str]]
    keys: dict[tuple[str, str], str]
    missing: list[tuple[str, str]]
    run_taps: list[str]
    run_poolings: list[str]
    run_key: str


def plan_extraction(ctx: Context, backbone: str | int, dataset: str | int, *, taps: Sequence[str] = ("conv5",),
                    poolings: Sequence[str] = ("avg",), precision: str | None = None, dtype: str = "float32",
                    on_message: Callable[[str], None] | None = None) -> ExtractionPlan:
    """Resolve an extraction request against the cache (a corrupted artifact is reported and dropped)."""
    say = on_message or log.info
    precision = precision or ctx.settings.precision
    _check_choices(poolings, dtype, precision)
    bb_row, ds = get_backbone_row(ctx, backbone), get_dataset(ctx, dataset)
    bb = open_backbone(ctx, bb_row.id)
    wanted = [(bb.resolve_tap(t), p) for t in dict.fromkeys(taps) for p in dict.fromkeys(poolings)]
    keys = {combo: _embedding_key(bb_row, ds, combo[0], combo[1], precision, dtype) for combo in wanted}
    missing = [c for c in wanted if not _usable(ctx, keys[c], say)]
    run_taps = list(dict.fromkeys(t for t, _ in missing))
    run_pools = list(dict.fromkeys(p for _, p in missing))
    run_key = content_key({"kind": "extraction-run", "keys": sorted(keys[c] for c in missing),
                           "taps": run_taps, "poolings": run_pools})
    return ExtractionPlan(bb_row, ds, precision, dtype, wanted, keys, missing, run_taps, run_pools, run_key)


def extract(ctx: Context, backbone: str | int, dataset: str | int, *, taps: Sequence[str] = ("conv5",),
            poolings: Sequence[str] = ("avg",), precision: str | None = None, device: str | None = None,
            batch_size: int | None = None, num_workers: int | None = None, dtype: str = "float32",
            progress: Callable[[ExtractProgress], None] | None = None,
            on_message: Callable[[str], None] | None = None) -> list[EmbeddingSetInfo]:
    """Embed every readable image of ``dataset`` at each tap x pooling; cached sets are reused, not recomputed.

    Shards that workers computed for the same run (:func:`extract_shards`) are picked up, not recomputed."""
    say = on_message or log.info
    st = ctx.settings
    plan = plan_extraction(ctx, backbone, dataset, taps=taps, poolings=poolings, precision=precision, dtype=dtype,
                           on_message=say)
    bb_row, ds, precision, keys, missing = plan.backbone, plan.dataset, plan.precision, plan.keys, plan.missing
    if missing:
        relpaths = readable_relpaths(ctx, ds.id)
        if not relpaths:
            raise ValueError(f"data set {ds.name!r} has no readable images ({ds.summary})")
        work_dir = ctx.store.work_dir("extraction", plan.run_key)
        say(f"extracting {', '.join(f'{t}/{p}' for t, p in missing)} of {len(relpaths)} images "
            f"from {ds.name!r} with {bb_row.name!r} ({precision})")
        result = run_extraction(
            open_backbone(ctx, bb_row.id), [Path(ds.root) / r for r in relpaths], taps=plan.run_taps,
            poolings=plan.run_poolings, work_dir=work_dir, device=device or st.device, precision=precision,
            batch_size=batch_size or st.batch_size, num_workers=st.num_workers if num_workers is None else num_workers,
            shard_size=st.shard_size, progress=progress, keep_features=False,  # streamed to the store below
        )
        if result.resumed_shards:
            say(f"resumed: {result.resumed_shards} shard(s) from an earlier interrupted run were reused")
        if result.failures:
            say(f"{len(result.failures)} image(s) could not be decoded and were left out")
        ok_paths = [relpaths[i] for i in result.ok]
        failures = {relpaths[i]: err for i, err in result.failures.items()}
        for tap, pooling in missing:
            meta = {"backbone": bb_row.name, "dataset": ds.name, "tap": tap, "pooling": pooling,
                    "precision": precision, "dtype": plan.dtype, "device": result.device, "seconds": result.seconds}
            _store_embeddings(ctx, keys[(tap, pooling)], _chunked(result, (tap, pooling), plan.dtype), result.ok,
                              ok_paths, failures, meta, plan.dtype)
        ctx.store.clear_work("extraction", plan.run_key)
    return [_register(ctx, bb_row, ds, combo, keys[combo], precision, plan.dtype, cached=combo not in missing)
            for combo in plan.wanted]


def prepare_shards(ctx: Context, plan: ExtractionPlan, *, batch_size: int, shard_size: int) -> list[int]:
    """Ready the shard folder of ``plan``'s run for several workers; the shards already on disk."""
    from featscope.extractors.extract import prepare_shards as prepare

    ds = plan.dataset
    paths = [Path(ds.root) / r for r in readable_relpaths(ctx, ds.id)]
    return prepare(open_backbone(ctx, plan.backbone.id), paths, taps=plan.run_taps, poolings=plan.run_poolings,
                   work_dir=ctx.store.work_dir("extraction", plan.run_key), precision=plan.precision,
                   batch_size=batch_size, shard_size=shard_size)


def extract_shards(ctx: Context, backbone: int, dataset: int, *, taps: Sequence[str], poolings: Sequence[str],
                   precision: str, batch_size: int, shard_size: int, run_key: str, start: int, stop: int,
                   device: str | None = None, num_workers: int | None = None,
                   progress: Callable[[ExtractProgress], None] | None = None) -> dict[str, int]:
    """Compute the shards of images ``start``..``stop - 1`` of one extraction run into its shard folder.

    One worker's part of an extraction split by image range; shards already on disk are kept (a worker
    killed mid-range leaves its finished shards to the next). ``start``/``stop`` must fall on shard bounds."""
    from featscope.extractors.extract import shard_ranges

    st = ctx.settings
    ds = get_dataset(ctx, dataset)
    relpaths = readable_relpaths(ctx, ds.id)
    ranges = shard_ranges(len(relpaths), batch_size, shard_size)
    chosen = [i for i, r in enumerate(ranges) if start <= r.start and r.stop <= stop]
    if not chosen or ranges[chosen[0]].start != start or ranges[chosen[-1]].stop != stop:
        bounds = sorted({r.start for r in ranges} | {len(relpaths)})
        raise ValueError(f"images {start}..{stop} do not fall on shard bounds of this extraction ({bounds[:8]}...)")
    result = run_extraction(
        open_backbone(ctx, backbone), [Path(ds.root) / r for r in relpaths], taps=list(taps), poolings=list(poolings),
        work_dir=ctx.store.work_dir("extraction", run_key), device=device or st.device, precision=precision,
        batch_size=batch_size, num_workers=st.num_workers if num_workers is None else num_workers,
        shard_size=shard_size, progress=progress, shards=chosen)
    return {"first_shard": chosen[0], "last_shard": chosen[-1], "shards": len(chosen),
            "resumed": result.resumed_shards, "computed": len(chosen) - result.resumed_shards,
            "images": stop - start, "failed": len(result.failures)}


def _check_choices(poolings: Sequence[str], dtype: str, precision: str) -> None:
    bad = [p for p in poolings if p not in POOLINGS]
    if bad:
        raise ValueError(f"unknown pooling {bad[0]!r}; choose from {', '.join(POOLINGS)}")
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, not {dtype!r}")
    if precision not in ("fp32", "bf16", "fp16"):
        raise ValueError(f"precision must be fp32, bf16 or fp16, not {precision!r}")


def _usable(ctx: Context, key: str, say: Callable[[str], None]) -> bool:
    """True if a verified artifact (embeddings and index) exists; a corrupt one is reported and dropped."""
    for kind in ("embeddings", "index"):
        if not ctx.store.has(kind, key):
            return False
        problems = ctx.store.verify(kind, key)
        if problems:
            say(f"cached {kind} {key[:12]} is corrupted ({'; '.join(problems)}); rebuilding it")
            ctx.store.delete(kind, key)
            return False
    return True


def _chunked(result, key: tuple[str, str], dtype: str) -> ChunkedArray:
    """One (tap, pooling) of an extraction as a stream of its shards: stored without holding all of it."""
    first = next(result.stream(key))
    return ChunkedArray((len(result.ok), first.shape[1]), np.dtype(dtype), result.stream(key))


def _store_embeddings(ctx: Context, key: str, feats: ChunkedArray, positions: np.ndarray, relpaths: list[str],
                      failures: dict[str, str], meta: dict, dtype: str) -> None:
    ctx.store.put("embeddings", key, {"embeddings": feats, "positions": positions.astype(np.int64)},
                  {**meta, "n": int(feats.shape[0]), "dim": int(feats.shape[1]), "failures": failures},
                  blobs={"relpaths.json": json.dumps(relpaths).encode()})
    store_index(ctx, key)


def _register(ctx: Context, bb: BackboneRow, ds: Dataset, combo: tuple[str, str], key: str, precision: str,
              dtype: str, cached: bool) -> EmbeddingSetInfo:
    tap, pooling = combo
    with ctx.session() as s:
        row = s.scalars(select(EmbeddingSet).where(EmbeddingSet.artifact_key == key, EmbeddingSet.backbone_id == bb.id,
                                                   EmbeddingSet.dataset_id == ds.id)).first()
        if row is None:
            art = ctx.store.get("embeddings", key, verify=False)
            idx = ctx.store.get("index", key, verify=False)
            row = EmbeddingSet(backbone_id=bb.id, dataset_id=ds.id, tap=tap, pooling=pooling, precision=precision,
                               dtype=dtype, n=art.meta["n"], dim=art.meta["dim"], n_failed=len(art.meta["failures"]),
                               artifact_key=key, index_kind=idx.meta["kind"], seconds=float(art.meta.get("seconds", 0)),
                               index_meta=index_summary(idx.meta))
            s.add(row)
            s.flush()
        return EmbeddingSetInfo.of(row, bb.name, ds.name, cached=cached)


def list_embeddings(ctx: Context, backbone: str | int | None = None, dataset: str | int | None = None,
                    embedding_set: int | None = None) -> list[EmbeddingSetInfo]:
    """Embedding sets in the catalog, optionally for one backbone and/or data set, or the one with id ``embedding_set``."""
    with ctx.session() as s:
        q = (select(EmbeddingSet, BackboneRow.name, Dataset.name, Dataset.version)
             .join(BackboneRow, EmbeddingSet.backbone_id == BackboneRow.id)
             .join(Dataset, EmbeddingSet.dataset_id == Dataset.id).order_by(EmbeddingSet.id))
        if backbone is not None:
            q = q.where(EmbeddingSet.backbone_id == get_backbone_row(ctx, backbone).id)
        if dataset is not None:
            q = q.where(EmbeddingSet.dataset_id == get_dataset(ctx, dataset).id)
        if embedding_set is not None:
            q = q.where(EmbeddingSet.id == int(embedding_set))
        return [EmbeddingSetInfo.of(row, bb, f"{ds}@{v}" if v > 1 else ds) for row, bb, ds, v in s.execute(q)]


def get_embedding_set(ctx: Context, embedding_set: int) -> EmbeddingSetInfo:
    """One embedding set's catalog entry; :class:`NotFound` if there is none."""
    found = list_embeddings(ctx, embedding_set=embedding_set)
    if not found:
        raise NotFound(f"no embedding set {embedding_set}; `featscope embeddings list` "
                       f"(GET /api/v1/embedding-sets) shows them")
    return found[0]


def _embedding_row(ctx: Context, embedding_set: int) -> EmbeddingSet:
    return ctx.get_row(EmbeddingSet, embedding_set,
                       f"no embedding set {embedding_set}; `featscope embeddings list` (GET /api/v1/embedding-sets) "
                       f"shows them")


def load_embeddings(ctx: Context, embedding_set: int) -> Embeddings:
    """Vectors (float32) of an embedding set with the catalog ids, paths and labels of its rows."""
    row = _embedding_row(ctx, embedding_set)
    try:
        art = ctx.store.get("embeddings", row.artifact_key)
    except CorruptArtifact as e:
        e.args = (f"{e.args[0]} Or extract again for this backbone and data set (`featscope extract`, "
                  f"POST /api/v1/embedding-sets/extract): it rebuilds it.",)
        raise
    positions = art.array("positions")
    with ctx.session() as s:
        by_pos = {int(p): (i, r, lab) for p, i, r, lab in s.execute(
            select(Image.position, Image.id, Image.relpath, Image.label).where(
                Image.dataset_id == row.dataset_id, Image.position.is_not(None)))}
    images = [by_pos[int(p)] for p in positions]
    return Embeddings(art.array("embeddings").astype(np.float32), np.array([im[0] for im in images], dtype=np.int64),
                      [im[1] for im in images], [im[2] for im in images])


def neighbours(ctx: Context, embedding_set: int, image: str | int, k: int = 10) -> tuple[Neighbour, list[Neighbour]]:
    """The ``k`` nearest images (cosine) to ``image`` (catalog id or relative path) in an embedding set.

    Reads the query's row and the hits' catalog entries only: the vectors stay memory-mapped and the
    index is opened once per workspace, so a query costs the same over a hundred images or a million."""
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    row = _embedding_row(ctx, embedding_set)
    qs = open_query_set(ctx, row.artifact_key)
    where = _row_of(qs.positions, _position_of(ctx, row, image))
    if where is None:
        raise _not_in_set(row, image)
    hits = index_neighbours(qs.index, qs.vectors, [where], k, rerank=qs.rerank)[0]
    images = _images_at(ctx, row.dataset_id, [int(qs.positions[r]) for r in [where, *(h for h, _ in hits)]])

    def ref(r: int, rank: int, score: float) -> Neighbour:
        im = images[int(qs.positions[r])]
        return Neighbour(rank, im[0], im[1], im[2], float(score))

    return ref(where, 0, 1.0), [ref(r, i + 1, sc) for i, (r, sc) in enumerate(hits)]


def _position_of(ctx: Context, row: EmbeddingSet, image: str | int) -> int | None:
    with ctx.session() as s:
        q = select(Image.position).where(Image.dataset_id == row.dataset_id)
        q = q.where(Image.id == int(image)) if isinstance(image, int) or str(image).isdigit() else \
            q.where(Image.relpath == str(image))
        return s.scalars(q).first()


def _row_of(positions: np.ndarray, position: int | None) -> int | None:
    """Row of data set ``position`` in an embedding set (rows are in ascending position order)."""
    if position is None:
        return None
    r = int(np.searchsorted(positions, position))
    return r if r < len(positions) and int(positions[r]) == position else None


def _images_at(ctx: Context, dataset_id: int, positions: list[int]) -> dict[int, tuple[int, str, str | None]]:
    """position -> (image id, relative path, label) for a few positions of a data set."""
    with ctx.session() as s:
        rows = s.execute(select(Image.position, Image.id, Image.relpath, Image.label).where(
            Image.dataset_id == dataset_id, Image.position.in_(sorted(set(positions)))))
        return {int(p): (int(i), r, lab) for p, i, r, lab in rows}


def _not_in_set(row: EmbeddingSet, image: str | int) -> NotFound:
    return NotFound(
        f"image {image!r} is not in embedding set {row.id} (it may belong to another data set or have failed "
        f"to decode); pass a catalog image id or a path relative to the data set root"
    )


def import_embeddings(ctx: Context, backbone: str | int, dataset: str | int, vectors: np.ndarray, *,
                      tap: str = "conv5", pooling: str = "avg", dtype: str = "float16",
                      on_message: Callable[[str], None] | None = None) -> EmbeddingSetInfo:
    """Register vectors computed elsewhere (another tool, a GPU cluster, synthetic data) as an embedding set.

    ``vectors`` (N, D) hold one row per readable image of ``dataset`` in position order (``featscope dataset
    images`` order); any array-like that slices, a memory map of a million rows included, is streamed to the
    store (as ``dtype``) and indexed like an extracted set, never held whole. Keyed by the content of the
    vectors, so importing the same numbers again is a cache hit."""
    import hashlib

    say = on_message or log.info
    _check_choices([pooling], dtype, "fp32")
    bb_row, ds = get_backbone_row(ctx, backbone), get_dataset(ctx, dataset)
    relpaths = readable_relpaths(ctx, ds.id)
    shape = tuple(getattr(vectors, "shape", ()))
    if len(shape) != 2 or shape[0] != len(relpaths) or shape[1] < 1:
        raise ValueError(f"vectors must be (N, D) with one row per readable image of {ds.name!r} (N = "
                         f"{len(relpaths)}), got shape {shape}")
    chunk = max(1, (64 << 20) // (shape[1] * 4))
    digest = hashlib.sha256()
    for start in range(0, shape[0], chunk):
        block = np.ascontiguousarray(vectors[start:start + chunk], dtype=dtype)
        if not np.isfinite(block).all():
            raise ValueError(f"vectors rows {start}..{start + len(block) - 1} hold NaN or inf (or values too large "
                             f"for {dtype}); repair them first")
        digest.update(memoryview(block).cast("B"))
    key = content_key({"kind": "embeddings-import", "backbone": bb_row.fingerprint, "dataset": ds.fingerprint,
                       "tap": tap, "pooling": pooling, "dtype": dtype, "sha256": digest.hexdigest()})
    cached = _usable(ctx, key, say)
    if not cached:
        say(f"importing {shape[0]} x {shape[1]} vectors as {tap}/{pooling} of {ds.name!r} by {bb_row.name!r}")
        blocks = (vectors[s:s + chunk] for s in range(0, shape[0], chunk))
        ctx.store.put("embeddings", key,
                      {"embeddings": ChunkedArray(shape, np.dtype(dtype), blocks),
                       "positions": np.arange(shape[0], dtype=np.int64)},
                      {"backbone": bb_row.name, "dataset": ds.name, "tap": tap, "pooling": pooling,
                       "precision": "imported", "dtype": dtype, "n": shape[0], "dim": shape[1], "failures": {}},
                      blobs={"relpaths.json": json.dumps(relpaths).encode()})
        store_index(ctx, key, say)
    return _register(ctx, bb_row, ds, (tap, pooling), key, "imported", dtype, cached=cached)
