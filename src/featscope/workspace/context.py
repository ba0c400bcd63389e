"""What every workspace service needs: settings, the catalog's session factory, the artifact store."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

from sqlalchemy.orm import Session, sessionmaker

from featscope.cache.store import ArtifactStore
from featscope.catalog import open_catalog
from featscope.config import Settings


T = TypeVar("T")


class NotFound(LookupError):
    """A named thing (data set, backbone, embedding set, image) is not in the catalog."""


@dataclass
class Context:
    settings: Settings
    sessions: sessionmaker[Session]
    store: ArtifactStore
    # Loaded embedding sets and FAISS indexes for queries, per workspace (image ids are catalog-specific).
    query_cache: dict[tuple[str, int, str], Any] = field(default_factory=dict)
    # Loaded networks by (backbone id, fingerprint), per workspace: loading and hashing weights costs
    # seconds. Never relied on for correctness: every process loads a backbone from its catalog row.
    networks: dict[tuple[int, str], Any] = field(default_factory=dict)

    @classmethod
    def open(cls, settings: Settings) -> "Context":
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        return cls(settings=settings, sessions=open_catalog(settings.catalog_url), store=ArtifactStore(settings.artifacts_dir))

    def get_row(self, model: type[T], row_id: int, missing: str) -> T:
        """The catalog row ``model`` with primary key ``row_id``; :class:`NotFound` with ``missing`` (what to do) if none."""
        with self.session() as s:
            row = s.get(model, int(row_id))
        if row is None:
            raise NotFound(missing)
        return row

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session committed on success and rolled back on any error."""
        with self.sessions() as s:
            try:
                yield s
                s.commit()
            except BaseException:
                s.rollback()
                raise
