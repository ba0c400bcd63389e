"""A backbone registered in one process is used in others: every source and weight format, through every
interface, each in a FRESH process, with outputs equal to the network built in this process from the same file.

The matrix (issue #11): torchvision, torchvision-det, timm and checkpoint files in torchvision / timm (hub
folder) / featscope / torchvision-detection / MMDetection / Detectron2 FPN and C4 / Caffe2 formats are
registered by one `featscope backbone add` process; then `featscope backbone layers`, `extract`, `heatmap`
and `maskout` each run in a fresh process; then a `featscope serve` process (its own worker process)
extracts them through the REST API, registers one more by REST, runs an analysis, a mask-out of an upload
with a probe head kept by the CLI; then the catalog is turned back into what an older featscope wrote (the
loader's resolved values, no load_args / network columns) and a restarted server upgrades it, its fresh
worker reopens every row, extracts again and the server serves what the first one stored. A per-process
cache of loaded networks hid the reload bug: nothing here is loaded in the process that uses it first.

Cost: each fresh process imports torch (seconds); a process runs one verb for every backbone (through the
real Typer app, a new workspace per command), so each backbone is opened exactly once per process.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import timm
import torch
import torchvision
from torch import nn

from featscope.extractors.backbones import list_taps, load_backbone
from featscope.extractors.checkpoints import save_checkpoint
from featscope.extractors.types import Preprocess

SIZE = {"resize": 40, "crop": 32}  # registration shrinks the input; each format keeps its own normalisation
TIMM_CFG = {"input_size": [3, 32, 32], "interpolation": "bicubic", "crop_pct": 0.8, "crop_mode": "center",
            "mean": [0.5, 0.45, 0.4], "std": [0.25, 0.25, 0.25], "num_classes": 5, "classifier": "fc", "tag": "toy"}

_DRIVER = r"""
import json, sys
from typer.testing import CliRunner
import featscope.cli as cli

results = []
for args in json.loads(sys.argv[1]):
    cli._state.clear()  # a new workspace per command, as a new `featscope` process has
    r = CliRunner().invoke(cli.app, args)
    results.append({"args": args, "code": r.exit_code, "stdout": r.stdout, "output": r.output,
                    "exception": None if r.exception is None or r.exit_code == 0 else repr(r.exception)})
