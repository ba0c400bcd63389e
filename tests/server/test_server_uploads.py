"""Uploads: each kind of bad file gets its own 4xx and reason; good ones are stored under a generated name."""

from __future__ import annotations

import io

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from featscope.server import create_app
from featscope.server.settings import ServerSettings
from featscope.worker.map_kinds import upload_path


@pytest.fixture
def app_settings(tmp_path):
    return ServerSettings(data_dir=tmp_path / "data", max_upload_bytes=50_000, max_upload_pixels=200 * 200)


@pytest.fixture
def client(app_settings):
    with TestClient(create_app(app_settings)) as c:
        yield c


def _encode(size=(64, 48), fmt="PNG", mode="RGB") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, 128).save(buf, format=fmt)
    return buf.getvalue()


def _post(client, data: bytes, name="../../evil name.png", ctype="image/png"):
    return client.post("/api/v1/uploads", files={"file": (name, data, ctype)})


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "BMP", "GIF", "TIFF", "WEBP"])
def test_good_upload_is_stored_under_a_uuid(client, app_settings, fmt):
    r = _post(client, _encode(fmt=fmt))
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["format"] == fmt and (body["width"], body["height"]) == (64, 48)
    path = upload_path(app_settings.uploads_dir, body["id"])
    assert path.parent == app_settings.uploads_dir and path.stem == body["id"]
    assert sorted(p.name for p in app_settings.uploads_dir.iterdir()) == [path.name]  # no temp file, no client name


def test_zero_byte_file(client):
    r = _post(client, b"")
    assert r.status_code == 400 and "empty" in r.json()["detail"]


def test_not_an_image(client):
    r = _post(client, b"%PDF-1.4 hello, not pixels" * 10, ctype="application/pdf")
    assert r.status_code == 415 and "not an image" in r.json()["detail"]


def test_truncated_image(client):
    noisy = io.BytesIO()
    import numpy as np

    Image.fromarray(np.random.default_rng(0).integers(0, 255, (120, 120, 3), dtype=np.uint8)).save(noisy, "PNG")
    data = noisy.getvalue()
    r = _post(client, data[: len(data) // 2])
    assert r.status_code == 400 and "truncated" in r.json()["detail"]


def test_too_many_bytes(client):
    import numpy as np

    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (190, 190, 3), dtype=np.uint8)).save(buf, "BMP")
    r = _post(client, buf.getvalue(), ctype="image/bmp")
    assert r.status_code == 413 and "byte upload limit" in r.json()["detail"]


def test_too_many_pixels_is_refused_before_decoding(client):
    r = _post(client, _encode((1000, 1000), "PNG", "1"))  # tiny file, a million pixels
    assert r.status_code == 413 and "pixel limit" in r.json()["detail"]


def test_decompression_bomb_header(client):
    png = _encode((8, 8))
    # Rewrite the IHDR to claim 100000 x 100000 pixels (the CRC no longer matches: either refusal is a 4xx).
    bomb = png[:16] + (100000).to_bytes(4, "big") + (100000).to_bytes(4, "big") + png[24:]
    r = _post(client, bomb)
    assert 400 <= r.status_code < 500 and r.status_code != 422


def test_readable_but_unaccepted_format(client):
    r = _post(client, _encode(fmt="PCX"), ctype="image/x-pcx")
    assert r.status_code == 415 and "not accepted" in r.json()["detail"]


def test_missing_file_field(client):
    assert client.post("/api/v1/uploads", data={"x": "1"}).status_code == 422


def test_upload_path_rejects_bad_ids(tmp_path):
    with pytest.raises(ValueError):
        upload_path(tmp_path, "../etc/passwd")
    with pytest.raises(FileNotFoundError):
        upload_path(tmp_path, "0" * 32)


# --- the gate in front of the app: nothing is read or spooled before the token and the size are checked ---

def _spy_body(total: int, chunk: int = 16 * 1024):
    """A streamed multipart body of about ``total`` bytes (sent chunked, no Content-Length) that records how
    much of it the server asked for."""
    read = {"bytes": 0}

    def gen():
        yield b'--xx\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\nContent-Type: image/png\r\n\r\n'
        while read["bytes"] < total:
            read["bytes"] += chunk
            yield b"\0" * chunk
        yield b"\r\n--xx--\r\n"

    return gen(), read


def _no_spool(monkeypatch):
    from featscope.server.api.routes import uploads

    def refuse(*args, **kwargs):
        raise AssertionError("the upload route ran")

    monkeypatch.setattr(uploads, "save_upload", refuse)


def test_declared_oversize_body_is_refused_before_reading(client, app_settings, monkeypatch):
    _no_spool(monkeypatch)
    body, read = _spy_body(200_000)
    r = client.post("/api/v1/uploads", content=body, headers={
        "content-type": "multipart/form-data; boundary=xx", "content-length": str(app_settings.max_upload_bytes + 70_000)})
    assert r.status_code == 413 and "FEATSCOPE_MAX_UPLOAD_BYTES" in r.json()["detail"]
    assert read["bytes"] == 0


def test_streamed_oversize_body_is_refused(client, app_settings, monkeypatch):
    """Chunked, no Content-Length: FastAPI's form parsing meets the limit and answers 413, nothing is stored."""
    _no_spool(monkeypatch)
    body, _ = _spy_body(10 * (app_settings.max_upload_bytes + 64 * 1024))
    r = client.post("/api/v1/uploads", content=body, headers={"content-type": "multipart/form-data; boundary=xx"})
    assert r.status_code == 413 and "larger than" in r.json()["detail"]
    assert not app_settings.uploads_dir.exists() or not any(app_settings.uploads_dir.iterdir())


def test_gate_stops_reading_an_endless_body_at_the_limit():
    """At the ASGI level (the test client reads request bodies whole): the gate pulls one chunk past the
    limit and answers 413, however long the client would go on sending."""
    import asyncio

    from starlette.requests import Request

    from featscope.server.gate import RequestGate

    chunk, pulled, sent = 16 * 1024, [], []

    async def receive():
        pulled.append(chunk)
        return {"type": "http.request", "body": b"\0" * chunk, "more_body": True}

    async def send(message):
        sent.append(message)

    async def app(scope, receive, send):  # reads the body as a form parser would
        async for _ in Request(scope, receive).stream():
            pass
        raise AssertionError("an endless body was read to its end")

    gate = RequestGate(app, max_body=100_000, token=None, prefix="/api")
    asyncio.run(gate({"type": "http", "method": "POST", "path": "/api/v1/uploads", "headers": []}, receive, send))
    assert sent[0]["status"] == 413 and len(pulled) == 100_000 // chunk + 1
    assert b"FEATSCOPE_MAX_UPLOAD_BYTES" in sent[1]["body"]


def test_upload_without_token_is_refused_before_its_body_is_read(tmp_path, monkeypatch):
    _no_spool(monkeypatch)
    settings = ServerSettings(data_dir=tmp_path / "data", token="t0ken-for-the-gate", max_upload_bytes=50_000)
    with TestClient(create_app(settings)) as c:
        body, read = _spy_body(40_000)
        r = c.post("/api/v1/uploads", content=body, headers={"content-type": "multipart/form-data; boundary=xx"})
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer" and read["bytes"] == 0
        monkeypatch.undo()
        ok = c.post("/api/v1/uploads", files={"file": ("a.png", _encode(), "image/png")},
                    headers={"Authorization": "Bearer t0ken-for-the-gate"})
        assert ok.status_code == 201, ok.text
