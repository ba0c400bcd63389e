"""`featscope analyze ...` end to end: JSON/CSV output equal to the Python API's numbers, errors exit 2."""

from __future__ import annotations

import csv
import io
import json

import pytest
from typer.testing import CliRunner

from featscope.cli import app


@pytest.fixture(scope="module")
def cli(tmp_path_factory, make_images):
    """A data dir with two random ResNet-18s' conv5/conv4 sets of one labelled folder; ``cli(*args)`` runs the CLI."""
    import faiss

    root = tmp_path_factory.mktemp("cli")
    make_images(root / "imgs", {"a": 8, "b": 8, "c": 8}, size=36)
    mp = pytest.MonkeyPatch()
    mp.setenv("FEATSCOPE_DATA_DIR", str(root / "data"))
    mp.setenv("FEATSCOPE_NUM_WORKERS", "0")
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    import featscope.cli as cli_mod

    def invoke(*args: str):
        cli_mod._state.clear()  # each invocation is a fresh process in real use
        return CliRunner().invoke(app, list(args))

    assert invoke("dataset", "add", str(root / "imgs"), "--name", "imgs").exit_code == 0
    for name, seed in (("cls", "0"), ("det", "1")):
        r = invoke("backbone", "add", "torchvision:resnet18", "--random-init", "--seed", seed, "--name", name,
                   "--resize", "40", "--crop", "32")
        assert r.exit_code == 0, r.output
        r = invoke("extract", "-b", name, "-d", "imgs", "-t", "conv5", "-t", "conv4")
        assert r.exit_code == 0, r.output
    yield invoke, root
    faiss.omp_set_num_threads(threads)
    mp.undo()


def _sets(invoke) -> dict[tuple[str, str], int]:
    return {(e["backbone"], e["tap"]): e["id"] for e in json.loads(invoke("embeddings", "list", "--json").stdout)}


def test_comembership_json_and_csv_agree_and_second_run_is_cached(cli):
    invoke, root = cli
    s = _sets(invoke)
    a, b = str(s[("cls", "layer4")]), str(s[("det", "layer4")])
    r = invoke("analyze", "comembership", a, b, "--k", "2", "--k", "3", "--k", "6", "--seed", "0", "-f", "json")
    assert r.exit_code == 0, r.output
    res = json.loads(r.stdout)
    assert res["data"]["ks"] == [2, 3, 6] and res["cached"] is False
    out = root / "curve.csv"
    r = invoke("analyze", "comembership", a, b, "--k", "2", "--k", "3", "--k", "6", "--seed", "0", "-f", "csv",
               "-o", str(out))
    assert r.exit_code == 0 and "wrote" in r.output
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert [int(x["k"]) for x in rows] == [2, 3, 6]
    assert [float(x["a_to_b_mean"]) for x in rows] == pytest.approx(res["data"]["mean"]["a_to_b"])
    r = invoke("analyze", "comembership", a, b, "--k", "2", "--k", "3", "--k", "6", "--seed", "0")
    assert r.exit_code == 0 and "cached" in r.stdout and "a_to_b_mean" in r.stdout


def test_every_analysis_runs_from_the_cli(cli):
    invoke, _ = cli
    s = _sets(invoke)
    a, b = str(s[("cls", "layer4")]), str(s[("det", "layer4")])
    for args in (["closest", a, b, "--n-pairs", "3", "-k", "4"], ["contrast", a, b, "--n-pairs", "3"],
                 ["contrast", a, b, "--definition", "clusters", "--k-large", "6", "--k-small", "2"],
                 ["agreement", a, b, "-k", "4"], ["project", a, b, "--method", "pca"],
                 ["probe", a, "--knn-k", "3"], ["similarity", a, b, "-k", "4"]):
        r = invoke("analyze", *args, "-f", "json")
        assert r.exit_code == 0, (args, r.output)
        assert json.loads(r.stdout)["kind"] in ("closest", "contrast", "agreement", "projection", "probe", "similarity")
    r = invoke("analyze", "probe", a, "--knn-k", "3")
    assert "linear probe top-1" in r.stdout and "cached" in r.stdout
    r = invoke("analyze", "probes", "-d", "imgs", "-b", "cls", "-b", "det", "-f", "csv")
    assert r.exit_code == 0, r.output
    table = list(csv.DictReader(io.StringIO(r.stdout)))
    assert {(t["backbone"], t["tap"]) for t in table} == {(x, y) for x in ("cls", "det") for y in ("layer3", "layer4")}
    r = invoke("analyze", "cka-matrix", "--a", "cls", "--b", "det", "-d", "imgs", "-f", "json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["data"]["taps_b"] == ["layer3", "layer4"]
    r = invoke("analyze", "list", "--json")
    assert {x["kind"] for x in json.loads(r.stdout)} >= {"closest", "probe", "cka-matrix"}


def test_analysis_errors_exit_2_with_the_fix(cli):
    invoke, _ = cli
    s = _sets(invoke)
    a = str(s[("cls", "layer4")])
    r = invoke("analyze", "agreement", a, a)
    assert r.exit_code == 2 and "two different embedding sets" in r.output and "Traceback" not in r.output
    r = invoke("analyze", "similarity", a, "999")
    assert r.exit_code == 2 and "embeddings list" in r.output
    r = invoke("analyze", "comembership", a, str(s[("det", "layer4")]), "--k", "500")
    assert r.exit_code == 2 and "exceeds N=24" in r.output
    r = invoke("analyze", "probe", a, "-f", "xml")
    assert r.exit_code == 2 and "table, json or csv" in r.output
