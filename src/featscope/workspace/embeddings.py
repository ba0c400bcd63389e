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

from featscope.cache.index import build_index, deserialize_index, neighbours as index_neighbours, serialize_index
from featscope.cache.store import CorruptArtifact, content_key
from featscope.catalog import Backbone as BackboneRow, Dataset, EmbeddingSet, Image
from featscope.extractors.extract import ENGINE_VERSION, ExtractProgress, extract as run_extraction
from featscope.extractors.taps import POOLINGS
from featscope.workspace.backbones import get_backbone_row, open_backbone
from featscope.workspace.context import Context, NotFound
from featscope.workspace.datasets import get_dataset, readable_images

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

    @classmethod
    def of(cls, row: EmbeddingSet, bb_name: str, ds_name: str, cached: bool = False) -> "EmbeddingSetInfo":
        return cls(row.id, bb_name, ds_name, row.tap, row.pooling, row.precision, row.dtype, row.n, row.dim,
                   row.n_failed, row.index_kind, row.artifact_key, cached)


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


def extract(ctx: Context, backbone: str | int, dataset: str | int, *, taps: Sequence[str] = ("conv5",),
            poolings: Sequence[str] = ("avg",), precision: str | None = None, device: str | None = None,
            batch_size: int | None = None, num_workers: int | None = None, dtype: str = "float32",
            progress: Callable[[ExtractProgress], None] | None = None,
            on_message: Callable[[str], None] | None = None) -> list[EmbeddingSetInfo]:
    """Embed every readable image of ``dataset`` at each tap x pooling; cached sets are reused, not recomputed."""
    say = on_message or log.info
    st = ctx.settings
    precision = precision or st.precision
    _check_choices(poolings, dtype, precision)
    bb_row, ds = get_backbone_row(ctx, backbone), get_dataset(ctx, dataset)
    bb = open_backbone(ctx, bb_row.id)
    wanted = [(bb.resolve_tap(t), p) for t in dict.fromkeys(taps) for p in dict.fromkeys(poolings)]
    keys = {combo: _embedding_key(bb_row, ds, combo[0], combo[1], precision, dtype) for combo in wanted}

    missing = [c for c in wanted if not _usable(ctx, keys[c], say)]
    if missing:
        images = readable_images(ctx, ds.id)
        if not images:
            raise ValueError(f"data set {ds.name!r} has no readable images ({ds.summary})")
        run_taps = list(dict.fromkeys(t for t, _ in missing))
        run_pools = list(dict.fromkeys(p for _, p in missing))
        run_key = content_key({"kind": "extraction-run", "keys": sorted(keys[c] for c in missing),
                               "taps": run_taps, "poolings": run_pools})
        work_dir = ctx.store.work_dir("extraction", run_key)
        say(f"extracting {', '.join(f'{t}/{p}' for t, p in missing)} of {len(images)} images "
            f"from {ds.name!r} with {bb_row.name!r} ({precision})")
        result = run_extraction(
            bb, [Path(ds.root) / im.relpath for im in images], taps=run_taps, poolings=run_pools, work_dir=work_dir,
            device=device or st.device, precision=precision, batch_size=batch_size or st.batch_size,
            num_workers=st.num_workers if num_workers is None else num_workers, shard_size=st.shard_size,
            progress=progress,
        )
        if result.resumed_shards:
            say(f"resumed: {result.resumed_shards} shard(s) from an earlier interrupted run were reused")
        if result.failures:
            say(f"{len(result.failures)} image(s) could not be decoded and were left out")
        relpaths = [images[i].relpath for i in result.ok]
        failures = {images[i].relpath: err for i, err in result.failures.items()}
        for tap, pooling in missing:
            _store_embeddings(ctx, keys[(tap, pooling)], result.features[(tap, pooling)], result.ok, relpaths,
                              failures, {"backbone": bb_row.name, "dataset": ds.name, "tap": tap, "pooling": pooling,
                                         "precision": precision, "dtype": dtype, "device": result.device,
                                         "seconds": result.seconds}, dtype)
        ctx.store.clear_work("extraction", run_key)
    return [_register(ctx, bb_row, ds, combo, keys[combo], precision, dtype, cached=combo not in missing)
            for combo in wanted]


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