print("@@RESULTS@@" + json.dumps(results))
"""


def _env(root: Path) -> dict[str, str]:
    return {**os.environ, "FEATSCOPE_DATA_DIR": str(root / "data"), "FEATSCOPE_NUM_WORKERS": "0",
            "FEATSCOPE_BATCH_SIZE": "8", "FEATSCOPE_ALLOWED_ROOTS": json.dumps([str(root)]),
            "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def _start_session(root: Path, commands: list[list[str]]) -> subprocess.Popen:
    """Run ``featscope`` commands in one fresh Python process (the real Typer app)."""
    return subprocess.Popen([sys.executable, "-c", _DRIVER, json.dumps(commands)], env=_env(root), cwd=root,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(proc: subprocess.Popen) -> list[dict]:
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0 and "@@RESULTS@@" in out, f"driver failed ({proc.returncode}):\n{err[-4000:]}"
    results = json.loads(out.split("@@RESULTS@@", 1)[1])
    for r in results:
        assert r["code"] == 0, f"{' '.join(r['args'])} -> exit {r['code']}:\n{r['output']}\n{r['exception']}"
    return results


def _json(result: dict):
    return json.loads(result["stdout"])


# --- every format, from one family of tiny networks -----------------------------------------------

def _formats(root: Path, tiny: SimpleNamespace) -> dict[str, dict]:
    """name -> {"add": CLI arguments, "load": load_backbone arguments, "classifier": bool}; distinct weights
    each (different seeds), so no two share a cached artifact and every use really runs its network."""
    w = root / "weights"
    w.mkdir()
    out: dict[str, dict] = {}

    def r18(seed: int) -> nn.Module:
        return tiny.make_resnet("resnet18", seed=seed)

    def add(name: str, spec: str, *, weights: Path | None = None, classifier: bool, **load) -> None:
        args = [spec] + (["--weights", str(weights)] if weights else []) + [
            "--name", name, "--resize", str(SIZE["resize"]), "--crop", str(SIZE["crop"])]
        out[name] = {"add": args, "load": {"spec": spec, "weights": weights, **load}, "classifier": classifier}

    torch.save(r18(1).state_dict(), w / "tv.pth")
    add("tv", "torchvision:resnet18", weights=w / "tv.pth", classifier=True)

    torch.manual_seed(2)
    det = torchvision.models.get_model("fasterrcnn_resnet50_fpn", weights=None, weights_backbone=None)
    tiny.randomize_bn(det, seed=2)
    torch.save({k: v for k, v in det.state_dict().items() if not k.endswith("num_batches_tracked")}, w / "frcnn.pth")
    add("tvdet", "torchvision-det:fasterrcnn_resnet50_fpn", weights=w / "frcnn.pth", classifier=False)

    torch.manual_seed(3)
    torch.save(tiny.randomize_bn(timm.create_model("resnet18", pretrained=False), seed=3).state_dict(), w / "timm.pth")
    add("timm", "timm:resnet18", weights=w / "timm.pth", classifier=True)

    torch.save(r18(4).state_dict(), w / "plain.pth")
    add("ck-tv", f"checkpoint:{w / 'plain.pth'}", classifier=True)

    torch.manual_seed(5)
    hub = tiny.randomize_bn(timm.create_model("resnet18", pretrained=False, num_classes=5), seed=5).eval()
    path = tiny.write_timm_folder(w / "hub", hub, "resnet18", TIMM_CFG, list("vwxyz"))
    add("ck-timm", f"checkpoint:{path}", classifier=True)

    save_checkpoint(w / "fs.pth", r18(6), "resnet18", Preprocess(), class_names=[f"k{i}" for i in range(1000)])
    add("ck-fs", f"checkpoint:{w / 'fs.pth'}", classifier=True)

    from torchvision.models.detection import FasterRCNN
    from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor

    torch.manual_seed(7)
    trunk = tiny.randomize_bn(torchvision.models.resnet18(norm_layer=torchvision.ops.FrozenBatchNorm2d), seed=7)
    torch.save(FasterRCNN(_resnet_fpn_extractor(trunk, 5), num_classes=3).state_dict(), w / "frcnn_r18.pth")
    add("ck-tvdet", f"checkpoint:{w / 'frcnn_r18.pth'}", classifier=False)

    mm = {f"backbone.{k}": v for k, v in tiny.body_state(r18(8)).items()}
    mm["neck.lateral_convs.0.conv.weight"] = torch.zeros(4, 4, 1, 1)
    torch.save({"meta": {"mmdet_version": "2.28.2", "CLASSES": ("a", "b")}, "state_dict": mm}, w / "mmdet.pth")
    add("ck-mmdet", f"checkpoint:{w / 'mmdet.pth'}", classifier=False)

    d2 = tiny.to_detectron2_names(r18(9).state_dict(), "backbone.bottom_up.")
    d2["backbone.fpn_lateral2.weight"] = np.zeros((4, 4, 1, 1), np.float32)
    tiny.write_pickle(w / "d2_fpn.pkl", {"model": d2})  # no __author__: Detectron2's MSRA defaults, BGR 0..255
    add("ck-d2fpn", f"checkpoint:{w / 'd2_fpn.pkl'}", classifier=False)

    c4 = {("roi_heads." + k[len("backbone."):] if k.startswith("backbone.res5.") else k): v
          for k, v in tiny.to_detectron2_names(r18(10).state_dict(), "backbone.").items()}
    tiny.write_pickle(w / "d2_c4.pkl", {"model": c4, "__author__": "torchvision"})
    add("ck-d2c4", f"checkpoint:{w / 'd2_c4.pkl'}", classifier=False)

    tiny.write_pickle(w / "R-18.pkl", {"blobs": tiny.to_caffe2_names(r18(11).state_dict())})
    add("ck-caffe2", f"checkpoint:{w / 'R-18.pkl'}", classifier=True)

    tiny.write_pickle(w / "rest.pkl", {"model": tiny.to_detectron2_names(r18(12).state_dict(), "backbone.bottom_up.")})
    out["rest-d2"] = {"load": {"spec": f"checkpoint:{w / 'rest.pkl'}", "weights": None}, "classifier": False}
    return out


def _reference(fmt: dict, row) -> "object":
    """The network built in THIS process from the same file, with the registered preprocessing."""
    load = {k: v for k, v in fmt["load"].items() if v is not None}
    bb = load_backbone(**load, preprocess=Preprocess.from_dict(row.preprocess))
    assert bb.fingerprint == row.fingerprint
    return bb


def _close(got: np.ndarray, want: np.ndarray, what: str) -> None:
    """Equal up to float32 summation order (batched, channels-last extraction), relative to the vectors' scale."""
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * max(1.0, float(np.abs(want).max())), err_msg=what)


