import pytest
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from featscope.catalog import Backbone, Dataset, EmbeddingSet, Image, Job, open_catalog


@pytest.fixture
def sessions(tmp_path):
    return open_catalog(f"sqlite:///{tmp_path / 'c.sqlite'}")


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


def test_an_older_catalog_gains_new_columns_and_keeps_its_rows(tmp_path):
    """A catalog whose jobs table predates the worker columns is upgraded in place, rows intact."""
    import sqlite3

    from featscope.catalog import Job, open_catalog

    db = tmp_path / "old.sqlite"
    con = sqlite3.connect(db)
    con.execute("CREATE TABLE jobs (id INTEGER PRIMARY KEY, kind VARCHAR(32), key VARCHAR(64), params JSON, "
                "state VARCHAR(16), progress FLOAT, message TEXT, log TEXT, error TEXT, result JSON, attempts INTEGER, "
                "created_at DATETIME, started_at DATETIME, finished_at DATETIME)")
    con.execute("INSERT INTO jobs (kind, key, params, state, progress, message, log, result, attempts) "
                "VALUES ('extract', 'k1', '{}', 'done', 1.0, 'ok', '', '{}', 1)")
    con.commit()
    con.close()
    sessions = open_catalog(f"sqlite:///{db}")
    with sessions() as s:
        old = s.get(Job, 1)
        assert old.kind == "extract" and old.state == "done" and old.cancel_requested is False
        assert old.heartbeat_at is None and old.worker is None
        s.add(Job(kind="analysis", key="k2", worker="host:1:x", cancel_requested=True))
        s.commit()
        assert s.get(Job, 2).cancel_requested is True
