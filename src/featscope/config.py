"""One settings object for the whole program, read from ``FEATSCOPE_*`` environment variables.

Settings are read once at the edge (CLI, server, worker) and passed down as arguments; no layer
below reads the environment itself.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

Precision = Literal["fp32", "bf16", "fp16"]


class Settings(BaseSettings):
    """Where featscope keeps its state and how it runs networks."""

    model_config = SettingsConfigDict(env_prefix="FEATSCOPE_", env_file=None, extra="ignore")

    data_dir: Path = Field(
        default=Path("featscope-data"),
        description="Catalog, artifacts (embeddings, indexes) and the job queue live here.",
    )
    database_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL of the catalog; default: SQLite file <data_dir>/catalog.sqlite.",
    )
    device: str = Field(default="auto", description="'auto' (CUDA when present), 'cpu', 'cuda', 'cuda:N'.")
    precision: Precision = Field(default="fp32", description="Default extraction precision.")
    batch_size: int = Field(default=32, ge=1, description="Images per forward pass.")
    num_workers: int = Field(default=2, ge=0, description="DataLoader worker processes (0: decode in-process).")
    shard_size: int = Field(default=512, ge=1, description="Images per extraction shard (the unit of resume).")
    redis_url: str | None = Field(
        default=None,
        description="Redis URL of the job queue (several workers, several hosts); default: SQLite queue in the data dir.",
    )
    flat_index_max: int = Field(
        default=100_000, ge=1, description="Embedding sets up to this many vectors get an exact flat index; larger ones IVF."
    )
    index_memory_max: int = Field(
        default=2 << 30, ge=1 << 20,
        description="Bytes an IVF index's vectors may take; a larger set gets an IVF-PQ index (compressed codes, "
                    "re-ranked with exact cosines from its memory-mapped vectors).",
    )
    index_recall: float = Field(
        default=0.95, gt=0, le=1,
        description="Recall@10 against exact search that an IVF index's nprobe is tuned to reach (measured on a "
                    "sample of the set and stored with the index).",
    )
    extract_job_images: int = Field(
        default=8192, ge=1,
        description="An extraction job over more images than this is split into shard jobs of about this many "
                    "images (whole shards), which any worker may claim; the job assembles them when all are done.",
    )

    @field_validator("data_dir")
    @classmethod
    def _expand(cls, v: Path) -> Path:
        return Path(v).expanduser()

    @field_validator("device")
    @classmethod
    def _check_device(cls, v: str) -> str:
        if v in ("auto", "cpu", "cuda", "mps") or (v.startswith("cuda:") and v[5:].isdigit()):
            return v
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps', not {v!r}")

    @property
    def catalog_url(self) -> str:
        """The catalog's SQLAlchemy URL (SQLite in the data dir unless ``database_url`` is set)."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'catalog.sqlite').resolve()}"

    @property
    def artifacts_dir(self) -> Path:
        return self.data_dir / "artifacts"
