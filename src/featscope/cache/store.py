"""Content-addressed artifact store: embeddings, indexes and analysis results keyed by their inputs.

An artifact is a directory ``root/<kind>/<key[:2]>/<key>/`` holding numpy arrays (``.npy``),
opaque blobs (a serialised FAISS index, say) and a ``manifest.json`` listing every file with its
sha256. Artifacts appear atomically (built in a temp dir, fsynced, renamed into place) so a crash
never leaves a half-written artifact that looks valid, and every load re-checks the checksums so a
damaged disk or a stray edit is reported instead of silently feeding wrong numbers to an analysis.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

MANIFEST = "manifest.json"
_KIND = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]+$")
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


def content_key(inputs: Mapping[str, Any]) -> str:
    """sha256 hex of the canonical JSON of ``inputs``: same inputs, same key, whatever the key order.

    Values may be JSON types, tuples (as lists), paths (as strings) and numpy scalars/arrays
    (as their Python values); anything else is a TypeError, because a key built from ``repr``
    would silently change between versions.
    """
    if not isinstance(inputs, Mapping):
        raise TypeError(f"content_key takes a mapping of named inputs, got {type(inputs).__name__}")
    text = json.dumps(inputs, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False, default=_canonical)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _canonical(value: Any) -> Any:
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, (np.generic, np.ndarray)):
        return value.tolist()
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    raise TypeError(
        f"cannot key a {type(value).__name__} value; pass JSON-compatible values "
        f"(str, number, bool, None, list, dict), paths or numpy scalars"
    )


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so readers see the old file or the whole new one, never a part.

    Temp file in the same directory, fsync, ``os.replace``, fsync of the directory (so the rename
    itself survives a power cut).
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # platforms that cannot open directories (Windows): rename is already durable
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class ChunkedArray:
    """An array too large to hold, given as its ``shape``, ``dtype`` and the row blocks that make it up, in order.

    :meth:`ArtifactStore.put` streams it to disk block by block (never all of it in memory): a million
    2048-d embeddings assembled from extraction shards, say. ``chunks`` is iterated once."""

    shape: tuple[int, ...]
    dtype: np.dtype
    chunks: Iterable[np.ndarray]


class _Hashing:
    """A write-only file wrapper that counts and hashes what goes through it."""

    def __init__(self, f: Any) -> None:
        self.f, self.digest, self.size = f, hashlib.sha256(), 0

    def write(self, data: bytes | memoryview) -> int:
        self.digest.update(data)
        self.size += len(data)
        return self.f.write(data)


class CorruptArtifact(RuntimeError):
    """An artifact file is missing, truncated or altered: its checksum no longer matches the manifest."""

    def __init__(self, kind: str, key: str, file: str, expected: str | None, actual: str | None,
                 detail: str = "") -> None:
        self.kind, self.key, self.file, self.expected, self.actual = kind, key, file, expected, actual
        what = detail or f"sha256 is {actual}, manifest says {expected}"
        super().__init__(
            f"artifact {kind}/{key} is corrupt: {file}: {what}. "
            f"Delete it (ArtifactStore.delete({kind!r}, {key!r})) and recompute it."
        )


class MissingArtifact(FileNotFoundError):
    """No artifact with that kind and key: compute it and ``put`` it first."""


@dataclass
class Artifact:
    """A loaded artifact: its directory, metadata and files; arrays are read on first use."""

    kind: str
    key: str
    path: Path
    meta: dict[str, Any]
    files: dict[str, dict[str, Any]]
    created: str
    mmap: bool = False
    _arrays: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    def array(self, name: str) -> np.ndarray:
        """The array stored as ``name`` (memory-mapped read-only when loaded with ``mmap=True``)."""
        if name not in self._arrays:
            file = f"{name}.npy"
            if file not in self.files or "shape" not in self.files[file]:
                raise KeyError(f"artifact {self.kind}/{self.key} has no array {name!r}; "
                               f"it has {sorted(self.array_names)}")
            self._arrays[name] = np.load(self.path / file, mmap_mode="r" if self.mmap else None,
                                         allow_pickle=False)
        return self._arrays[name]

    def blob(self, name: str) -> bytes:
        """The raw bytes stored as blob ``name``."""
        if name not in self.files or "shape" in self.files[name]:
            raise KeyError(f"artifact {self.kind}/{self.key} has no blob {name!r}; "
                           f"it has {sorted(n for n, f in self.files.items() if 'shape' not in f)}")
        return self.file(name).read_bytes()

    def file(self, name: str) -> Path:
        """The path of blob ``name`` (to hand to a reader that wants a file, e.g. ``faiss.read_index``)."""
        if name not in self.files or "shape" in self.files[name]:
            raise KeyError(f"artifact {self.kind}/{self.key} has no blob {name!r}; "
                           f"it has {sorted(n for n, f in self.files.items() if 'shape' not in f)}")
        return self.path / name

    @property
    def array_names(self) -> list[str]:
        return [n[: -len(".npy")] for n, f in self.files.items() if "shape" in f]


class ArtifactStore:
    """Artifacts under ``root``, addressed by ``(kind, key)``; see the module docstring for the layout."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    # -- paths -------------------------------------------------------------------------------
    def path(self, kind: str, key: str) -> Path:
        """Directory of artifact ``(kind, key)`` (whether or not it exists)."""
        _check_kind(kind)
        if not isinstance(key, str) or not _KEY.match(key):
            raise ValueError(f"artifact key {key!r} must be letters, digits, '_' or '-' (2+ chars); "
                             f"use content_key(inputs) to make one")
        return self.root / kind / key[:2] / key

    def work_dir(self, kind: str, key: str) -> Path:
        """Persistent scratch directory for resumable work on ``(kind, key)`` (shards), created."""
        self.path(kind, key)  # validates
        d = self.root / "_work" / kind / key
        d.mkdir(parents=True, exist_ok=True)
        return d

    def clear_work(self, kind: str, key: str) -> None:
        """Remove the scratch directory of ``(kind, key)``, typically once its artifact is put."""
        self.path(kind, key)
        shutil.rmtree(self.root / "_work" / kind / key, ignore_errors=True)

    # -- queries -----------------------------------------------------------------------------
    def has(self, kind: str, key: str) -> bool:
        """Whether the artifact exists (complete: its manifest is present). Does not verify it."""
        return (self.path(kind, key) / MANIFEST).is_file()

    def list(self, kind: str) -> list[dict[str, Any]]:
        """Manifests of every complete artifact of ``kind``, oldest first (unreadable ones skipped)."""
        _check_kind(kind)
        out = []
        for manifest in (self.root / kind).glob(f"*/*/{MANIFEST}"):
            try:
                out.append(json.loads(manifest.read_text("utf-8")))
            except (OSError, ValueError):
                continue
        return sorted(out, key=lambda m: (m.get("created", ""), m.get("key", "")))

    def verify(self, kind: str, key: str) -> list[str]:
        """Every problem with the artifact's files, as sentences; empty when it is intact."""
        problems: list[str] = []
        try:
            self._load(kind, key, verify=True, mmap=False, collect=problems)
        except MissingArtifact as e:
            return [str(e)]
        except CorruptArtifact as e:
            problems.append(str(e))
        return problems

    def get(self, kind: str, key: str, *, mmap: bool = False, verify: bool = True) -> Artifact:
        """Load an artifact; with ``verify`` every file's sha256 is checked (:class:`CorruptArtifact`)."""
        return self._load(kind, key, verify=verify, mmap=mmap, collect=None)

    # -- writes ------------------------------------------------------------------------------
    def put(self, kind: str, key: str, arrays: Mapping[str, np.ndarray | ChunkedArray], meta: Mapping[str, Any],
            blobs: Mapping[str, bytes | os.PathLike] | None = None) -> Path:
        """Store an artifact atomically and return its directory.

        Arrays are streamed to disk (a memory-mapped or :class:`ChunkedArray` input is never held whole); a
        blob is bytes or the path of a file to copy in.

        An intact artifact already stored under the key is kept (same key means same inputs,
        so the same content); a corrupt one is replaced.
        """
        final = self.path(kind, key)
        blobs = dict(blobs or {})
        files = _check_names(arrays, blobs)
        meta_json = json.loads(json.dumps(dict(meta), allow_nan=False, default=_canonical))
        if self.has(kind, key) and not self.verify(kind, key):
            return final
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = final.parent / f".tmp-{key}-{uuid.uuid4().hex}"
        try:
            tmp.mkdir()
            entries: dict[str, dict[str, Any]] = {}
            for name, arr in arrays.items():
                entries[files[name]] = _write_array(tmp / files[name], arr)
            for name, data in blobs.items():
                entries[name] = _copy_file(Path(data), tmp / name) if isinstance(data, os.PathLike) else \
                    _write(tmp / name, bytes(data))
            manifest = {"kind": kind, "key": key, "meta": meta_json, "files": entries,
                        "created": datetime.now(timezone.utc).isoformat()}
            _write(tmp / MANIFEST, json.dumps(manifest, indent=1, sort_keys=True).encode("utf-8"))
            _fsync_dir(tmp)
            self._install(tmp, final, kind, key)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        _fsync_dir(final.parent)
        return final

    def delete(self, kind: str, key: str) -> bool:
        """Remove an artifact (renamed away first, so it vanishes atomically); False if absent."""
        final = self.path(kind, key)
        if not final.exists():
            return False
        trash = final.parent / f".trash-{key}-{uuid.uuid4().hex}"
        os.rename(final, trash)
        shutil.rmtree(trash, ignore_errors=True)
        return True

    # -- internals ---------------------------------------------------------------------------
    def _install(self, tmp: Path, final: Path, kind: str, key: str) -> None:
        if final.exists():  # corrupt (or a partial left by hand): move it aside, then take its place
            if self.has(kind, key) and not self.verify(kind, key):
                return  # a concurrent writer finished first
            trash = final.parent / f".trash-{key}-{uuid.uuid4().hex}"
            os.rename(final, trash)
            shutil.rmtree(trash, ignore_errors=True)
        try:
            os.rename(tmp, final)
        except OSError:
            if self.has(kind, key) and not self.verify(kind, key):
                return  # lost a race against another writer of the same content
            raise

    def _load(self, kind: str, key: str, *, verify: bool, mmap: bool,
              collect: list[str] | None) -> Artifact:
        d = self.path(kind, key)
        if not (d / MANIFEST).is_file():
            raise MissingArtifact(f"no artifact {kind}/{key} under {self.root}; compute it and put() it first")
        try:
            manifest = json.loads((d / MANIFEST).read_text("utf-8"))
            files = manifest["files"]
            if manifest["kind"] != kind or manifest["key"] != key or not isinstance(files, dict):
                raise ValueError("manifest names another artifact")
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise CorruptArtifact(kind, key, MANIFEST, None, None, f"unreadable manifest ({e})") from e
        if verify:
            for name, entry in files.items():
                problem = _check_file(kind, key, d / name, name, entry)
                if problem is not None:
                    if collect is None:
                        raise problem
                    collect.append(str(problem))
        return Artifact(kind=kind, key=key, path=d, meta=manifest.get("meta", {}), files=files,
                        created=manifest.get("created", ""), mmap=mmap)


