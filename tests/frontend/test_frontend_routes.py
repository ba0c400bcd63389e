"""The dashboard on the API's app: every page path and deep link serves the app, ``/api/...`` typos stay JSON
404/405, Dash's layout and callbacks are wired, and with a token everything but the login page needs it."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from featscope.frontend.pages import PAGES
from featscope.frontend.routes import safe_next
from featscope.server import create_app
from featscope.server.security import COOKIE_NAME, session_value
from featscope.server.settings import ServerSettings

TOKEN = "dashboard-token-for-tests"
PATHS = ["/", "/pairs", "/comembership", "/projections", "/image/1", "/upload", "/probes", "/similarity", "/jobs",
         "/detections"]


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    with TestClient(create_app(ServerSettings(data_dir=tmp_path_factory.mktemp("d")))) as c:
        yield c


@pytest.mark.parametrize("path", PATHS + ["/pairs?a=1&b=2", "/image/12345", "/jobs?job=3", "/no/such/page"])
def test_every_page_path_and_deep_link_serves_the_app(client, path):
    r = client.get(path)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert 'id="react-entry-point"' in r.text and "/assets/featscope.css" in r.text


def test_every_page_module_is_registered_with_its_path(client):
    import dash

    paths = {p["path"] for p in dash.page_registry.values()}
    assert {"/", "/pairs", "/comembership", "/projections", "/upload", "/probes", "/similarity", "/jobs", "/study",
            "/runs", "/detections"} <= paths
    templates = {p.get("path_template") for p in dash.page_registry.values()}
    assert "/image/<image_id>" in templates
    assert len(PAGES) == 12


@pytest.mark.parametrize("path", ["/api/v1/nope", "/api/v1/datasets/x/y/z", "/api/v2/datasets", "/api/"])
def test_api_typos_are_json_404_not_the_page(client, path):
    r = client.get(path)
    assert r.status_code == 404 and r.headers["content-type"] == "application/json"
    assert "/docs" in r.json()["detail"]
    assert client.post(path, json={}).status_code == 404


def test_a_wrong_method_on_an_api_path_is_405_with_allow(client):
    r = client.post("/api/v1/analyses/nope", json={})
    assert r.status_code == 405 and r.headers["allow"] == "GET"
    r = client.get("/api/v1/jobs/1/cancel")
    assert r.status_code == 405 and "POST" in r.json()["detail"]


def test_the_api_still_answers(client):
    assert client.get("/api/v1/datasets").json()["total"] == 0
    assert client.get("/openapi.json").status_code == 200
    paths = client.get("/openapi.json").json()["paths"]
    assert not [p for p in paths if not p.startswith("/api/v1/")]  # the dashboard's routes stay out of the schema


def test_dash_layout_and_callbacks_are_served(client):
    index = client.get("/").text  # plotly.js loads with the page, deferred, from the app's own prefix
    assert '<script src="/_dash-component-suites/plotly/package_data/plotly.min.js" defer="defer">' in index
    assert client.get("/_dash-component-suites/plotly/package_data/plotly.min.js").status_code == 200
    layout = client.get("/_dash-layout")
    assert layout.status_code == 200 and "fs-comparison" in layout.text and "_pages_content" in layout.text
    deps = client.get("/_dash-dependencies").json()
    outputs = " ".join(d["output"] for d in deps)
    for needed in ("ov-stats.children", "pairs-closest-a.children", "cm-fig.figure", "proj-a.figure",
                   "img-hero.children", "up-info.children", "pr-table.children", "sim-stats.children",
                   "jobs-table.children", "fs-comparison.data"):
        assert needed in outputs, needed
    clientside = [d for d in deps if d.get("clientside_function")]
    assert {d["clientside_function"]["function_name"] for d in clientside} >= {
        "linkMaps", "hoverThumb", "uploadFile", "downloadImage", "downloadData", "navActive"}


def test_a_callback_runs_through_the_app(client):
    body = {"output": "ov-stats.children", "outputs": {"id": "ov-stats", "property": "children"},
            "inputs": [{"id": "ov-poll", "property": "n_intervals", "value": None},
                       {"id": "ov-refresh", "property": "data", "value": 0},
                       {"id": "ov-plan", "property": "data", "value": None}],
            "changedPropIds": [], "state": []}
    deps = client.get("/_dash-dependencies").json()
    tick = next(d for d in deps if d["output"].startswith("..ov-stats.children"))
    body["output"] = tick["output"]
    body["outputs"] = [{"id": o.split(".")[0], "property": o.split(".")[1]} for o in tick["output"].strip(".").split("...")]
    r = client.post("/_dash-update-component", json=body)
    assert r.status_code == 200, r.text
    assert "Data sets" in r.text and "No data sets yet" in r.text


def test_two_apps_in_one_process_each_get_their_callbacks(tmp_path):
    first = create_app(ServerSettings(data_dir=tmp_path / "one"))
    second = create_app(ServerSettings(data_dir=tmp_path / "two"))
    for app in (first, second):
        with TestClient(app) as c:
            assert any(d["output"].startswith("..ov-stats") for d in c.get("/_dash-dependencies").json())


def test_an_app_without_the_dashboard_has_no_pages(tmp_path):
    with TestClient(create_app(ServerSettings(data_dir=tmp_path / "d"), dashboard=False)) as c:
        assert c.get("/").status_code == 404
        assert c.get("/api/v1/datasets").status_code == 200


@pytest.fixture
def locked(tmp_path):
    with TestClient(create_app(ServerSettings(data_dir=tmp_path / "d", token=TOKEN)), follow_redirects=False) as c:
        yield c


def test_with_a_token_pages_redirect_to_the_login_page(locked):
    r = locked.get("/pairs?a=1&b=2")
    assert r.status_code == 303 and r.headers["location"] == "/login?next=%2Fpairs%3Fa%3D1%26b%3D2"
    page = locked.get("/login?next=/pairs")
    assert page.status_code == 200 and 'id="fs-login-form"' in page.text and '"/pairs"' in page.text
    assert locked.get("/assets/featscope.css").status_code == 200  # the login page's style is public


def test_with_a_token_dash_endpoints_answer_401(locked):
    for path in ("/_dash-layout", "/_dash-dependencies"):
        r = locked.get(path)
        assert r.status_code == 401 and "log in" in r.json()["detail"]
    assert locked.post("/_dash-update-component", json={}).status_code == 401
    assert locked.get("/api/v1/datasets").status_code == 401  # the API's own gate


def test_the_login_cookie_opens_the_dashboard(locked):
    assert locked.post("/api/v1/login", json={"token": TOKEN}).status_code == 200
    assert locked.cookies.get(COOKIE_NAME) == session_value(TOKEN)
    assert locked.get("/pairs").status_code == 200
    assert locked.get("/_dash-layout").status_code == 200
    r = locked.get("/login?next=/jobs")
    assert r.status_code == 303 and r.headers["location"] == "/jobs"  # already logged in
    assert "Log out" in locked.get("/_dash-layout").text


def test_a_forged_cookie_is_refused(locked):
    locked.cookies.set(COOKIE_NAME, "forged")
    assert locked.get("/").status_code == 303
    assert locked.get("/_dash-layout").status_code == 401


@pytest.mark.parametrize("raw,expected", [("/pairs?a=1", "/pairs?a=1"), (None, "/"), ("", "/"),
                                          ("//evil.example/x", "/"), ("https://evil.example", "/"),
                                          ("/\\evil", "/"), ("pairs", "/")])
def test_login_only_returns_to_local_paths(raw, expected):
    assert safe_next(raw) == expected


def test_a_deep_link_as_the_first_request_gets_the_assets_and_the_validation_layout(tmp_path):
    with TestClient(create_app(ServerSettings(data_dir=tmp_path / "d"))) as c:
        page = c.get("/pairs?a=1&b=2").text  # nothing requested before it
        assert "/assets/featscope.js" in page and '"validation_layout"' in page


def test_with_a_token_the_docs_keep_their_own_401(locked):
    for path in ("/openapi.json", "/docs"):
        r = locked.get(path)
        assert r.status_code == 401 and "API token" in r.json()["detail"]
