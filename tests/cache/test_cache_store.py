"""ArtifactStore and content_key: error cases first, then round trips, corruption and atomicity."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from featscope.cache import store as store_mod
from featscope.cache.store import ArtifactStore, CorruptArtifact, MissingArtifact, atomic_write_bytes, content_key

KEY = content_key({"what": "test"})


@pytest.fixture
def store(tmp_path: Path) -> ArtifactStore:
    return ArtifactStore(tmp_path / "store")


def _put(store: ArtifactStore, key: str = KEY) -> Path:
    arrays = {"vectors": np.arange(12, dtype=np.float32).reshape(3, 4), "ids": np.array([5, 6, 7])}
    return store.put("embeddings", key, arrays, {"tap": "layer4", "n": 3}, blobs={"index.faiss": b"\x00\x01abc"})


# -- errors ----------------------------------------------------------------------------------------

def test_content_key_rejects_unkeyable_values():
    with pytest.raises(TypeError, match="cannot key a object"):
        content_key({"x": object()})
    with pytest.raises(TypeError, match="mapping"):
        content_key(["not", "a", "mapping"])  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        content_key({"x": float("nan")})


@pytest.mark.parametrize("kind,key", [("Embeddings", KEY), ("_work", KEY), ("a/b", KEY),
                                      ("emb", "../x"), ("emb", "a"), ("emb", "ab/cd")])
def test_bad_kind_or_key_is_rejected(store: ArtifactStore, kind: str, key: str):
    with pytest.raises(ValueError, match="artifact (kind|key)"):
        store.path(kind, key)


@pytest.mark.parametrize("arrays,blobs,match", [
    ({"a/b": np.zeros(1)}, {}, "file name"),
    ({}, {"manifest.json": b""}, "file name"),
    ({"x": np.zeros(1)}, {"x.npy": b""}, "clash"),
])
def test_bad_file_names_are_rejected(store: ArtifactStore, arrays, blobs, match):
    with pytest.raises(ValueError, match=match):
        store.put("emb", KEY, arrays, {}, blobs=blobs)
    assert not store.has("emb", KEY)


def test_missing_artifact(store: ArtifactStore):
    assert not store.has("emb", KEY)
    with pytest.raises(MissingArtifact, match="compute it"):
        store.get("emb", KEY)
    assert store.verify("emb", KEY) and "no artifact" in store.verify("emb", KEY)[0]
    assert store.delete("emb", KEY) is False


def test_unknown_array_or_blob_names_list_the_choices(store: ArtifactStore):
    _put(store)
    art = store.get("embeddings", KEY)
    with pytest.raises(KeyError, match="ids"):
        art.array("nope")
    with pytest.raises(KeyError, match="index.faiss"):
        art.blob("vectors.npy")


# -- content keys ----------------------------------------------------------------------------------

def test_content_key_is_canonical_json_sha256():
    a = {"weights": "abc", "tap": "layer4", "preprocess": {"resize": 256, "crop": 224}, "params": [1, 2.5]}
    b = {"params": [1, 2.5], "preprocess": {"crop": 224, "resize": 256}, "tap": "layer4", "weights": "abc"}
    canonical = '{"params":[1,2.5],"preprocess":{"crop":224,"resize":256},"tap":"layer4","weights":"abc"}'
    assert content_key(a) == content_key(b) == hashlib.sha256(canonical.encode()).hexdigest()
    assert content_key({**a, "tap": "layer3"}) != content_key(a)
    assert content_key({"p": (1, 2), "path": Path("/x"), "n": np.int64(3)}) == \
        content_key({"p": [1, 2], "path": "/x", "n": 3})


# -- round trip ------------------------------------------------------------------------------------

def test_put_get_round_trip(store: ArtifactStore):
    path = _put(store)
    assert path == store.root / "embeddings" / KEY[:2] / KEY and store.has("embeddings", KEY)
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["kind"] == "embeddings" and manifest["key"] == KEY
    assert manifest["files"]["vectors.npy"]["shape"] == [3, 4]
    assert manifest["files"]["vectors.npy"]["sha256"] == hashlib.sha256((path / "vectors.npy").read_bytes()).hexdigest()
    for mmap in (False, True):
        art = store.get("embeddings", KEY, mmap=mmap)
        np.testing.assert_array_equal(art.array("vectors"), np.arange(12, dtype=np.float32).reshape(3, 4))
        assert isinstance(art.array("vectors"), np.memmap) == mmap
        assert art.array("ids").tolist() == [5, 6, 7]
        assert art.blob("index.faiss") == b"\x00\x01abc"
        assert art.meta == {"tap": "layer4", "n": 3}
    assert store.verify("embeddings", KEY) == []
    assert [m["key"] for m in store.list("embeddings")] == [KEY]


def test_put_keeps_an_intact_artifact(store: ArtifactStore):
    _put(store)
    before = (store.path("embeddings", KEY) / "manifest.json").read_bytes()
    store.put("embeddings", KEY, {"other": np.ones(2)}, {"x": 1})
    assert (store.path("embeddings", KEY) / "manifest.json").read_bytes() == before


def test_delete_and_work_dirs(store: ArtifactStore):
    _put(store)
    work = store.work_dir("embeddings", KEY)
    (work / "shard-00000.npz").write_bytes(b"x")
    assert work == store.root / "_work" / "embeddings" / KEY and work.is_dir()
    store.clear_work("embeddings", KEY)
    assert not work.exists()
    assert store.delete("embeddings", KEY) is True
    assert not store.has("embeddings", KEY) and store.list("embeddings") == []
    assert list((store.root / "embeddings").rglob("*")) == [store.root / "embeddings" / KEY[:2]]


# -- corruption ------------------------------------------------------------------------------------

def _flip_byte(path: Path, offset: int = -1) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def test_flipped_byte_raises_corrupt_artifact(store: ArtifactStore):
    path = _put(store)
    _flip_byte(path / "vectors.npy")
    with pytest.raises(CorruptArtifact) as err:
        store.get("embeddings", KEY)
    e = err.value
    assert e.file == "vectors.npy" and e.expected != e.actual and e.actual is not None
    assert KEY in str(e) and "recompute" in str(e)
    assert len(store.verify("embeddings", KEY)) == 1
    store.get("embeddings", KEY, verify=False)  # opt-out still loads


@pytest.mark.parametrize("damage", ["truncate", "remove", "manifest"])
def test_other_damage_is_reported(store: ArtifactStore, damage: str):
    path = _put(store)
    if damage == "truncate":
        (path / "index.faiss").write_bytes(b"\x00")
    elif damage == "remove":
        (path / "ids.npy").unlink()
    else:
        (path / "manifest.json").write_text("{not json")
    with pytest.raises(CorruptArtifact):
        store.get("embeddings", KEY)
    assert store.verify("embeddings", KEY)


def test_put_replaces_a_corrupt_artifact(store: ArtifactStore):
    path = _put(store)
    _flip_byte(path / "vectors.npy")
    _put(store)
    assert store.verify("embeddings", KEY) == []
    assert [p.name for p in path.parent.iterdir()] == [KEY]  # no temp or trash dirs left


# -- atomicity -------------------------------------------------------------------------------------

def test_failed_put_leaves_nothing_behind(store: ArtifactStore, monkeypatch: pytest.MonkeyPatch):
    real_write, calls = store_mod._write, []

    def failing_write(path: Path, data: bytes):
        calls.append(path.name)
        if len(calls) == 2:
            raise OSError("disk full")
        return real_write(path, data)

    monkeypatch.setattr(store_mod, "_write", failing_write)
    with pytest.raises(OSError, match="disk full"):
        _put(store)
    assert not store.has("embeddings", KEY)
    assert list((store.root / "embeddings").rglob("*")) == [store.root / "embeddings" / KEY[:2]]


def test_object_arrays_are_refused_before_writing(store: ArtifactStore):
    with pytest.raises(TypeError, match="Python objects"):
        store.put("emb", KEY, {"x": np.array([{}, 1], dtype=object)}, {})
    assert not (store.root / "emb").exists()


def test_atomic_write_bytes_replaces_whole_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    target = tmp_path / "f.bin"
    atomic_write_bytes(target, b"old")
    atomic_write_bytes(target, b"new contents")
    assert target.read_bytes() == b"new contents"

    def broken_replace(src, dst):
        raise OSError("rename failed")

    monkeypatch.setattr(store_mod.os, "replace", broken_replace)
    with pytest.raises(OSError, match="rename failed"):
        atomic_write_bytes(target, b"never")
    assert target.read_bytes() == b"new contents"
    assert [p.name for p in tmp_path.iterdir()] == ["f.bin"]


# -- large arrays ----------------------------------------------------------------------------------

def test_chunked_and_memory_mapped_arrays_are_streamed_and_read_back_memory_mapped(store: ArtifactStore, tmp_path):
    from featscope.cache.store import ChunkedArray

    rng = np.random.default_rng(0)
    whole = rng.normal(size=(1000, 16)).astype(np.float16)
    src = tmp_path / "src.npy"
    np.save(src, whole)
    mapped = np.load(src, mmap_mode="r")
    blocks = (whole[i:i + 300].astype(np.float32) for i in range(0, 1000, 300))  # cast to the declared dtype
    store.put("embeddings", KEY, {"chunked": ChunkedArray((1000, 16), np.float16, blocks), "mapped": mapped}, {})
    assert store.verify("embeddings", KEY) == []
    art = store.get("embeddings", KEY, mmap=True)
    for name in ("chunked", "mapped"):
        a = art.array(name)
        assert isinstance(a, np.memmap) and a.dtype == np.float16 and a.tobytes() == whole.tobytes()
        # the file is a plain .npy that numpy reads the same way
        assert np.load(art.path / f"{name}.npy").tobytes() == whole.tobytes()


def test_chunks_that_do_not_make_the_declared_array_are_refused(store: ArtifactStore):
    from featscope.cache.store import ChunkedArray

    with pytest.raises(ValueError, match="held 4 rows"):
        store.put("emb", KEY, {"x": ChunkedArray((5, 2), np.float32, [np.ones((4, 2))])}, {})
    with pytest.raises(ValueError, match="does not fit"):
        store.put("emb", KEY, {"x": ChunkedArray((5, 2), np.float32, [np.ones((5, 3))])}, {})
    assert not store.has("emb", KEY)
