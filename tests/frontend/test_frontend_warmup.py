"""What a large projection page needs before its first visit: the data set's image table as arrays (checked against
the catalog row by row) and datashader's kernels compiled for what the page draws (no compile left for the page)."""

from __future__ import annotations

import numpy as np
import pytest
from sqlalchemy import select

from featscope.catalog import Dataset, Image
from featscope.frontend import data, raster


def _catalog_rows(ctx, dataset_id: int) -> list[tuple[int, int, str | None]]:
    with ctx.session() as s:
        return sorted(s.execute(select(Image.position, Image.id, Image.label).where(
            Image.dataset_id == dataset_id, Image.position.is_not(None))).all())


def _dataset_id(world) -> int:
    return world.ws.datasets()[0].id


def test_dataset_points_are_the_catalog_rows_in_position_order(world):
    ds = _dataset_id(world)
    rows = _catalog_rows(world.ws.ctx, ds)
    points = data.dataset_points(world.ws.ctx, ds)
    assert points.classes == ["blue", "green", "red"]
    assert points.positions.tolist() == [r[0] for r in rows]
    assert points.ids.tolist() == [r[1] for r in rows]
    assert [points.classes[c] for c in points.codes] == [r[2] for r in rows]


def test_unlabelled_images_get_code_minus_one_and_any_scan_order_is_sorted(tmp_path):
    from featscope.server.settings import ServerSettings
    from featscope.workspace import Workspace

    ws = Workspace(ServerSettings(data_dir=tmp_path / "data"))
    with ws.ctx.session() as s:
        ds = Dataset(name="rows", version=1, root=str(tmp_path), source_path=str(tmp_path), format="folder",
                     fingerprint="rows", n_images=6, n_skipped=0, classes=["b", "a"], summary="6 rows")
        s.add(ds)
        s.flush()
        ds_id = ds.id
    positions, labels = [4, 0, 5, 2, 1, 3], ["b", None, "a", "b", "a", None]  # inserted out of order
    with ws.ctx.session() as s:
        s.execute(Image.__table__.insert(), [
            {"dataset_id": ds_id, "position": p, "relpath": f"{p}.png", "label": lab, "width": 8, "height": 8,
             "size_bytes": 0, "mtime_ns": 0, "boxes": [], "error": None} for p, lab in zip(positions, labels)])
    rows = _catalog_rows(ws.ctx, ds_id)
    points = data.dataset_points(ws.ctx, ds_id)
    assert points.positions.tolist() == [0, 1, 2, 3, 4, 5] and points.ids.tolist() == [r[1] for r in rows]
    assert points.classes == ["a", "b"]
    assert points.codes.tolist() == [{"a": 0, "b": 1, None: -1}[r[2]] for r in rows]
    table = data.point_table(ws.ctx, ds_id, np.array([1, 3, 4]))
    assert table.ids.tolist() == [rows[1][1], rows[3][1], rows[4][1]] and table.codes.tolist() == [0, -1, 1]
    with pytest.raises(LookupError, match="recompute the analysis"):
        data.point_table(ws.ctx, ds_id, np.array([1, 9]))


def test_warm_points_reads_the_data_sets_of_sets_above_the_size(world):
    ctx = world.ws.ctx
    ds = _dataset_id(world)
    ctx.query_cache.pop(("frontend-dataset-points", ds, ""), None)
    assert data.warm_points(ctx, min_images=24) == []  # the sets hold 24 images: none above 24
    assert ("frontend-dataset-points", ds, "") not in ctx.query_cache
    assert data.warm_points(ctx, min_images=10) == [ds]
    assert ("frontend-dataset-points", ds, "") in ctx.query_cache


def test_frames_hold_floats_whatever_they_are_given():
    frame = raster.Frame(-1, 1, np.float32(-2), np.int64(3))
    assert all(type(v) is float for v in (frame.x0, frame.x1, frame.y0, frame.y1))


