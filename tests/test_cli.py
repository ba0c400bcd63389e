"""The CLI end to end on a tiny data set: exit codes, messages, JSON output."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from featscope.cli import app


@pytest.fixture
def run(tmp_path, monkeypatch):
    monkeypatch.setenv("FEATSCOPE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("FEATSCOPE_NUM_WORKERS", "0")
    monkeypatch.setenv("FEATSCOPE_BATCH_SIZE", "4")
    import featscope.cli as cli

    def invoke(*args: str):
        cli._state.clear()  # each invocation is a fresh process in real use
        return CliRunner().invoke(app, list(args))

    return invoke


def test_user_errors_exit_2_with_the_fix_and_no_traceback(run, tmp_path):
    r = run("backbone", "add", "resnet50")
    assert r.exit_code == 2 and "torchvision:resnet50" in r.output and "Traceback" not in r.output
    r = run("dataset", "add", str(tmp_path / "missing"))
    assert r.exit_code == 2 and "error:" in r.output
    r = run("neighbours", "1", "3")
    assert r.exit_code == 2 and "embeddings list" in r.output
    r = run("backbone", "add", "torchvision:resnet18", "--random-init", "--resize", "32", "--crop", "64")
    assert r.exit_code == 2 and "crop" in r.output


def test_full_path_from_dataset_to_neighbours(run, image_folder):
    r = run("dataset", "add", str(image_folder), "--name", "imgs")
    assert r.exit_code == 0, r.output
    assert "registered" in r.output and "16 images" in r.output
    r = run("dataset", "list", "--json")
    assert json.loads(r.output)[0]["n_images"] == 16

    r = run("backbone", "add", "torchvision:resnet18", "--random-init", "--name", "r18", "--resize", "40", "--crop", "32")
    assert r.exit_code == 0, r.output
    r = run("backbone", "layers", "r18", "--json")
    layers = {t["name"]: t for t in json.loads(r.output)}
    assert layers["layer4"]["channels"] == 512 and "conv5" in layers["layer4"]["aliases"]

    r = run("extract", "-b", "r18", "-d", "imgs", "--tap", "conv5", "--json")
    assert r.exit_code == 0, r.output
    [es] = json.loads(r.output[r.output.index("["):])
    assert es["n"] == 16 and es["dim"] == 512 and es["cached"] is False
    r = run("extract", "-b", "r18", "-d", "imgs", "--tap", "layer4", "--json")
    assert json.loads(r.output[r.output.index("["):])[0]["cached"] is True

    r = run("embeddings", "list", "--json")
    assert [e["id"] for e in json.loads(r.output)] == [es["id"]]
    r = run("neighbours", str(es["id"]), "1", "-k", "3", "--json")
    assert r.exit_code == 0, r.output
    res = json.loads(r.output)
    assert res["query"]["image_id"] == 1 and len(res["neighbours"]) == 3
    assert all(n["image_id"] != 1 for n in res["neighbours"])
    scores = [n["score"] for n in res["neighbours"]]
    assert scores == sorted(scores, reverse=True)


def test_dataset_images_lists_ids_and_skipped_files(run, image_folder):
    (image_folder / "red" / "broken.png").write_bytes(b"not an image")
    assert run("dataset", "add", str(image_folder), "--name", "imgs").exit_code == 0
    rows = json.loads(run("dataset", "images", "imgs", "--limit", "5", "--json").output)
    assert len(rows) == 5 and [r["id"] for r in rows] == sorted(r["id"] for r in rows)
    rest = json.loads(run("dataset", "images", "imgs", "--limit", "0", "--offset", "5", "--json").output)
    assert len(rows) + len(rest) == 16
    [bad] = json.loads(run("dataset", "images", "imgs", "--skipped", "--json").output)
    assert bad["relpath"] == "red/broken.png" and "not an image" in bad["error"]
