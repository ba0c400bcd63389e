"""Catalog: SQLAlchemy models and the session factory."""

from featscope.catalog.models import Analysis, Backbone, Base, Dataset, EmbeddingSet, Image, Job, Run
from featscope.catalog.session import make_engine, open_catalog

__all__ = ["Analysis", "Backbone", "Base", "Dataset", "EmbeddingSet", "Image", "Job", "Run", "make_engine", "open_catalog"]
