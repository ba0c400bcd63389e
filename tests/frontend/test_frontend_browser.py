"""The dashboard in a real browser (Debian's headless Chromium through Playwright) against ``featscope serve``
with its embedded worker: generate the synthetic set, run a Compare and wait for its jobs, open every page,
lasso in projection A and see the images highlighted in B, hover for a thumbnail, upload an image and see
both heatmaps. Any browser console error fails the test. Each page's screenshot is saved (into
``$FEATSCOPE_SCREENSHOT_DIR`` too when set: that is how ``docs/screenshots/`` is made)."""

from __future__ import annotations

import io
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from PIL import Image

playwright = pytest.importorskip("playwright.sync_api")
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="needs Debian's chromium (make debian-deps)")

ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]
POINTS_JS = """(fig) => { const gd = document.querySelector('#' + fig + ' .js-plotly-plot');
  const xa = gd._fullLayout.xaxis, ya = gd._fullLayout.yaxis, r = gd.getBoundingClientRect(); const out = [];
  for (const fd of gd._fullData) for (let i = 0; i < fd.x.length; i++)
    out.push([r.left + xa._offset + xa.c2p(fd.x[i]), r.top + ya._offset + ya.c2p(fd.y[i])]);
  return out; }"""
DRAWN_JS = """(fig) => { const gd = document.querySelector('#' + fig + ' .js-plotly-plot');
  return !!(gd && gd._fullData && gd._fullData.length && gd._fullData[0].x && gd._fullData[0].x.length); }"""
