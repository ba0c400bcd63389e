"""The catalog's models on both databases it runs on: the SQLite file and PostgreSQL."""

import pytest
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from featscope.catalog import Backbone, Dataset, EmbeddingSet, Image, Job, open_catalog


@pytest.fixture(params=["sqlite", "postgresql"])
def catalog_url(request, tmp_path):
    if request.param == "postgresql":
        return request.getfixturevalue("postgres_url")
    return f"sqlite:///{tmp_path / 'c.sqlite'}"


@pytest.fixture
def sessions(catalog_url):
    return open_catalog(catalog_url)


def _dataset(**kw):
    base = dict(name="d", root="/r", source_path="/r", format="folder", fingerprint="f" * 64, n_images=1)
    return Dataset(**{**base, **kw})


def test_dataset_name_and_version_are_unique(sessions):
    with sessions() as s:
        s.add_all([_dataset(), _dataset(version=2)])
        s.commit()
        s.add(_dataset(version=2))
        with pytest.raises(IntegrityError):
            s.commit()


def test_image_paths_are_unique_within_a_dataset(sessions):
    with sessions() as s:
        d = _dataset()
        s.add(d)
        s.flush()
        s.add_all([Image(dataset_id=d.id, relpath="a.png", position=0), Image(dataset_id=d.id, relpath="a.png")])
        with pytest.raises(IntegrityError):
            s.commit()


def test_foreign_keys_are_enforced_and_deletes_cascade(sessions):
    with sessions() as s:
        s.add(EmbeddingSet(backbone_id=999, dataset_id=999, tap="layer4", pooling="avg", precision="fp32",
                           dtype="float32", n=1, dim=1, artifact_key="k"))
        with pytest.raises(IntegrityError):
            s.commit()
    with sessions() as s:
        d = _dataset()
        s.add(d)
        s.flush()
        s.add(Image(dataset_id=d.id, relpath="a.png", position=0, boxes=[["cat", 0, 0, 1, 1]]))
        s.commit()
        s.delete(d)
        s.commit()
        assert s.scalars(select(Image)).all() == []


def test_json_columns_round_trip(sessions):
    with sessions() as s:
        s.add(Backbone(name="b", spec="torchvision:resnet18", source="torchvision", arch="resnet18",
                       fingerprint="x", preprocess={"resize": 256, "mean": [0.1, 0.2, 0.3]}, taps=["layer1"]))
        s.add(Job(kind="extract", key="k", params={"taps": ["conv5"]}))
        s.commit()
    with sessions() as s:
        b = s.scalars(select(Backbone)).one()
        assert b.preprocess == {"resize": 256, "mean": [0.1, 0.2, 0.3]} and b.taps == ["layer1"]
        j = s.scalars(select(Job)).one()
        assert j.state == "queued" and j.params == {"taps": ["conv5"]} and j.progress == 0.0


def _old_schema():
    """The catalog as an older featscope made it: datasets and images as today, jobs without the worker columns
    (heartbeat, worker token, queue task id, cancel flag, parent job) and no analyses table at all."""
    from sqlalchemy import JSON, Column, DateTime, Float, Integer, MetaData, String, Table, Text

    md = MetaData()
    Dataset.__table__.to_metadata(md)
    Image.__table__.to_metadata(md)
    Table("jobs", md, Column("id", Integer, primary_key=True), Column("kind", String(32)), Column("key", String(64)),
          Column("params", JSON), Column("state", String(16)), Column("progress", Float), Column("message", Text),
          Column("log", Text), Column("error", Text), Column("result", JSON), Column("attempts", Integer),
          Column("created_at", DateTime(timezone=True)), Column("started_at", DateTime(timezone=True)),
          Column("finished_at", DateTime(timezone=True)))
    return md


