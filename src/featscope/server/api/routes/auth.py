"""Log in with the token (sets an HttpOnly cookie for browsers and the dashboard) and log out."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Response

from featscope.server.api.schemas import LoginIn, LoginOut
from featscope.server.deps import SettingsDep
from featscope.server.security import COOKIE_NAME, session_value, token_matches

router = APIRouter(prefix="", tags=["auth"])


@router.post("/login", response_model=LoginOut)
def login(body: LoginIn, response: Response, settings: SettingsDep) -> LoginOut:
    """Check the token and set the login cookie."""
    if not settings.token:
        return LoginOut(ok=True, message="this server has no token; no login needed")
    if not token_matches(body.token, settings.token):
        raise HTTPException(401, "wrong token; use the value of FEATSCOPE_TOKEN the server was started with",
                            headers={"WWW-Authenticate": "Bearer"})
    response.set_cookie(COOKIE_NAME, session_value(settings.token), httponly=True, samesite="strict",
                        secure=False, max_age=7 * 24 * 3600, path="/")
    return LoginOut(ok=True, message="logged in")


@router.post("/logout", response_model=LoginOut)
def logout(response: Response) -> LoginOut:
    """Clear the login cookie."""
    response.delete_cookie(COOKIE_NAME, path="/")
    return LoginOut(ok=True, message="logged out")
