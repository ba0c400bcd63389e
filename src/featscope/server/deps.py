"""Dependencies of the routes, typed once: the workspace, the settings, the job queue, auth, paging."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import huey
from fastapi import Depends, HTTPException, Query, Request

from featscope.server.api.schemas import MAX_LIMIT
from featscope.server.security import check_request
from featscope.server.settings import ServerSettings
from featscope.workspace import Workspace


def get_workspace(request: Request) -> Workspace:
    return request.app.state.workspace


def get_settings(request: Request) -> ServerSettings:
    return request.app.state.settings


def get_queue(request: Request) -> huey.Huey:
    """The job queue, opened on first use (a ``SqliteHuey`` file or Redis; nothing runs in this process)."""
    state = request.app.state
    if state.queue is None:
        from featscope.worker.queue import make_queue

        state.queue = make_queue(state.settings)
    return state.queue


def require_auth(request: Request) -> None:
    check_request(request, request.app.state.settings.token)


WorkspaceDep = Annotated[Workspace, Depends(get_workspace)]
SettingsDep = Annotated[ServerSettings, Depends(get_settings)]
QueueDep = Annotated[huey.Huey, Depends(get_queue)]
Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT, description=f"Page size (at most {MAX_LIMIT}).")]
Offset = Annotated[int, Query(ge=0, le=2**53, description="Items to skip.")]


def allowed_path(settings: ServerSettings, raw: str, what: str = "path") -> Path:
    """``raw`` resolved (symlinks followed) if it lies under an allowed root; 403 otherwise, 404 if missing."""
    if not settings.allowed_roots:
        raise HTTPException(403, f"adding {what}s through the API is off: set FEATSCOPE_ALLOWED_ROOTS to the folders "
                                 f"it may read from (a JSON list), or use the `featscope` CLI on the server")
    if ".." in Path(raw).parts:
        raise HTTPException(400, f"the {what} may not contain '..'; give it from an allowed root down")
    real = Path(os.path.realpath(Path(raw).expanduser()))
    if not any(real == root or real.is_relative_to(root) for root in settings.allowed_roots):
        roots = ", ".join(str(r) for r in settings.allowed_roots)
        raise HTTPException(403, f"{what} {raw!r} is not under an allowed root ({roots}); move it there or add "
                                 f"its folder to FEATSCOPE_ALLOWED_ROOTS")
    if not real.exists():
        raise HTTPException(404, f"{what} {raw!r} does not exist on the server")
    return real
