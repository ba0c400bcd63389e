from pathlib import Path

import pytest
from pydantic import ValidationError

from featscope.config import Settings


def test_bad_values_are_rejected_with_the_allowed_choices():
    with pytest.raises(ValidationError, match="device must be"):
        Settings(device="gpu0")
    with pytest.raises(ValidationError):
        Settings(batch_size=0)
    with pytest.raises(ValidationError):
        Settings(precision="int8")


def test_environment_prefix_and_default_catalog_url(monkeypatch, tmp_path):
    monkeypatch.setenv("FEATSCOPE_DATA_DIR", str(tmp_path / "d"))
    monkeypatch.setenv("FEATSCOPE_BATCH_SIZE", "7")
    monkeypatch.setenv("FEATSCOPE_DEVICE", "cuda:1")
    s = Settings()
    assert s.data_dir == tmp_path / "d"
    assert s.batch_size == 7 and s.device == "cuda:1"
    assert s.catalog_url == f"sqlite:///{(tmp_path / 'd' / 'catalog.sqlite').resolve()}"
    assert s.artifacts_dir == tmp_path / "d" / "artifacts"


def test_database_url_overrides_sqlite():
    s = Settings(database_url="postgresql+psycopg://u:p@db/featscope")
    assert s.catalog_url == "postgresql+psycopg://u:p@db/featscope"


def test_home_is_expanded():
    assert Settings(data_dir=Path("~/fs")).data_dir == Path.home() / "fs"


def test_scale_out_settings_from_the_environment(monkeypatch):
    monkeypatch.setenv("FEATSCOPE_EXTRACT_JOB_IMAGES", "4096")
    monkeypatch.setenv("FEATSCOPE_INDEX_RECALL", "0.99")
    monkeypatch.setenv("FEATSCOPE_INDEX_MEMORY_MAX", str(1 << 30))
    s = Settings()
    assert (s.extract_job_images, s.index_recall, s.index_memory_max) == (4096, 0.99, 1 << 30)
    for bad in ({"index_recall": 1.5}, {"index_recall": 0}, {"extract_job_images": 0}, {"index_memory_max": 10}):
        with pytest.raises(ValidationError):
            Settings(**bad)
