"""The FastAPI application: ``create_app(settings)`` wires the workspace, the routers and the error handlers."""

from __future__ import annotations

import logging

import pydantic

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from featscope.cache.store import CorruptArtifact
from featscope.config import Settings
from featscope.datasets.images import ImageDecodeError
from featscope.server.api.routes import ROUTERS, auth
from featscope.server.api.schemas import ErrorOut
from featscope.server.deps import require_auth
from featscope.server.gate import RequestGate
from featscope.server.settings import server_settings
from featscope.server.uploads import UploadError
from featscope.workspace import NotFound, Workspace

log = logging.getLogger(__name__)
API_PREFIX = "/api/v1"
ERRORS = {"4XX": {"model": ErrorOut, "description": "What is wrong with the request and how to fix it."}}


def create_app(settings: Settings | None = None, *, dashboard: bool = True) -> FastAPI:
    """The API app over the data dir of ``settings`` (``FEATSCOPE_*`` environment when omitted), with the
    Dash dashboard attached at ``/`` unless ``dashboard`` is False."""
    st = server_settings(settings)
    app = FastAPI(title="featscope", version="1", description="Compare the feature spaces of CNN backbones.",
                  docs_url="/docs", openapi_url="/openapi.json")
    app.state.settings = st
    app.state.workspace = Workspace(st)
    app.state.queue = None
    app.include_router(auth.router, prefix=API_PREFIX, responses=ERRORS)
    for router in ROUTERS:
        app.include_router(router, prefix=API_PREFIX, dependencies=[Depends(require_auth)], responses=ERRORS)
    _error_handlers(app)
    _protect_docs(app, st.token)
    if dashboard:  # the one upward import: the dashboard is the API's face, on the same app and port
        from featscope.frontend.app import attach_dashboard

        attach_dashboard(app)
    # outermost: the token and the body's size are checked before any body is read
    app.add_middleware(RequestGate, max_body=st.max_upload_bytes + 64 * 1024, token=st.token, prefix=API_PREFIX,
                       open_paths=frozenset({f"{API_PREFIX}/login", f"{API_PREFIX}/logout"}))
    return app


def _protect_docs(app: FastAPI, token: str | None) -> None:
    """With a token, the OpenAPI schema and docs pages need it too (they list every route)."""
    if not token:
        return
    from featscope.server.security import authorized

    guarded = {app.docs_url, app.openapi_url, app.redoc_url, "/docs/oauth2-redirect"} - {None}

    @app.middleware("http")
    async def docs_need_token(request: Request, call_next):
        if request.url.path in guarded and not authorized(request, token):
            return _json(401, "this server needs its API token: send `Authorization: Bearer TOKEN` or log in with "
                              "POST /api/v1/login, then reload the docs", {"WWW-Authenticate": "Bearer"})
        return await call_next(request)


def _json(status: int, detail: str, headers: dict | None = None, **extra) -> JSONResponse:
    return JSONResponse({"detail": detail, **extra}, status_code=status, headers=headers)


def _error_handlers(app: FastAPI) -> None:
    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _json(exc.status_code, str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{"loc": [str(x) for x in e.get("loc", ())], "msg": str(e.get("msg", "")), "type": str(e.get("type", ""))}
                  for e in exc.errors()]
        first = "; ".join(f"{'.'.join(e['loc'][1:] or e['loc'])}: {e['msg']}" for e in errors[:3])
        return _json(422, f"invalid request ({first}); see /docs for the expected fields", errors=errors)

    @app.exception_handler(NotFound)
    async def not_found(request: Request, exc: NotFound) -> JSONResponse:
        return _json(404, str(exc.args[0]) if exc.args else "not found")

    @app.exception_handler(FileNotFoundError)
    async def no_file(request: Request, exc: FileNotFoundError) -> JSONResponse:
        return _json(404, str(exc))

    @app.exception_handler(UploadError)
    async def bad_upload(request: Request, exc: UploadError) -> JSONResponse:
        return _json(exc.status, exc.detail)

    @app.exception_handler(ImageDecodeError)
    async def undecodable(request: Request, exc: ImageDecodeError) -> JSONResponse:
        return _json(422, f"{exc.reason}: {exc.detail}")

    @app.exception_handler(CorruptArtifact)
    async def corrupt(request: Request, exc: CorruptArtifact) -> JSONResponse:
        return _json(409, str(exc.args[0]) if exc.args else "a cached artifact is corrupted; recompute it")

    @app.exception_handler(pydantic.ValidationError)
    async def bad_response(request: Request, exc: pydantic.ValidationError) -> JSONResponse:
        """A ValueError subclass, but raised by our own models: a server bug, not a bad request."""
        log.error("response model validation failed on %s: %s", request.url.path, exc)
        return _json(500, "the server built an invalid response; this is a bug, please report it")

    @app.exception_handler(ValueError)
    async def bad_value(request: Request, exc: ValueError) -> JSONResponse:
        return _json(400, str(exc))

    @app.exception_handler(PermissionError)
    async def forbidden(request: Request, exc: PermissionError) -> JSONResponse:
        return _json(403, f"the server may not read that file ({exc.strerror or exc}); check its permissions")