def _check_kind(kind: str) -> None:
    if not isinstance(kind, str) or not _KIND.match(kind):
        raise ValueError(f"artifact kind {kind!r} must be lower-case letters, digits, '_' or '-' "
                         f"and not start with '_' (e.g. 'embeddings', 'index')")


def _check_names(arrays: Mapping[str, np.ndarray | ChunkedArray],
                 blobs: Mapping[str, bytes | os.PathLike]) -> dict[str, str]:
    """Array name -> file name, after checking every name is a safe, unique file name."""
    files = {name: f"{name}.npy" for name in arrays}
    for name in list(arrays) + list(blobs):
        if not isinstance(name, str) or not _NAME.match(name) or name == MANIFEST:
            raise ValueError(f"file name {name!r} must be letters, digits, '_', '.', '-' "
                             f"(no '/'), and not {MANIFEST!r}")
    clash = set(files.values()) & set(blobs)
    if clash:
        raise ValueError(f"blob name(s) {sorted(clash)} clash with array files; rename the blob(s)")
    for name, arr in arrays.items():
        if np.dtype(arr.dtype if isinstance(arr, ChunkedArray) else np.asarray(arr).dtype).hasobject:
            raise TypeError(f"array {name!r} holds Python objects; store numeric/str arrays only")
    return files


