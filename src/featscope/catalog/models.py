"""The catalog: what featscope knows about (data sets, images, backbones, embedding sets, jobs, analyses).

Portable SQLAlchemy 2.x models: generic types only (JSON, not SQLite- or PostgreSQL-specific), so
the same schema runs on the embedded SQLite file and on a shared PostgreSQL server. Large arrays
never live here; rows point at artifacts in the content-addressed store by key.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from sqlalchemy import JSON, BigInteger, DateTime, Float, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON}


class Dataset(Base):
    """A registered image collection. A changed collection is a new row (new fingerprint)."""

    __tablename__ = "datasets"
    __table_args__ = (UniqueConstraint("name", "version"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), index=True)
    version: Mapped[int] = mapped_column(Integer, default=1)
    root: Mapped[str] = mapped_column(Text)
    source_path: Mapped[str] = mapped_column(Text)
    format: Mapped[str] = mapped_column(String(32))
    annotations: Mapped[str | None] = mapped_column(Text, nullable=True)
    fingerprint: Mapped[str] = mapped_column(String(64), index=True)
    n_images: Mapped[int] = mapped_column(Integer)
    n_skipped: Mapped[int] = mapped_column(Integer, default=0)
    classes: Mapped[list[Any]] = mapped_column(default=list)
    summary: Mapped[str] = mapped_column(Text, default="")
    skipped_reasons: Mapped[dict[str, Any]] = mapped_column(default=dict)
    warnings: Mapped[list[Any]] = mapped_column(default=list)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    images: Mapped[list[Image]] = relationship(back_populates="dataset", cascade="all, delete-orphan")


class Image(Base):
    """One file of a data set; unreadable files are kept with their error and never extracted."""

    __tablename__ = "images"
    __table_args__ = (UniqueConstraint("dataset_id", "relpath"), Index("ix_images_dataset_position", "dataset_id", "position"))

    id: Mapped[int] = mapped_column(primary_key=True)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id", ondelete="CASCADE"))
    position: Mapped[int | None] = mapped_column(Integer, nullable=True)  # row in embedding arrays; None if skipped
    relpath: Mapped[str] = mapped_column(Text)
    label: Mapped[str | None] = mapped_column(String(200), nullable=True)
    width: Mapped[int | None] = mapped_column(Integer, nullable=True)
    height: Mapped[int | None] = mapped_column(Integer, nullable=True)
    size_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    mtime_ns: Mapped[int] = mapped_column(BigInteger, default=0)
    boxes: Mapped[list[Any]] = mapped_column(default=list)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)

    dataset: Mapped[Dataset] = relationship(back_populates="images")


class Backbone(Base):
    """A registered network: how to load it again and the fingerprint that keys its caches."""

    __tablename__ = "backbones"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    spec: Mapped[str] = mapped_column(Text)
    source: Mapped[str] = mapped_column(String(32))
    arch: Mapped[str] = mapped_column(String(100))
    weights: Mapped[str | None] = mapped_column(Text, nullable=True)
    weights_format: Mapped[str | None] = mapped_column(String(32), nullable=True)
    random_init: Mapped[bool] = mapped_column(default=False)
    seed: Mapped[int] = mapped_column(Integer, default=0)
    fingerprint: Mapped[str] = mapped_column(String(64), index=True)
    preprocess: Mapped[dict[str, Any]] = mapped_column(default=dict)
    taps: Mapped[list[Any]] = mapped_column(default=list)
    has_classifier: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    # The arguments the loader was called with (spec, weights, weights_format, arch, random_init, seed),
    # so any process loads it again as it was registered; None: an older row (see workspace.backbones).
    load_args: Mapped[dict[str, Any] | None] = mapped_column(nullable=True, default=None)
    # What the loaded network offers, recorded so requests need not load it: {"input_size", "taps":
    # [{name, aliases, channels, height, width, dims}], "n_classes", "class_names"}; None until recorded.
    network: Mapped[dict[str, Any] | None] = mapped_column(nullable=True, default=None)


class EmbeddingSet(Base):
    """Pooled activations of one tap of one backbone over one data set, stored as an artifact."""

    __tablename__ = "embedding_sets"
    # One artifact may back several rows: the same folder or weights registered under two names
    # share their content-addressed artifact, but each registration gets its own row.
    __table_args__ = (UniqueConstraint("artifact_key", "backbone_id", "dataset_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    backbone_id: Mapped[int] = mapped_column(ForeignKey("backbones.id", ondelete="CASCADE"))
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id", ondelete="CASCADE"))
    tap: Mapped[str] = mapped_column(String(100))
    pooling: Mapped[str] = mapped_column(String(16))
    precision: Mapped[str] = mapped_column(String(8))
    dtype: Mapped[str] = mapped_column(String(16))
    n: Mapped[int] = mapped_column(Integer)
    dim: Mapped[int] = mapped_column(Integer)
    n_failed: Mapped[int] = mapped_column(Integer, default=0)
    artifact_key: Mapped[str] = mapped_column(String(64))
    index_kind: Mapped[str] = mapped_column(String(32), default="")
    seconds: Mapped[float] = mapped_column(Float, default=0.0)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    backbone: Mapped[Backbone] = relationship()
    dataset: Mapped[Dataset] = relationship()


class Job(Base):
    """A unit of slow work (extraction, analysis) with its state and progress, surviving restarts."""

    __tablename__ = "jobs"

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(32), index=True)
    key: Mapped[str] = mapped_column(String(64), index=True)  # content key of the request, for de-duplication
    params: Mapped[dict[str, Any]] = mapped_column(default=dict)
    state: Mapped[str] = mapped_column(String(16), default="queued", index=True)
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    message: Mapped[str] = mapped_column(Text, default="")
    log: Mapped[str] = mapped_column(Text, default="")
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    result: Mapped[dict[str, Any]] = mapped_column(default=dict)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # Liveness and ownership of a running job: the worker that claimed it (host:pid:token) refreshes
    # heartbeat_at; a stale heartbeat means the worker died and the job is re-queued or failed.
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    worker: Mapped[str | None] = mapped_column(String(200), nullable=True)
    task_id: Mapped[str | None] = mapped_column(String(64), nullable=True)  # queue message id (for revoking)
    cancel_requested: Mapped[bool] = mapped_column(default=False)


class Analysis(Base):
    """A cached analysis result (co-membership curve, probe, projection...) and its inputs."""

    __tablename__ = "analyses"
    __table_args__ = (UniqueConstraint("artifact_key"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(32), index=True)
    params: Mapped[dict[str, Any]] = mapped_column(default=dict)
    inputs: Mapped[list[Any]] = mapped_column(default=list)  # embedding set ids
    artifact_key: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