def test_an_older_catalog_gains_new_columns_and_tables_and_keeps_its_rows(catalog_url):
    """A catalog whose jobs table predates the worker columns is upgraded in place, rows intact, on both databases."""
    from sqlalchemy import create_engine, insert, inspect

    from featscope.catalog import Analysis
    from featscope.catalog.session import make_engine

    engine = make_engine(catalog_url)
    old = _old_schema()
    old.create_all(engine)
    with engine.begin() as con:
        con.execute(insert(old.tables["datasets"]).values(
            name="old", version=1, root="/r", source_path="/r", format="folder", fingerprint="f" * 64,
            n_images=2, n_skipped=0, classes=["a"], summary="", skipped_reasons={}, warnings=[]))
        con.execute(insert(old.tables["images"]), [
            {"dataset_id": 1, "position": 0, "relpath": "a/1.png", "label": "a", "size_bytes": 3,
             "mtime_ns": 4, "boxes": []},
            {"dataset_id": 1, "position": 1, "relpath": "a/2.png", "label": "a", "size_bytes": 5,
             "mtime_ns": 6, "boxes": [["a", 0, 0, 1, 1]]}])
        con.execute(insert(old.tables["jobs"]).values(
            kind="extract", key="k1", params={"taps": ["conv5"]}, state="done", progress=1.0, message="ok",
            log="", result={"embedding_sets": [1]}, attempts=1))
    engine.dispose()
    assert not inspect(create_engine(catalog_url)).has_table("analyses")

    sessions = open_catalog(catalog_url)
    with sessions() as s:
        old_job = s.get(Job, 1)
        assert (old_job.kind, old_job.state, old_job.params, old_job.result) == \
            ("extract", "done", {"taps": ["conv5"]}, {"embedding_sets": [1]})
        assert old_job.cancel_requested is False and old_job.heartbeat_at is None and old_job.worker is None
        assert old_job.parent_id is None
        assert [(im.relpath, im.boxes) for im in s.scalars(select(Image).order_by(Image.id))] == \
            [("a/1.png", []), ("a/2.png", [["a", 0, 0, 1, 1]])]
        s.add(Job(kind="analysis", key="k2", worker="host:1:x", cancel_requested=True, parent_id=1))
        s.add(Analysis(kind="probe", params={}, inputs=[1], artifact_key="a" * 64))
        s.commit()
        assert s.get(Job, 2).cancel_requested is True and s.get(Job, 2).parent_id == 1
        # ids continue after the old rows on both databases (PostgreSQL: the sequence survived the upgrade)
        s.add(Dataset(name="new", root="/n", source_path="/n", format="folder", fingerprint="g" * 64, n_images=0))
        s.commit()
        assert s.scalars(select(Dataset.id).where(Dataset.name == "new")).one() == 2
    assert open_catalog(catalog_url)  # opening an up-to-date catalog again changes nothing


def test_plain_postgresql_urls_use_the_installed_psycopg_driver():
    from featscope.catalog.session import postgres_driver

    assert postgres_driver("postgresql://u:p@db:5432/fs") == "postgresql+psycopg://u:p@db:5432/fs"
    assert postgres_driver("postgres://u@db/fs") == "postgresql+psycopg://u@db/fs"
    assert postgres_driver("postgresql+psycopg2://u@db/fs") == "postgresql+psycopg2://u@db/fs"
    assert postgres_driver("sqlite:///x.sqlite") == "sqlite:///x.sqlite"


def test_several_processes_opening_an_empty_postgresql_catalog_at_once_all_succeed(postgres_url):
    """Web server and workers start together against a new database: schema creation must not race."""
    import subprocess
    import sys

    code = "import sys; from featscope.catalog import open_catalog; open_catalog(sys.argv[1])"
    procs = [subprocess.Popen([sys.executable, "-c", code, postgres_url.replace("+psycopg", "")],
                              stderr=subprocess.PIPE, text=True) for _ in range(4)]
    errors = [p.communicate(timeout=120)[1] for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, errors
    with open_catalog(postgres_url)() as s:
        assert s.scalars(select(Job)).all() == []
