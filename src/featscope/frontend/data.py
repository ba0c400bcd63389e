"""Catalog reads the pages need beyond the workspace's list functions: describing embedding sets, and the
catalog images of given data set positions without reading a whole (possibly million-image) data set."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

import numpy as np
from sqlalchemy import func, select

from featscope.catalog import EmbeddingSet, Image
from featscope.workspace.context import Context
from featscope.workspace.embeddings import EmbeddingSetInfo, list_embeddings

log = logging.getLogger(__name__)
_CHUNK = 5000  # positions per IN (...) query, well under every database's parameter limit


# torchvision ResNet stage names and the study's names for them (Conv2..Conv5)
STUDY_ALIASES = {"layer1": "conv2", "layer2": "conv3", "layer3": "conv4", "layer4": "conv5"}


def tap_label(tap: str) -> str:
    return f"{tap} ({STUDY_ALIASES[tap]})" if tap in STUDY_ALIASES else tap


def set_label(s: EmbeddingSetInfo) -> str:
    return f"#{s.id} · {s.backbone} · {tap_label(s.tap)}/{s.pooling} · {s.dataset} ({s.n:,})"


def set_options(ctx: Context, dataset: str | None = None) -> list[dict]:
    """Dropdown options of every embedding set (optionally of one data set), newest first."""
    sets = list_embeddings(ctx)
    if dataset is not None:
        sets = [s for s in sets if s.dataset == dataset]
    return [{"label": set_label(s), "value": s.id} for s in reversed(sets)]


def set_info(ctx: Context, set_id: int | None) -> EmbeddingSetInfo | None:
    if set_id is None:
        return None
    found = list_embeddings(ctx, embedding_set=int(set_id))
    return found[0] if found else None


def dataset_id_of(ctx: Context, set_id: int) -> int:
    return ctx.get_row(EmbeddingSet, int(set_id), f"no embedding set {set_id}").dataset_id


def valid_pair(ctx: Context, a: int | None, b: int | None) -> bool:
    ia, ib = set_info(ctx, a), set_info(ctx, b)
    return ia is not None and ib is not None and ia.id != ib.id and ia.dataset == ib.dataset


@dataclass(frozen=True)
class ImageRefs:
    """Catalog ids, relative paths and labels of data set positions, in the order asked."""

    ids: np.ndarray
    relpaths: list[str]
    labels: list[str | None]

    def ref(self, i: int) -> dict:
        return {"image_id": int(self.ids[i]), "relpath": self.relpaths[i], "label": self.labels[i]}


def image_refs(ctx: Context, dataset_id: int, positions: np.ndarray | list[int], *, paths: bool = True) -> ImageRefs:
    """The catalog images at ``positions`` of a data set (an analysis' rows), read in chunks of positions."""
    pos = np.asarray(positions, dtype=np.int64)
    found: dict[int, tuple[int, str, str | None]] = {}
    cols = (Image.position, Image.id, Image.relpath, Image.label) if paths else (Image.position, Image.id)
    unique = np.unique(pos)
    with ctx.session() as s:
        if len(unique) > 50_000:  # most of the set: one scan beats many IN lists
            q = select(*cols).where(Image.dataset_id == dataset_id, Image.position.is_not(None))
            rows = s.execute(q).all()
        else:
            rows = []
            for start in range(0, len(unique), _CHUNK):
                chunk = [int(p) for p in unique[start:start + _CHUNK]]
                rows += s.execute(select(*cols).where(Image.dataset_id == dataset_id, Image.position.in_(chunk))).all()
    for r in rows:
        found[int(r[0])] = (int(r[1]), r[2] if paths else "", r[3] if paths else None)
    missing = [int(p) for p in unique if int(p) not in found]
    if missing:
        raise LookupError(f"{len(missing)} position(s) of data set {dataset_id} have no catalog image "
                          f"(first: {missing[0]}); the catalog and the analysis disagree, recompute the analysis")
    triples = [found[int(p)] for p in pos]
    return ImageRefs(np.array([t[0] for t in triples], dtype=np.int64), [t[1] for t in triples],
                     [t[2] for t in triples])


def image_refs_by_id(ctx: Context, ids: list[int]) -> dict[int, dict]:
    """``{id: {"relpath", "label"}}`` for a few catalog image ids (a thumbnail grid)."""
    if not ids:
        return {}
    with ctx.session() as s:
        rows = s.execute(select(Image.id, Image.relpath, Image.label).where(Image.id.in_([int(i) for i in ids]))).all()
    return {int(r[0]): {"relpath": r[1], "label": r[2]} for r in rows}


@dataclass(frozen=True)
class PointTable:
    """Per row of an analysis: catalog image id and class code (-1: no label), with the class names."""

    ids: np.ndarray
    codes: np.ndarray
    classes: list[str]


def point_table(ctx: Context, dataset_id: int, positions: np.ndarray) -> PointTable:
    """Ids and class codes of every row of a projection (``positions``: sorted data set positions), taken from
    the data set's whole table (:func:`dataset_points`) and kept per workspace: a projection page asks again on
    every visit."""
    key = ("frontend-points", int(dataset_id), len(positions), int(np.asarray(positions[:1]).sum()),
           int(np.asarray(positions[-1:]).sum()))
    if key in ctx.query_cache:
        return ctx.query_cache[key]
    pos = np.asarray(positions, dtype=np.int64)
    whole = dataset_points(ctx, dataset_id)
    keys = whole.positions
    at = np.searchsorted(keys, pos)
    if len(keys) == 0 or np.any(at >= len(keys)) or np.any(keys[np.minimum(at, len(keys) - 1)] != pos):
        raise LookupError(f"some rows of this analysis have no catalog image in data set {dataset_id}; "
                          f"recompute the analysis")
    table = PointTable(whole.ids[at], whole.codes[at], whole.classes)
    ctx.query_cache[key] = table
    return table


@dataclass(frozen=True)
class DatasetPoints:
    """Every image of a data set in position order: positions, catalog ids, class codes (-1: no label)."""

    positions: np.ndarray
    ids: np.ndarray
    codes: np.ndarray
    classes: list[str]


def dataset_points(ctx: Context, dataset_id: int) -> DatasetPoints:
    """The data set's images as arrays, read in one scan and kept per workspace (data sets never change).

    A million images take about 0.8 s to read, most of it the database driver making the rows, so the server
    reads the tables of data sets big enough for a raster map at start-up (:func:`warm_points`) and the first
    visit of their projection page finds them ready. One read per data set at a time: a page asking while the
    start-up read runs waits for it rather than reading the table a second time alongside."""
    key = ("frontend-dataset-points", int(dataset_id), "")
    hit = ctx.query_cache.get(key)
    if hit is not None:
        return hit
    lock = ctx.query_cache.setdefault(("frontend-dataset-points-lock", int(dataset_id), ""), threading.Lock())
    with lock:
        hit = ctx.query_cache.get(key)
        if hit is None:
            hit = ctx.query_cache[key] = _read_points(ctx, dataset_id)
    return hit


def _read_points(ctx: Context, dataset_id: int) -> DatasetPoints:
    rows = _plain_rows(ctx, select(Image.position, Image.id, Image.label).where(
        Image.dataset_id == dataset_id, Image.position.is_not(None)))
    n = len(rows)
    # columns by np.fromiter and label codes by a dict: a DataFrame of the rows took longer than the scan
    positions = np.fromiter((r[0] for r in rows), np.int64, n)
    ids = np.fromiter((r[1] for r in rows), np.int64, n)
    first_seen: dict[str | None, int] = {}
    raw = np.fromiter((first_seen.setdefault(r[2], len(first_seen)) for r in rows), np.int32, n)
    del rows
    classes = sorted(str(c) for c in first_seen if c is not None)
    rank = {c: i for i, c in enumerate(classes)}
    lut = np.array([rank[str(c)] if c is not None else -1 for c in first_seen] or [-1], dtype=np.int16)
    codes = lut[raw]
    if n > 1 and not bool(np.all(positions[1:] > positions[:-1])):  # the scan's order is not promised
        order = np.argsort(positions, kind="stable")
        positions, ids, codes = positions[order], ids[order], codes[order]
    return DatasetPoints(positions, ids, codes, classes)


def large_datasets(ctx: Context, min_images: int, most: int = 4) -> list[int]:
    """Ids of the ``most`` newest data sets having an embedding set of more than ``min_images`` images."""
    with ctx.session() as s:
        return [int(i) for i in s.scalars(
            select(EmbeddingSet.dataset_id).where(EmbeddingSet.n > min_images).group_by(EmbeddingSet.dataset_id)
            .order_by(func.max(EmbeddingSet.id).desc()).limit(most)).all()]


def warm_points(ctx: Context, min_images: int, most: int = 4) -> list[int]:
    """Read (:func:`dataset_points`) the tables of :func:`large_datasets`; returns the ids of those read. Run at
    server start in the background: a table that fails to read is logged and left to the page."""
    done = []
    for dataset_id in large_datasets(ctx, min_images, most):
        try:
            dataset_points(ctx, dataset_id)
        except Exception:  # noqa: BLE001 - a warm-up only saves time
            log.warning("start-up warm-up: reading data set %s's images failed", dataset_id, exc_info=True)
            continue
        done.append(dataset_id)
    return done


def _plain_rows(ctx: Context, stmt) -> list[tuple]:
    """The rows of ``stmt`` as the database driver's plain tuples.

    SQLAlchemy wraps each result row in a ``Row`` (several microseconds each): for a million images that is
    most of a projection page's time, so this runs the compiled statement on the driver's own cursor."""
    with ctx.session() as s:
        compiled = stmt.compile(dialect=s.bind.dialect)
        params = tuple(compiled.params[k] for k in compiled.positiontup) if compiled.positiontup else compiled.params
        cursor = s.connection().connection.driver_connection.cursor()
        try:
            cursor.execute(str(compiled), params)
            return cursor.fetchall()
        finally:
            cursor.close()