def _store_embeddings(ctx: Context, key: str, feats: np.ndarray, positions: np.ndarray, relpaths: list[str],
                      failures: dict[str, str], meta: dict, dtype: str) -> None:
    vectors = np.ascontiguousarray(feats, dtype=np.float32)
    ctx.store.put("embeddings", key,
                  {"embeddings": vectors.astype(dtype, copy=False), "positions": positions.astype(np.int64)},
                  {**meta, "n": int(vectors.shape[0]), "dim": int(vectors.shape[1]), "failures": failures},
                  blobs={"relpaths.json": json.dumps(relpaths).encode()})
    index = build_index(vectors, flat_max=ctx.settings.flat_index_max)
    kind = "flat" if "Flat" in type(index).__name__ and "IVF" not in type(index).__name__ else "ivf"
    ctx.store.put("index", key, {}, {"kind": kind, "faiss_type": type(index).__name__, "n": int(index.ntotal)},
                  blobs={"index.faiss": serialize_index(index)})


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
                               artifact_key=key, index_kind=idx.meta["kind"], seconds=float(art.meta.get("seconds", 0)))
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
        by_pos = {im.position: im for im in s.scalars(
            select(Image).where(Image.dataset_id == row.dataset_id, Image.position.is_not(None)))}
    images = [by_pos[int(p)] for p in positions]
    return Embeddings(art.array("embeddings").astype(np.float32), np.array([im.id for im in images], dtype=np.int64),
                      [im.relpath for im in images], [im.label for im in images])


def _query_set(ctx: Context, row: EmbeddingSet) -> Embeddings:
    """The set's embeddings, read and checksummed once per workspace rather than per query."""
    key = ("embeddings", row.id, row.artifact_key)
    if key not in ctx.query_cache:
        ctx.query_cache[key] = load_embeddings(ctx, row.id)
    return ctx.query_cache[key]


def _query_index(ctx: Context, row: EmbeddingSet):
    key = ("index", row.id, row.artifact_key)
    if key not in ctx.query_cache:
        ctx.query_cache[key] = deserialize_index(ctx.store.get("index", row.artifact_key).blob("index.faiss"))
    return ctx.query_cache[key]


def neighbours(ctx: Context, embedding_set: int, image: str | int, k: int = 10) -> tuple[Neighbour, list[Neighbour]]:
    """The ``k`` nearest images (cosine) to ``image`` (catalog id or relative path) in an embedding set."""
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    row = _embedding_row(ctx, embedding_set)
    emb = _query_set(ctx, row)
    rows = _find_row(emb, image, row)
    hits = index_neighbours(_query_index(ctx, row), emb.vectors, [rows], k)[0]

    def ref(r: int, rank: int, score: float) -> Neighbour:
        return Neighbour(rank, int(emb.image_ids[r]), emb.relpaths[r], emb.labels[r], float(score))

    return ref(rows, 0, 1.0), [ref(r, i + 1, sc) for i, (r, sc) in enumerate(hits)]


def _find_row(emb: Embeddings, image: str | int, row: EmbeddingSet) -> int:
    if isinstance(image, int) or str(image).isdigit():
        hit = np.flatnonzero(emb.image_ids == int(image))
    else:
        hit = np.array([i for i, p in enumerate(emb.relpaths) if p == str(image)], dtype=np.int64)
    if hit.size == 0:
        raise NotFound(
            f"image {image!r} is not in embedding set {row.id} (it may belong to another data set or have failed "
            f"to decode); pass a catalog image id or a path relative to the data set root"
        )
    return int(hit[0])