def _write_array(path: Path, arr: np.ndarray | ChunkedArray) -> dict[str, Any]:
    """Write ``arr`` as ``.npy`` in bounded memory (numpy writes an array in 16 MiB blocks to a non-file
    object; a :class:`ChunkedArray` goes block by block), hashing on the way: no whole-file copy in memory."""
    with open(path, "wb") as f:
        out = _Hashing(f)
        if isinstance(arr, ChunkedArray):
            dtype, shape = np.dtype(arr.dtype), tuple(int(n) for n in arr.shape)
            np.lib.format.write_array_header_2_0(out, {"descr": np.lib.format.dtype_to_descr(dtype),
                                                       "fortran_order": False, "shape": shape})
            rows = 0
            for block in arr.chunks:
                block = np.ascontiguousarray(block, dtype=dtype)
                if block.shape[1:] != shape[1:]:
                    raise ValueError(f"a chunk of shape {block.shape} does not fit an array of shape {shape}")
                if block.size:
                    out.write(memoryview(block).cast("B"))
                rows += len(block)
            if rows != shape[0]:
                raise ValueError(f"the chunks held {rows} rows, the array's shape says {shape[0]}")
        else:
            a = np.asarray(arr)
            np.lib.format.write_array(out, a, allow_pickle=False)
            dtype, shape = a.dtype, a.shape
        f.flush()
        os.fsync(f.fileno())
    return {"sha256": out.digest.hexdigest(), "bytes": out.size, "shape": list(shape), "dtype": dtype.str}


def _copy_file(src: Path, path: Path) -> dict[str, Any]:
    """Copy a file in as a blob, 1 MiB at a time, hashing on the way (a large FAISS index, say)."""
    with open(src, "rb") as fin, open(path, "wb") as f:
        out = _Hashing(f)
        while block := fin.read(1 << 20):
            out.write(block)
        f.flush()
        os.fsync(f.fileno())
    return {"sha256": out.digest.hexdigest(), "bytes": out.size}


def _write(path: Path, data: bytes) -> dict[str, Any]:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    return {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}


def _check_file(kind: str, key: str, path: Path, name: str, entry: Mapping[str, Any]) -> CorruptArtifact | None:
    expected = entry.get("sha256")
    if not path.is_file():
        return CorruptArtifact(kind, key, name, expected, None, "file is missing")
    size = path.stat().st_size
    if size != entry.get("bytes"):
        return CorruptArtifact(kind, key, name, expected, None,
                               f"{size} bytes, manifest says {entry.get('bytes')}")
    actual = _sha256_file(path)
    if actual != expected:
        return CorruptArtifact(kind, key, name, expected, actual)
    return None
