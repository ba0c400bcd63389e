"""`featscope heatmap` / `featscope maskout`: files written, --compare panels, errors exit 2."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from featscope.cli import app


@pytest.fixture(scope="module")
def cli(tmp_path_factory):
    root = tmp_path_factory.mktemp("climaps")
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (40, 56, 3), dtype=np.uint8)).save(root / "photo.jpg")
    mp = pytest.MonkeyPatch()
    mp.setenv("FEATSCOPE_DATA_DIR", str(root / "data"))
    import featscope.cli as cli_mod

    def invoke(*args: str):
        cli_mod._state.clear()
        return CliRunner().invoke(app, list(args))

    for name, seed in (("a", "0"), ("b", "1")):
        r = invoke("backbone", "add", "torchvision:resnet18", "--random-init", "--seed", seed, "--name", name,
                   "--resize", "40", "--crop", "32")
        assert r.exit_code == 0, r.output
    yield invoke, root
    mp.undo()


def test_heatmap_compare_writes_overlays_arrays_and_a_panel(cli):
    invoke, root = cli
    out = root / "maps"
    r = invoke("heatmap", str(root / "photo.jpg"), "-b", "a", "--compare", "b", "-o", str(out), "--json")
    assert r.exit_code == 0, r.output
    files = json.loads(r.stdout)[-1]["files"]
    names = sorted(p.split("/")[-1] for p in files)
    assert "photo-activation-a.png" in names and "photo-activation-b.npz" in names
    assert "photo-activation-compare.png" in names
    assert Image.open(out / "photo-activation-a.png").size == (56, 40)
    assert np.load(out / "photo-activation-a.npz")["heat"].shape == (40, 56)


def test_maskout_writes_the_probability_map(cli):
    invoke, root = cli
    out = root / "mo"
    r = invoke("maskout", str(root / "photo.jpg"), "-b", "a", "--target", "5", "--size", "8", "--stride", "8",
               "-o", str(out))
    assert r.exit_code == 0, r.output
    assert "unmasked p(5)" in r.stdout and (out / "photo-maskout.png").exists()
    probs = np.load(out / "photo-maskout.npz")["probs"]
    assert probs.shape == (4, 4) and ((0 <= probs) & (probs <= 1)).all()
    assert f"drawn on the relative scale {probs.min():.4g}..{probs.max():.4g}" in r.stdout
    legend = json.loads((out / "photo-maskout.json").read_text())["legend"]
    assert (legend["scale"], legend["low"], legend["high"]) == ("relative", probs.min(), probs.max())
    r = invoke("maskout", str(root / "photo.jpg"), "-b", "a", "--target", "5", "--size", "8", "--stride", "8",
               "--scale", "drop", "-o", str(root / "mo-drop"), "--json")
    assert r.exit_code == 0, r.output
    drop = json.loads(r.stdout)[0]
    assert drop["cached"] and drop["legend"]["scale"] == "drop" and "drop in p(5)" in drop["legend"]["label"]
    assert Image.open(root / "mo-drop" / "photo-maskout.png").size[1] > 40  # the colour bar under the image
    r = invoke("maskout", str(root / "photo.jpg"), "-b", "a", "--target", "5", "--size", "8", "--stride", "8",
               "--approx-margin", "1000", "-o", str(root / "mo-approx"), "--json")
    assert r.exit_code == 0, r.output
    assert "approximate" in r.stdout  # a margin that does not bind gives the exact map
    np.testing.assert_allclose(np.load(root / "mo-approx" / "photo-maskout.npz")["probs"], probs, rtol=0, atol=1e-6)


def test_map_errors_exit_2(cli):
    invoke, root = cli
    r = invoke("maskout", str(root / "photo.jpg"), "-b", "a", "--target", "5", "--size", "64")
    assert r.exit_code == 2 and "larger than the network" in r.output and "Traceback" not in r.output
    r = invoke("maskout", str(root / "photo.jpg"), "-b", "a", "--target", "5000", "--size", "8")
    assert r.exit_code == 2 and "unknown class" in r.output
    r = invoke("heatmap", str(root / "nope.jpg"), "-b", "a")
    assert r.exit_code == 2 and "image file" in r.output
    r = invoke("maskout", str(root / "photo.jpg"), "-b", "a", "--target", "5", "--size", "8", "--scale", "log")
    assert r.exit_code == 2 and "scale must be one of relative, absolute, drop" in r.output
    r = invoke("maskout", str(root / "photo.jpg"), "-b", "a", "--target", "5", "--size", "8", "--fill", "mean")
    assert r.exit_code == 2 and "needs mean_pixel" in r.output
    r = invoke("maskout", str(root / "photo.jpg"), "-b", "a", "--target", "5", "--size", "8", "--fill", "mean",
               "--mean-pixel", "120,110")
    assert r.exit_code == 2 and "R,G,B" in r.output