def _embed(bb, paths: list[Path], tap: str) -> np.ndarray:
    from featscope.datasets.images import load_rgb
    from featscope.extractors.taps import pool, tap_model

    x = torch.stack([bb.preprocess.to_uint8(load_rgb(p)) for p in paths])
    name = bb.resolve_tap(tap)
    with torch.no_grad():
        return pool(tap_model(bb, [name])(bb.preprocess.normalize(x))[name], "avg").numpy()


# --- the served part --------------------------------------------------------------------------------

class Server:
    """`featscope serve` in a child process (uvicorn plus its embedded job-worker process)."""

    def __init__(self, root: Path, log: Path) -> None:
        import httpx

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self._log = open(log, "ab")
        self.log = log
        self.proc = subprocess.Popen([sys.executable, "-m", "featscope", "serve", "--port", str(self.port),
                                      "--log-level", "warning"], env=_env(root), cwd=root, stdout=self._log,
                                     stderr=subprocess.STDOUT)
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{self.port}/api/v1", timeout=60)
        deadline = time.monotonic() + 120
        while True:
            try:
                if self.http.get("/jobs").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert self.proc.poll() is None and time.monotonic() < deadline, self.log.read_text(errors="replace")
            time.sleep(0.3)

    def wait(self, job_ids: list[int], timeout: float = 240) -> list[dict]:
        deadline = time.monotonic() + timeout
        while True:
            jobs = [self.http.get(f"/jobs/{j}").json() for j in job_ids]
            if all(j["state"] in ("done", "failed", "cancelled") for j in jobs):
                bad = [(j["id"], j["kind"], j["params"], j["error"]) for j in jobs if j["state"] != "done"]
                assert not bad, bad
                return jobs
            assert time.monotonic() < deadline, [(j["id"], j["state"], j["message"]) for j in jobs]
            time.sleep(0.5)

    def stop(self) -> None:
        self.http.close()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self._log.close()


# --- the test ----------------------------------------------------------------------------------------