def test_after_the_warm_up_a_page_map_compiles_nothing(monkeypatch):
    """The page's first map must find its kernels compiled: numba compiles per argument types and datashader per
    categorical schema, so a warm-up with int bounds or another number of classes leaves the page to compile."""
    from numba.core.dispatcher import Dispatcher

    from featscope.frontend.scatter import AGREEMENT_SCALE, palette

    raster.warm_up([13])  # a class count no other test draws
    compiled: list[str] = []
    real = Dispatcher._compile_for_args

    def spy(self, *args, **kwargs):
        compiled.append(self.py_func.__name__)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Dispatcher, "_compile_for_args", spy)
    rng = np.random.default_rng(0)
    coords = rng.normal(size=(500, 2)).astype(np.float32)
    codes = rng.integers(-1, 13, 500).astype(np.int16)
    frame = raster.Frame.of(coords)
    assert raster.render_categories(coords, codes, palette(13), frame).startswith("data:image/png;base64,")
    raster.render_values(coords, rng.random(500).astype(np.float32), AGREEMENT_SCALE, frame)
    raster.render_mask(coords, codes > 5, frame)
    assert compiled == []


def test_the_server_warms_up_when_a_set_is_raster_sized(world, monkeypatch):
    from featscope.frontend.app import _warm_rasters

    ctx = world.ws.ctx
    ds = _dataset_id(world)
    monkeypatch.setattr(raster, "RASTER_ABOVE", 1000)
    assert _warm_rasters(world.svc) is None  # 24 images: WebGL maps, nothing to warm
    monkeypatch.setattr(raster, "RASTER_ABOVE", 10)
    ctx.query_cache.pop(("frontend-dataset-points", ds, ""), None)
    warmed: list[list[int]] = []
    monkeypatch.setattr(raster, "warm_up", lambda counts: warmed.append(list(counts)))
    thread = _warm_rasters(world.svc)
    thread.join(timeout=120)
    assert not thread.is_alive() and ("frontend-dataset-points", ds, "") in ctx.query_cache
    assert warmed == [[1, 3]]  # the default and the data set's three classes


def test_a_failing_table_read_still_compiles_the_kernels(world, monkeypatch):
    from featscope.frontend.app import _warm_rasters

    monkeypatch.setattr(raster, "RASTER_ABOVE", 10)
    monkeypatch.setattr(data, "dataset_points", lambda ctx, i: (_ for _ in ()).throw(RuntimeError("db gone")))
    warmed: list[list[int]] = []
    monkeypatch.setattr(raster, "warm_up", lambda counts: warmed.append(list(counts)))
    _warm_rasters(world.svc).join(timeout=120)
    assert warmed == [[1]]


def test_concurrent_first_reads_of_a_table_read_it_once(world, monkeypatch):
    import threading
    import time

    ctx = world.ws.ctx
    ds = _dataset_id(world)
    ctx.query_cache.pop(("frontend-dataset-points", ds, ""), None)
    real, reads, gate = data._read_points, [], threading.Event()

    def slow(ctx_, dataset_id):
        reads.append(dataset_id)
        gate.wait(5)
        return real(ctx_, dataset_id)

    monkeypatch.setattr(data, "_read_points", slow)
    got: list = []
    threads = [threading.Thread(target=lambda: got.append(data.dataset_points(ctx, ds))) for _ in range(3)]
    for t in threads:
        t.start()
    time.sleep(0.3)  # all three have asked by now: one reads, two wait
    gate.set()
    for t in threads:
        t.join(10)
    assert reads == [ds] and len(got) == 3 and got[0] is got[1] is got[2]


def test_a_frame_spans_the_points_padded_and_ignores_nan_rows():
    coords = np.array([[0.0, 10.0], [4.0, -2.0], [np.nan, np.nan], [2.0, 6.0]], np.float32)
    frame = raster.Frame.of(coords, pad=0.25)
    assert (frame.x0, frame.x1, frame.y0, frame.y1) == (-1.0, 5.0, -5.0, 13.0)
