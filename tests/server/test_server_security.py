"""Auth: loopback-only without a token, bearer header or login cookie with one; serve refuses exposed binds."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from featscope.server import create_app
from featscope.server.cli import serve_command
from featscope.server.security import COOKIE_NAME, is_loopback, require_token_for
from featscope.server.settings import ServerSettings, server_settings

TOKEN = "s3cret-token-for-tests"


@pytest.fixture
def locked(tmp_path):
    settings = ServerSettings(data_dir=tmp_path / "data", token=TOKEN)
    with TestClient(create_app(settings)) as c:
        yield c


@pytest.mark.parametrize("host,expected", [("127.0.0.1", True), ("127.3.2.1", True), ("::1", True), ("[::1]", True),
                                           ("localhost", True), ("0.0.0.0", False), ("192.168.1.4", False),
                                           ("::", False), ("example.org", False)])
def test_is_loopback(host, expected):
    assert is_loopback(host) is expected


def test_exposed_bind_needs_a_token():
    require_token_for("127.0.0.1", None)
    require_token_for("0.0.0.0", TOKEN)
    with pytest.raises(ValueError, match="FEATSCOPE_TOKEN"):
        require_token_for("0.0.0.0", None)


def test_serve_refuses_to_start_exposed_without_token(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        serve_command(host="0.0.0.0", port=1, embedded_worker=False,
                      settings=ServerSettings(data_dir=tmp_path / "d", token=None))
    assert e.value.code == 2
    assert "FEATSCOPE_TOKEN" in capsys.readouterr().err


def test_requests_without_token_are_refused(locked):
    r = locked.get("/api/v1/datasets")
    assert r.status_code == 401 and "Authorization: Bearer" in r.json()["detail"]
    assert r.headers["www-authenticate"] == "Bearer"
    assert locked.get("/api/v1/datasets", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert locked.get("/api/v1/datasets", headers={"Authorization": f"Basic {TOKEN}"}).status_code == 401
    assert locked.post("/api/v1/uploads", files={"file": ("a.png", b"x")}).status_code == 401
    locked.cookies.set(COOKIE_NAME, "forged")
    assert locked.get("/api/v1/datasets").status_code == 401
    locked.cookies.clear()


def test_bearer_token_and_login_cookie(locked):
    assert locked.get("/api/v1/datasets", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
    assert locked.post("/api/v1/login", json={"token": "wrong"}).status_code == 401
    r = locked.post("/api/v1/login", json={"token": TOKEN})
    assert r.status_code == 200 and r.json()["ok"]
    cookie = r.headers["set-cookie"]
    assert "HttpOnly" in cookie and "samesite=strict" in cookie.lower() and TOKEN not in cookie
    assert locked.get("/api/v1/datasets").status_code == 200  # the client keeps the cookie
    locked.post("/api/v1/logout")
    locked.cookies.clear()
    assert locked.get("/api/v1/datasets").status_code == 401


def test_open_server_needs_no_login(tmp_path):
    with TestClient(create_app(ServerSettings(data_dir=tmp_path / "d"))) as c:
        assert c.get("/api/v1/jobs").status_code == 200
        assert c.post("/api/v1/login", json={"token": "x"}).json()["ok"]


def test_adding_paths_is_off_without_allowed_roots(tmp_path, image_folder):
    with TestClient(create_app(ServerSettings(data_dir=tmp_path / "d"))) as c:
        r = c.post("/api/v1/datasets", json={"path": str(image_folder)})
    assert r.status_code == 403 and "FEATSCOPE_ALLOWED_ROOTS" in r.json()["detail"]


def test_server_settings_from_env(monkeypatch, tmp_path, settings):
    monkeypatch.setenv("FEATSCOPE_TOKEN", "abc")
    monkeypatch.setenv("FEATSCOPE_ALLOWED_ROOTS", f'["{tmp_path}"]')
    monkeypatch.setenv("FEATSCOPE_MAX_UPLOAD_BYTES", "1000")
    st = server_settings(settings)
    assert st.token == "abc" and st.allowed_roots == [tmp_path.resolve()] and st.max_upload_bytes == 1000
    assert st.data_dir == settings.data_dir


def test_docs_and_schema_need_the_token_when_one_is_set(locked):
    assert locked.get("/openapi.json").status_code == 401
    assert locked.get("/docs").status_code == 401
    r = locked.get("/openapi.json", headers={"Authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 200 and "/api/v1/jobs" in r.json()["paths"]