TRACE_JS = """([fig, type]) => { const gd = document.querySelector('#' + fig + ' .js-plotly-plot');
  return !!(gd && gd.data && gd.data.some((t) => t.type === type)); }"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """``featscope serve`` (API, dashboard, one embedded worker) on a fresh data dir with two tiny backbones."""
    from featscope.extractors.types import Preprocess
    from featscope.workspace import Workspace

    root = tmp_path_factory.mktemp("browser")
    data_dir = root / "data"
    ws = Workspace(data_dir=data_dir)
    small = Preprocess(resize=72, crop=64)  # conv5 is 2 x 2 at 64 px: a heatmap with some structure
    ws.add_backbone("torchvision:resnet18", random_init=True, seed=0, name="r18a", preprocess=small)
    ws.add_backbone("torchvision:resnet18", random_init=True, seed=1, name="r18b", preprocess=small)
    port = _free_port()
    env = {**os.environ, "FEATSCOPE_DATA_DIR": str(data_dir), "FEATSCOPE_NUM_WORKERS": "0",
           "FEATSCOPE_BATCH_SIZE": "20", "OMP_NUM_THREADS": "1"}
    log = open(root / "serve.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "featscope", "serve", "--port", str(port), "--log-level", "warning"],
                            env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while True:
        try:
            urllib.request.urlopen(base + "/api/v1/jobs", timeout=2)
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise AssertionError(f"featscope serve did not start:\n{(root / 'serve.log').read_text()}")
            time.sleep(0.3)
    yield base, root
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


@pytest.fixture(scope="module")
def browser_page(server):
    from playwright.sync_api import sync_playwright

    errors: list[str] = []
    with sync_playwright() as p:
        ctx = p.chromium.launch_persistent_context(tempfile.mkdtemp(prefix="fs-chromium-"), executable_path=CHROMIUM,
                                                   headless=True, args=ARGS, viewport={"width": 1400, "height": 1000},
                                                   accept_downloads=True)
        page = ctx.new_page()
        page.set_default_timeout(30_000)
        page.on("console", lambda m: errors.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(f"page error: {e}"))
        yield page, errors
        ctx.close()


def _shot(page, server_root: Path, name: str) -> None:
    page.evaluate("() => window.scrollTo(0, 0)")
    page.wait_for_timeout(250)
    out = server_root / "screenshots" / f"{name}.png"
    out.parent.mkdir(exist_ok=True)
    page.screenshot(path=str(out), full_page=True)
    if os.environ.get("FEATSCOPE_SCREENSHOT_DIR"):
        target = Path(os.environ["FEATSCOPE_SCREENSHOT_DIR"])
        target.mkdir(parents=True, exist_ok=True)
        shutil.copy(out, target / out.name)


def _no_errors(errors: list[str], where: str) -> None:
    assert not errors, f"browser console errors on {where}:\n" + "\n".join(errors)


def test_the_dashboard_end_to_end(server, browser_page):
    base, root = server
    page, errors = browser_page

    # --- overview on a fresh data dir: the empty states, then the synthetic set from the form
    page.goto(base + "/")
    page.wait_for_selector("text=No data sets yet")
    page.fill("#ov-synth-per-class", "4")
    page.fill("#ov-synth-scenes", "2")
    page.fill("#ov-synth-size", "64")
    page.click("#ov-synth-go")
    page.wait_for_selector("text=Generating synth-objects and synth-scenes in job")
    page.wait_for_selector("#ov-datasets-table >> text=synth-objects", timeout=90_000)  # the job's result

    # --- Compare: A = r18a, B = r18b on the 40 objects, conv5 / avg; wait for every job
    page.wait_for_function("() => document.querySelector('#ov-cmp-dataset').innerText.includes('synth-objects')")
    page.click("#ov-cmp-backbones")
    page.get_by_text("r18a (torchvision").click()
    page.get_by_text("r18b (torchvision").click()
    page.keyboard.press("Escape")
    page.click("#ov-cmp-go")
    page.wait_for_selector("text=Queued 2 extraction job(s)")
    page.wait_for_selector("text=done: every analysis is cached", timeout=150_000)
    page.wait_for_selector("#ov-sets-table")
    _no_errors(errors, "the overview")
    _shot(page, root, "overview")

    # --- pairs (Fig. 3): three columns of thumbnail pairs
    page.click("text=Pairs (Fig. 3)")
    page.wait_for_url("**/pairs?a=*&b=*")
    for col in ("closest-a", "contrast", "closest-b"):
        page.wait_for_function(f"() => document.querySelectorAll('#pairs-{col} .fs-pair').length >= 12")
    assert page.locator("#pairs-contrast").text_content().count("rank in B") >= 12
    page.wait_for_function("() => [...document.querySelectorAll('#pairs-closest-a img')].every((i) => i.complete "
                           "&& i.naturalWidth > 0)")
    _no_errors(errors, "/pairs")
    _shot(page, root, "pairs")

    # --- co-membership (Fig. 6): both curves with their bands, on a log axis
    page.goto(base + "/comembership")
    page.wait_for_function("() => { const gd = document.querySelector('#cm-fig .js-plotly-plot'); "
                           "return gd && gd.data && gd.data.length === 6; }")
    assert page.evaluate("() => document.querySelector('#cm-fig .js-plotly-plot')._fullLayout.xaxis.type") == "log"
    assert "P(B | A) at K=" in page.text_content("#cm-stats")
    # every figure downloads as PNG/SVG and its data as CSV/JSON
    with page.expect_download() as got:
        page.click('[id*="fs-dl-data"][id*="cm-fig"][id*="csv"]')
    assert got.value.suggested_filename == "comembership.csv"
    assert Path(got.value.path()).read_text().startswith("k,a_to_b_mean,a_to_b_std")
    with page.expect_download() as got:
        page.click('[id*="fs-dl-img"][id*="cm-fig"][id*="svg"]')
    assert got.value.suggested_filename.endswith(".svg") and "<svg" in Path(got.value.path()).read_text()[:500]
    _no_errors(errors, "/comembership")
    _shot(page, root, "comembership")

    # --- projections (Fig. 7): lasso in A, the same images highlighted in B; hover shows the thumbnail
    # (reached by its nav link, which carries the pair last looked at: the page arrives with it chosen and, its
    # projection being cached, with both maps; the pages above were opened without a pair, which the browser picks)
    nav = 'a[id*="fs-nav"][id*="/projections"]'
    page.wait_for_function("(sel) => (document.querySelector(sel).getAttribute('href') || '').includes('?a=')", arg=nav)
    assert re.fullmatch(r"/projections\?a=\d+&b=\d+", page.get_attribute(nav, "href"))
    page.click(nav)
    page.wait_for_url("**/projections?a=*&b=*")
    page.wait_for_function(DRAWN_JS, arg="proj-a")
    page.wait_for_function(DRAWN_JS, arg="proj-b")
    page.evaluate("() => document.querySelector('#proj-a').scrollIntoView({block: 'center'})")
    page.wait_for_timeout(300)
    pts = page.evaluate(POINTS_JS, "proj-a")
    assert len(pts) == 40
    xs, ys = sorted(p[0] for p in pts), sorted(p[1] for p in pts)
    # the right edge in the middle of the widest gap between points near the median: no point on the lasso's edge
    gap, at = max((xs[m + 1] - xs[m], m) for m in range(len(xs) // 2 - 6, len(xs) // 2 + 6))
    x0, x1, y0, y1 = xs[0] - 6, xs[at] + gap / 2, ys[0] - 6, ys[-1] + 6
    inside = sum(1 for x, y in pts if x0 < x < x1 and y0 < y < y1)
    page.mouse.move(x0, y0)
    page.mouse.down()
    for x, y in ((x1, y0), (x1, y1), (x0, y1), (x0, y0 + 2)):
        page.mouse.move(x, y, steps=10)
    page.mouse.up()
    # the highlight: an overlay over each map paints the selected points (the WebGL points are not redrawn)
    selected_in = ("(fig) => { const c = document.querySelector('#' + fig + ' canvas.fs-sel-canvas');"
                   " return c && c.dataset.final === '1' ? Number(c.dataset.count) : 0; }")
    page.wait_for_function(selected_in, arg="proj-b", timeout=10_000)
    assert page.evaluate(selected_in, "proj-b") == inside and page.evaluate(selected_in, "proj-a") == inside
    # ... and it is painted: B's overlay shows a selected image's point in colour, an unselected one veiled
    pts_b = page.evaluate(POINTS_JS, "proj-b")
    flags = [x0 < x < x1 and y0 < y < y1 for x, y in pts]
    pixel = """([x, y]) => { const c = document.querySelector('#proj-b canvas.fs-sel-canvas');
      const r = c.getBoundingClientRect(), k = c.width / r.width;
      return Array.from(c.getContext('2d').getImageData(Math.round((x - r.left) * k), Math.round((y - r.top) * k), 1, 1).data); }"""
    def apart(points):  # an unselected point at least 6 px from every selected one (dots are up to 7 px wide)
        return next(p for p, f in zip(points, flags) if not f and all(
            abs(p[0] - q[0]) + abs(p[1] - q[1]) > 6 for q, g in zip(points, flags) if g))

    shown = page.evaluate(pixel, pts_b[flags.index(True)])
    veiled = page.evaluate(pixel, apart(pts_b))
    assert shown[3] == 255 and min(shown[:3]) < 200, shown  # a class colour, opaque
    assert 0 < veiled[3] < 255 and min(veiled[:3]) > 200, veiled  # the white veil over the WebGL point
    # a zoom moves the points: the highlight is painted again where they now are
    page.evaluate("""() => { const gd = document.querySelector('#proj-b .js-plotly-plot');
      const r = gd._fullLayout.xaxis.range, s = gd._fullLayout.yaxis.range;
      return window.Plotly.relayout(gd, {'xaxis.range': [r[0] - (r[1] - r[0]) / 2, r[1]],
                                         'yaxis.range': [s[0] - (s[1] - s[0]) / 2, s[1]]}); }""")
    page.wait_for_timeout(300)
    pts_b = page.evaluate(POINTS_JS, "proj-b")
    assert page.evaluate(pixel, pts_b[flags.index(True)])[3] == 255 and page.evaluate(selected_in, "proj-b") == inside
    page.wait_for_selector("#proj-selection-count")
    assert page.text_content("#proj-selection-count").startswith(f"{inside} image")
    assert page.locator("#proj-grid .fs-thumb").count() == inside
    page.mouse.move(*pts_b[3])
    page.mouse.move(pts_b[3][0] + 0.5, pts_b[3][1])
    page.wait_for_selector("#proj-b-tip-img[src*='/thumbnail']")
    page.wait_for_function("() => { const i = document.querySelector('#proj-b-tip-img'); "
                           "return i.complete && i.naturalWidth > 0; }")
    assert "image " in page.text_content("#proj-b-tip-caption")
    _no_errors(errors, "/projections")
    _shot(page, root, "projections")
    page.mouse.click(x0 + 2, y1 - 2)  # a click without a drag clears the selection in both maps and the grid
    page.wait_for_selector("#proj-grid >> text=Nothing selected")
    assert page.evaluate(selected_in, "proj-a") == 0 and page.evaluate(selected_in, "proj-b") == 0

    # --- similarity: CKA, mutual k-NN, agreement histogram, most disagreeing images
    page.goto(base + "/similarity")
    page.wait_for_selector("text=Linear CKA")
    page.wait_for_function(TRACE_JS, arg=["sim-hist", "histogram"])
    page.wait_for_function(TRACE_JS, arg=["sim-cka", "heatmap"])
    page.wait_for_function("() => document.querySelectorAll('#sim-worst .fs-thumb').length === 20")
    _no_errors(errors, "/similarity")
    _shot(page, root, "similarity")

    # --- probes (Tables 5, 6): one row per backbone x tap x pooling
    page.goto(base + "/probes")
    page.wait_for_function("() => document.querySelectorAll('#pr-results tbody tr').length === 2")
    page.wait_for_function(TRACE_JS, arg=["pr-fig", "bar"])
    _no_errors(errors, "/probes")
    _shot(page, root, "probes")

    # --- an image (Figs. 4, 5): heatmaps of A and B and their difference, neighbours in A and B
    first = page.evaluate("async () => (await (await fetch('/api/v1/images?dataset=synth-objects&limit=1')).json())"
                          ".items[0].id")
    page.goto(f"{base}/image/{first}")
    page.wait_for_selector("#img-hero .fs-kv")
    for fig in ("img-heat-a", "img-heat-b", "img-heat-diff"):
        page.wait_for_function(TRACE_JS, arg=[fig, "heatmap"], timeout=60_000)
    page.wait_for_function("() => document.querySelectorAll('#img-nn-a .fs-thumb').length === 12 && "
                           "document.querySelectorAll('#img-nn-b .fs-thumb').length === 12")
    _no_errors(errors, "/image")
    _shot(page, root, "image")

    # --- upload: the API checks the file, then both heatmaps appear
    page.goto(base + "/upload")
    scene = sorted((root / "data" / "synth").rglob("*.png"))[0]  # a generated scene, sent as a JPEG
    buf = io.BytesIO()
    Image.open(scene).convert("RGB").resize((120, 90)).save(buf, "JPEG", quality=92)
    page.set_input_files("#up-file input[type=file]", files=[{"name": "scene.jpg", "mimeType": "image/jpeg",
                                                              "buffer": buf.getvalue()}])
    page.wait_for_selector("text=Upload id")
    assert "120 × 90" in page.text_content("#up-info") and "JPEG" in page.text_content("#up-info")
    for fig in ("up-heat-a", "up-heat-b"):
        page.wait_for_function(TRACE_JS, arg=[fig, "heatmap"], timeout=60_000)
    _no_errors(errors, "/upload")
    _shot(page, root, "upload")

    # --- jobs: every job with its state, a chosen one's log
    page.goto(base + "/jobs")
    page.wait_for_function("() => document.querySelectorAll('#jobs-list tbody tr').length >= 15")
    assert "done" in page.text_content("#jobs-list") and "submitted" in page.text_content("#jobs-log")
    _no_errors(errors, "/jobs")
    _shot(page, root, "jobs")

    # --- detections (Fig. 8, Table 3): no detection fine-tuning run in this data dir, so it says what to run
    page.goto(base + "/detections")
    page.wait_for_selector("#det-empty >> text=No two detection fine-tuning runs to compare yet")
    assert "featscope finetune det -b" in page.text_content("#det-empty")
    assert not page.is_visible("#det-body")
    _no_errors(errors, "/detections")

    # --- an API typo is JSON, not the page (asked outside the browser: a 404 there is a console error)
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(base + "/api/v1/nope", timeout=5)
    assert e.value.code == 404 and e.value.headers["content-type"] == "application/json"
