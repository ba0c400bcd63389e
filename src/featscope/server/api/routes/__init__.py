"""One router per resource; ``ROUTERS`` are the ones behind the token (``auth`` is not)."""

from featscope.server.api.routes import analyses, auth, backbones, datasets, embeddings, images, jobs, maps, uploads
from featscope.server.api.routes import runs

ROUTERS = [datasets.router, images.router, backbones.router, embeddings.router, analyses.router, jobs.router,
           uploads.router, maps.router, runs.router]

__all__ = ["ROUTERS", "auth"]