def test_every_format_reopens_in_fresh_processes_with_the_same_outputs(tmp_path, tiny, make_images):
    from featscope.config import Settings
    from featscope.extractors.activations import activation_map
    from featscope.extractors.heads import classifier_for, probe_linear
    from featscope.extractors.maskout import maskout_map
    from featscope.datasets.images import load_rgb
    from featscope.workspace import Workspace
    from featscope.workspace.backbones import get_backbone_row

    root = tmp_path
    fmts = _formats(root, tiny)
    cli_names = [n for n, f in fmts.items() if "add" in f]
    folder = make_images(root / "imgs", {"a": 3, "b": 3, "c": 3}, size=40)
    photo = root / "photo.png"
    torch.manual_seed(0)
    from PIL import Image

    Image.fromarray(np.random.default_rng(5).integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(photo)

    # 1. one process registers the data set and every backbone (the real `featscope` commands)
    _finish(_start_session(root, [["dataset", "add", str(folder), "--name", "shapes"]]
                           + [["backbone", "add", *fmts[n]["add"]] for n in cli_names]))
    ws = Workspace(Settings(data_dir=root / "data", num_workers=0))  # this process only reads the catalog
    rows = {n: get_backbone_row(ws.ctx, n) for n in cli_names}
    assert Preprocess.from_dict(rows["ck-d2fpn"].preprocess).channel_order == "BGR"  # --resize kept the format's
    assert Preprocess.from_dict(rows["ck-timm"].preprocess).mean == (0.5, 0.45, 0.4)  # timm's pretrained_cfg
    body_only = [n for n in cli_names if not fmts[n]["classifier"]]
    assert [n for n in cli_names if not rows[n].has_classifier] == body_only

    # 2. fresh processes: layers, heatmap and extract side by side; then mask-out (it needs conv5 embeddings)
    out = root / "maps"
    layers = _start_session(root, [["backbone", "layers", n, "--json"] for n in cli_names])
    heat = _start_session(root, [["heatmap", str(photo), "-b", n, "-o", str(out / n), "--json"] for n in cli_names])
    extract = _start_session(root, [["extract", "-b", n, "-d", "shapes", "-t", "conv5", "--json"] for n in cli_names])
    # the issue's own reproduction, as a plain `featscope` command
    plain = subprocess.run([sys.executable, "-m", "featscope", "backbone", "layers", "ck-d2c4"], env=_env(root),
                           cwd=root, capture_output=True, text=True, timeout=300)
    layers, heat, extract = _finish(layers), _finish(heat), _finish(extract)
    assert plain.returncode == 0 and "layer4" in plain.stdout, plain.stderr
    mask_cmds = [["maskout", str(photo), "-b", n, "--target", "1", "--size", "8", "--stride", "8", "-o", str(out / n),
                  "--json"] + (["--probe-dataset", "shapes"] if n in body_only else []) for n in cli_names]
    masks = _finish(_start_session(root, mask_cmds))

    # 3. everything equals the network built here from the same file
    images = [root / "imgs" / im.relpath for im in ws.images("shapes")]
    refs = {}
    for i, n in enumerate(cli_names):
        bb = refs[n] = _reference(fmts[n], rows[n])
        want = [(t.name, t.channels, t.height, t.width) for t in list_taps(bb)]
        assert [(t["name"], t["channels"], t["height"], t["width"]) for t in _json(layers[i])] == want, n
        [es] = _json(extract[i])
        _close(ws.load_embeddings(es["id"]).vectors, _embed(bb, images, "conv5"), n)
        heat_npz = np.load(out / n / "photo-activation.npz")
        _close(heat_npz["raw"], activation_map(bb, photo).raw, n)
        if n in body_only:
            probe = ws.load_probe(n, "shapes", train=False)  # kept by the mask-out process
            clf = classifier_for(bb, probe_linear(probe.coef, probe.intercept, probe.scaler_mean, probe.scaler_scale),
                                 probe.classes)
        else:
            clf = classifier_for(bb)
        ref = maskout_map(clf, bb.preprocess.to_uint8(load_rgb(photo)), 1, preprocess=bb.preprocess, size=8, stride=8,
                          reuse=False)  # the plain batched pass: independent of the incremental engine
        got = _json(masks[i])[0]
        assert got["head"] == ("probe" if n in body_only else "classifier") and got["target"] == 1, n
        np.testing.assert_allclose(np.load(out / n / "photo-maskout.npz")["probs"], ref.probs, atol=1e-5, err_msg=n)

    # 4. the REST API: a server process and its worker process, then both restarted
    server = Server(root, root / "serve-1.log")
    try:
        r = server.http.post("/backbones", json={"spec": fmts["rest-d2"]["load"]["spec"], "name": "rest-d2"})
        assert r.status_code == 201, r.text  # registered in the server process, used by its worker
        names = cli_names + ["rest-d2"]
        rows["rest-d2"] = get_backbone_row(ws.ctx, "rest-d2")
        refs["rest-d2"] = _reference(fmts["rest-d2"], rows["rest-d2"])
        jobs = [server.http.post("/embedding-sets/extract", json={"backbone": n, "dataset": "shapes",
                                                                  "taps": ["conv4"]}).json()["id"] for n in names]
        upload = server.http.post("/uploads", files={"file": ("photo.png", photo.read_bytes(), "image/png")}).json()
        mask_job = server.http.post("/maps/maskout", json={"backbone": "ck-mmdet", "upload_id": upload["id"],
                                                           "target": "2", "size": 8, "stride": 8,
                                                           "probe_dataset": "shapes"}).json()
        sets = {n: ws.embedding_sets(backbone=n)[0].id for n in ("tv", "ck-caffe2")}
        sim = server.http.post("/analyses/similarity", json={"a": sets["tv"], "b": sets["ck-caffe2"], "k": 3})
        assert sim.status_code == 202, sim.text
        done = server.wait(jobs + [mask_job["id"], sim.json()["id"]])
        for n, job in zip(names, done):
            [es] = job["result"]["embedding_sets"]
            _close(ws.load_embeddings(es).vectors, _embed(refs[n], images, "conv4"), n)
        mask = done[len(names)]["result"]
        probe = ws.load_probe("ck-mmdet", "shapes", train=False)  # the probe the CLI kept, used as the head
        clf = classifier_for(refs["ck-mmdet"], probe_linear(probe.coef, probe.intercept, probe.scaler_mean,
                                                            probe.scaler_scale), probe.classes)
        bb = refs["ck-mmdet"]
        ref = maskout_map(clf, bb.preprocess.to_uint8(load_rgb(photo)), 2, preprocess=bb.preprocess, size=8, stride=8,
                          reuse=False)
        np.testing.assert_allclose(ws.ctx.store.get("map", mask["artifact_key"]).array("probs"), ref.probs, atol=1e-5)
        analysis = server.http.post("/analyses/similarity", json={"a": sets["tv"], "b": sets["ck-caffe2"], "k": 3})
        assert analysis.status_code == 200 and analysis.json()["cached"], analysis.text
    finally:
        server.stop()

    # 5. an upgrade and a restart: the rows as an older featscope wrote them (the loader's resolved values, no
    # load_args / network columns), a server that upgrades the catalog, a fresh worker that reopens every row
    con = sqlite3.connect(root / "data" / "catalog.sqlite")
    resolved = dict(con.execute("SELECT name, arch FROM backbones").fetchall())
    assert resolved["tvdet"] == "resnet50" and resolved["ck-d2c4"] == "resnet18"
    con.execute("ALTER TABLE backbones DROP COLUMN load_args")
    con.execute("ALTER TABLE backbones DROP COLUMN network")
    con.commit()
    con.close()
    server = Server(root, root / "serve-2.log")
    try:
        jobs = [server.http.post("/embedding-sets/extract", json={"backbone": n, "dataset": "shapes",
                                                                  "taps": ["conv3"]}).json()["id"] for n in names]
        gradcam = server.http.post("/maps/heatmap", json={"backbone": "ck-d2fpn", "upload_id": upload["id"],
                                                          "method": "gradcam", "probe_dataset": "shapes"}).json()
        done = server.wait(jobs + [gradcam["id"]])
        for n, job in zip(names, done):
            [es] = job["result"]["embedding_sets"]
            _close(ws.load_embeddings(es).vectors, _embed(refs[n], images, "conv3"), n)
        cam = done[-1]["result"]["data"]
        assert cam["head"] == "probe" and cam["target_chosen"] == "top-scoring" and cam["class_name"] in "abc"
        again = server.http.post("/analyses/similarity", json={"a": sets["tv"], "b": sets["ck-caffe2"], "k": 3})
        assert again.status_code == 200 and again.json()["data"] == analysis.json()["data"]
        overlay = server.http.get(f"/maps/{mask_job['id']}/overlay.png")  # stored by the first server's worker
        assert overlay.status_code == 200 and overlay.headers["content-type"] == "image/png"
        for n in names:  # the worker recorded what the older rows lacked when it reopened them
            taps = server.http.get(f"/backbones/{n}/taps")
            assert taps.status_code == 200 and taps.json()["layers"][-1]["channels"] == \
                list_taps(refs[n])[-1].channels, n
            row = get_backbone_row(ws.ctx, n)
            assert row.load_args is None and row.network is not None, n
    finally:
        server.stop()


@pytest.mark.parametrize("where", ["relative checkpoint path", "relative COCO images root"])
def test_relative_paths_are_stored_absolute(tmp_path, tiny, make_images, where):
    """A path given relative to one working directory must work from another (a worker, a server)."""
    from featscope.config import Settings
    from featscope.workspace import Workspace

    here = tmp_path / "here"
    here.mkdir()
    ws = Workspace(Settings(data_dir=tmp_path / "data", num_workers=0))
    old = os.getcwd()
    os.chdir(here)
    try:
        if where == "relative checkpoint path":
            torch.save(tiny.make_resnet("resnet18", seed=1).state_dict(), here / "r18.pth")
            info = ws.add_backbone("checkpoint:r18.pth", name="rel", preprocess=SIZE)
            assert info.spec == f"checkpoint:{here / 'r18.pth'}"
        else:
            make_images(here / "pics", {"a": 2}, size=32)
            files = sorted((here / "pics" / "a").iterdir())
            coco = {"images": [{"id": i, "file_name": f.name, "width": 32, "height": 32} for i, f in enumerate(files)],
                    "annotations": [], "categories": [{"id": 1, "name": "a"}]}
            (here / "ann.json").write_text(json.dumps(coco))
            info = ws.add_dataset("ann.json", images_root="pics/a", name="coco")
            assert info.root == str(here / "pics" / "a")
    finally:
        os.chdir(old)
    fresh = Workspace(Settings(data_dir=tmp_path / "data", num_workers=0))
    if where == "relative checkpoint path":
        assert fresh.load_backbone("rel").fingerprint == info.fingerprint
        fresh.ctx.networks.clear()
    else:
        from featscope.workspace.maps import resolve_image

        img = fresh.images("coco")[0]
        assert resolve_image(fresh.ctx, img.id)[0].is_file()
