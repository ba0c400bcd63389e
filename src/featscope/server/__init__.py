"""The REST API server: :func:`create_app` builds the FastAPI app; ``featscope serve`` runs it."""

from featscope.server.app import create_app

__all__ = ["create_app"]
