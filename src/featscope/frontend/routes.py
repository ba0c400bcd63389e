"""The HTTP side of the dashboard on the API's app: deep links, ``/api/...`` typos, the login page, the gate.

Dash serves its index at ``/`` and adds a catch-all ``GET /{path}`` at startup so deep links such as
``/image/17`` load the app. That catch-all would also answer a mistyped ``/api/v1/...`` URL with the HTML
page, and it is added to the *last* Dash app created in the process. So the dashboard installs its own
routes when it is attached, ahead of Dash's: ``/api/...`` paths no route owns answer 404 JSON (405 when
another method owns the path), every other ``GET`` path answers the page.

With ``FEATSCOPE_TOKEN`` set the dashboard needs the API's login cookie: :class:`DashboardGate` sends a
browser without it to ``/login`` (a small HTML page that posts the token to ``POST /api/v1/login``) and
refuses Dash's own endpoints with 401. The API paths keep their own gate (``server.gate.RequestGate``).
"""

from __future__ import annotations

import inspect
import json
from urllib.parse import quote, urlsplit

from dash import Dash
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Match
from starlette.types import ASGIApp, Receive, Scope, Send

from featscope.server.security import authorized

API_ROOT = "/api"
LOGIN_PATH = "/login"
# Served without the token: the login page itself and static files that hold no data.
OPEN_PREFIXES = ("/assets/", "/_dash-component-suites/", "/_favicon.ico", LOGIN_PATH)
_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


def install(api: FastAPI, dash_app: Dash) -> None:
    """Add the ``/api`` fallback, the login page and the deep-link route to ``api`` (after Dash's routes)."""
    api.add_api_route(API_ROOT + "/{rest:path}", _api_fallback(api), methods=_METHODS, include_in_schema=False)
    api.add_api_route(LOGIN_PATH, _login_page(api), methods=["GET"], include_in_schema=False)
    api.add_api_route("/{path:path}", _deep_link(dash_app), methods=["GET"], include_in_schema=False)
    token = api.state.settings.token
    if token:  # the API's paths and its docs keep their own guards (401 JSON, not the login page)
        own = tuple(p for p in (api.docs_url, api.openapi_url, api.redoc_url) if p)
        api.add_middleware(DashboardGate, token=token, passthrough=(API_ROOT + "/", *own))


def _api_fallback(api: FastAPI):
    async def api_not_found(request: Request) -> JSONResponse:
        allowed = allowed_methods(api, request.scope)
        if allowed:
            return JSONResponse({"detail": f"{request.method} is not allowed on {request.url.path}; use "
                                           f"{', '.join(allowed)} (see /docs)"}, status_code=405,
                                headers={"Allow": ", ".join(allowed)})
        return JSONResponse({"detail": f"no API route {request.url.path}; the routes are listed at /docs"},
                            status_code=404)

    return api_not_found


def allowed_methods(api: FastAPI, scope: Scope) -> list[str]:
    """The methods an API route (not a fallback or the page route) answers on this path."""
    routes = [r for r in api.router.routes if getattr(r, "path", None) not in (API_ROOT + "/{rest:path}", "/{path:path}",
                                                                                "{path:path}")]
    found = []
    for method in ("GET", "POST", "PUT", "PATCH", "DELETE"):
        probe = {**scope, "method": method}
        if any(r.matches(probe)[0] == Match.FULL for r in routes if hasattr(r, "matches")):
            found.append(method)
    return found


def _deep_link(dash_app: Dash):
    async def page(request: Request) -> Response:
        # Dash's index() reads the current request from its FastAPI backend's context, as its own catch-all
        # does. Unlike that catch-all it first runs Dash's before-request hooks (asset scan, pages router),
        # which Dash runs only for "/" and "/_dash-*": without them a deep link that is a fresh server's first
        # request would get a page with no assets and no validation layout (Dash 4.4).
        from dash.backends._fastapi import reset_current_request, set_current_request

        ctx = set_current_request(request)
        try:
            for hook in getattr(dash_app.backend, "_before_request_funcs", ()):
                result = hook()
                if inspect.isawaitable(result):
                    await result
            return HTMLResponse(dash_app.index())
        finally:
            reset_current_request(ctx)

    return page


def safe_next(target: str | None) -> str:
    """A local path to return to after login (never another site: ``//host`` and ``scheme:`` are dropped)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    parts = urlsplit(target)
    if parts.scheme or parts.netloc:
        return "/"
    return target


def _login_page(api: FastAPI):
    async def login(request: Request) -> Response:
        nxt = safe_next(request.query_params.get("next"))
        if not api.state.settings.token or authorized(request, api.state.settings.token):
            return RedirectResponse(nxt, status_code=303)
        return HTMLResponse(LOGIN_HTML.replace("{{NEXT}}", json.dumps(nxt).replace("<", "\\u003c")))

    return login


class DashboardGate:
    """ASGI middleware: without the token or login cookie, pages redirect to ``/login`` and Dash's
    endpoints (layout, callbacks, websocket) answer 401; ``passthrough`` paths (``/api``, the OpenAPI docs)
    are left to the API's own guards."""

    def __init__(self, app: ASGIApp, *, token: str, passthrough: tuple[str, ...] = (API_ROOT + "/",)) -> None:
        self.app, self.token, self.passthrough = app, token, passthrough

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        if (path.startswith(self.passthrough) or path.startswith(OPEN_PREFIXES)
                or authorized(Request(scope), self.token)):
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 4001, "reason": "log in first"})
            return
        if scope.get("method") == "GET" and not path.startswith("/_"):
            query = scope.get("query_string", b"").decode("latin-1")
            target = path + (f"?{query}" if query else "")
            response: Response = RedirectResponse(f"{LOGIN_PATH}?next={quote(target, safe='')}", status_code=303)
        else:
            response = JSONResponse({"detail": "this dashboard needs the server's token: log in at /login"},
                                    status_code=401)
        await response(scope, receive, send)


LOGIN_HTML = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>featscope · log in</title><link rel="stylesheet" href="/assets/featscope.css"></head>
<body class="fs-login-body">
<main class="fs-login">
  <div class="fs-brand fs-brand-large"><span class="fs-logo">fs</span> featscope</div>
  <p class="fs-muted">This server needs its API token (the value of <code>FEATSCOPE_TOKEN</code> it was
  started with). The browser keeps a login cookie for 7 days.</p>
  <form id="fs-login-form" class="fs-form">
    <label for="fs-login-token">API token</label>
    <input id="fs-login-token" name="token" type="password" autocomplete="current-password" required autofocus>
    <button id="fs-login-submit" class="fs-button fs-button-primary" type="submit">Log in</button>
    <p id="fs-login-error" class="fs-error" role="alert" hidden></p>
  </form>
</main>
<script>
const next = {{NEXT}};
document.getElementById("fs-login-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const error = document.getElementById("fs-login-error");
  error.hidden = true;
  const token = document.getElementById("fs-login-token").value;
  const r = await fetch("/api/v1/login", {method: "POST", headers: {"content-type": "application/json"},
                                          body: JSON.stringify({token}), credentials: "same-origin"});
  if (r.ok) { window.location.replace(next); return; }
  let detail = "login failed (" + r.status + ")";
  try { detail = (await r.json()).detail || detail; } catch (e) {}
  error.textContent = detail;
  error.hidden = false;
});
</script>
</body></html>
"""
