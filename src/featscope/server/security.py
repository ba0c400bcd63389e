"""Token auth: a bearer header or a login cookie, compared in constant time; loopback-only without a token."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress

from fastapi import HTTPException, Request, status

COOKIE_NAME = "featscope_session"
TOKEN_NEEDED = ("this server needs its API token: send `Authorization: Bearer TOKEN` or log in with "
                "POST /api/v1/login")
_LOOPBACK_NAMES = {"localhost", "ip6-localhost", "ip6-loopback"}


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and localhost; anything else (0.0.0.0, a LAN address) is exposed."""
    host = host.strip().strip("[]")
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def require_token_for(host: str, token: str | None) -> None:
    """Refuse to serve on a non-loopback address without a token (raises ``ValueError`` with the fix)."""
    if not is_loopback(host) and not token:
        raise ValueError(
            f"refusing to listen on {host}: binding anywhere but loopback needs an API token. "
            f"Set FEATSCOPE_TOKEN to a long random secret (e.g. `python -c 'import secrets; "
            f"print(secrets.token_urlsafe(32))'`), or serve on 127.0.0.1"
        )


def session_value(token: str) -> str:
    """The login cookie's value: derived from the token, so the token itself never sits in a cookie."""
    return hmac.new(token.encode(), b"featscope-login-v1", hashlib.sha256).hexdigest()


def token_matches(given: str, token: str) -> bool:
    return hmac.compare_digest(given.encode(), token.encode())


def authorized(request: Request, token: str | None) -> bool:
    """Whether ``request`` carries the token (bearer header) or a valid login cookie; always True without a token."""
    if not token:
        return True
    header = request.headers.get("authorization", "")
    scheme, _, given = header.partition(" ")
    if scheme.lower() == "bearer" and given and token_matches(given.strip(), token):
        return True
    cookie = request.cookies.get(COOKIE_NAME)
    return bool(cookie) and hmac.compare_digest(cookie.encode(), session_value(token).encode())


def check_request(request: Request, token: str | None) -> None:
    if not authorized(request, token):
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            detail=TOKEN_NEEDED,
            headers={"WWW-Authenticate": "Bearer"},
        )
