"""Checks made before a request's body is read: the API token, and the body's size.

FastAPI parses a form body (an upload is spooled to a temporary file) before any dependency or route code
runs, so the token check of ``require_auth`` and the upload route's size check come only after the whole
body has arrived. This ASGI middleware answers from the headers instead (401 without the token, 413 for a
declared length over the limit) and stops reading a body that grows past the limit, so an unauthenticated
or oversized request costs neither disk nor time. Written here because Starlette has no body limit and
uvicorn's options do not cover body size; it is a few lines around the ASGI ``receive`` callable.
"""

from __future__ import annotations

import json

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from featscope.server.security import TOKEN_NEEDED, authorized


class BodyTooLarge(HTTPException):
    """Raised from ``receive`` when the body passes the limit (an HTTPException, so FastAPI's body parsing
    passes it on instead of turning it into a generic 400)."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"the request body is larger than {limit} bytes (FEATSCOPE_MAX_UPLOAD_BYTES plus "
                              f"64 KiB for the form); downscale or recompress the image")


class RequestGate:
    """ASGI middleware: token before body for paths under ``prefix`` (but ``open_paths``), body size cap."""

    def __init__(self, app: ASGIApp, *, max_body: int, token: str | None, prefix: str,
                 open_paths: frozenset[str] = frozenset()) -> None:
        self.app, self.max_body, self.token, self.prefix, self.open_paths = app, max_body, token, prefix, open_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        if (self.token and path.startswith(self.prefix) and path not in self.open_paths
                and not authorized(Request(scope), self.token)):
            await _answer(send, 401, TOKEN_NEEDED, {"www-authenticate": "Bearer"})
            return
        declared = Headers(scope=scope).get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_body:
            await _answer(send, 413, BodyTooLarge(self.max_body).detail, {"connection": "close"})
            return
        received, started = 0, False

        async def limited() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body:
                    raise BodyTooLarge(self.max_body)
            return message

        async def tracked(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited, tracked)
        except BodyTooLarge as e:  # read outside FastAPI's handlers (e.g. by another middleware)
            if started:
                raise
            await _answer(send, 413, e.detail, {"connection": "close"})


async def _answer(send: Send, status: int, detail: str, headers: dict[str, str]) -> None:
    body = json.dumps({"detail": detail}).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.encode(), v.encode()) for k, v in headers.items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})
