"""`featscope train|finetune|runs` in-process: refusals with exit code 2, a run end to end, the runs verbs.
(Real processes, SIGKILL and `--devices 2` are in tests/training/test_training_processes.py.)"""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from featscope.cli import app

TINY = ["--workers", "0", "--image-size", "64", "--batch-size", "4", "--epochs", "1", "--lr", "0.005",
        "--set", "threads=1", "--set", "roi_size=4", "--set", "proj_channels=8", "--set", "fc_dim=16",
        "--set", "max_size=64", "--set", "rois_per_image=8"]


@pytest.fixture
def run(tmp_path, monkeypatch):
    monkeypatch.setenv("FEATSCOPE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("FEATSCOPE_NUM_WORKERS", "0")
    import featscope.cli as cli

    def invoke(*args: str):
        cli._state.clear()
        return CliRunner().invoke(app, list(args))

    return invoke


def test_training_refusals_exit_2(run, image_folder):
    assert run("dataset", "add", str(image_folder), "--name", "imgs").exit_code == 0
    cases = [(["train", "det", "-d", "imgs"], "no object boxes"),
             (["train", "cls", "-d", "imgs", "--preset", "huge"], "unknown preset 'huge'"),
             (["train", "cls", "-d", "imgs", "--set", "lr"], "--set takes KEY=VALUE"),
             (["train", "cls", "-d", "imgs", "--set", "colour=red"], "unknown training parameter 'colour'"),
             (["train", "cls", "-d", "imgs", "--class", "zebra"], "unknown class(es) 'zebra'"),
             (["finetune", "det", "-b", "nope", "-d", "imgs"], "no backbone 'nope'"),
             (["runs", "show", "9"], "no training run 9"),
             (["runs", "export", "9", "-o", "x.pth"], "no training run 9"),
             (["train", "cls", "-d", "imgs", "--devices", "2", "--background"], "drop --background"),
             (["train", "cls", "-d", "imgs", "--holdout", "zebra"], "cannot hold out unknown class(es) 'zebra'"),
             (["finetune", "seg", "-b", "nope", "-d", "imgs"], "no backbone 'nope'")]
    for args, message in cases:
        r = run(*args)
        assert r.exit_code == 2 and message in r.output and "Traceback" not in r.output, (args, r.output)
    r = run("runs", "list")
    assert r.exit_code == 0 and "no runs yet" in r.output


def test_train_then_the_runs_verbs(run, tmp_path, make_images):
    folder = make_images(tmp_path / "colours", {"red": 6, "green": 6}, size=48)
    assert run("dataset", "add", str(folder), "--name", "colours").exit_code == 0
    r = run("train", "cls", "-d", "colours", "--name", "tiny-cls", *TINY)
    assert r.exit_code == 0, r.output
    assert "run 1 tiny-cls: done" in r.output and "registered as backbone 'tiny-cls' (run:1)" in r.output
    r = run("train", "cls", "-d", "colours", "--name", "tiny-cls", *TINY)
    assert "already trained (cached)" in r.output
    r = run("finetune", "cls", "-b", "tiny-cls", "-d", "colours", *TINY)
    assert r.exit_code == 0 and "top-1" in r.output, r.output
    listed = json.loads(run("runs", "list", "--json").output)
    assert [(x["id"], x["task"], x["state"]) for x in listed] == [(2, "finetune-cls", "done"), (1, "cls", "done")]
    r = run("runs", "show", "tiny-cls")
    assert r.exit_code == 0 and "from random trunk (seed 0, no zero-init residuals)" in r.output and "last logged: iteration 3" in r.output
    r = run("runs", "metrics", "1", "--kind", "train")
    assert r.exit_code == 0 and r.output.splitlines()[0].startswith("kind,iteration,epoch,loss")
    r = run("runs", "compare", "1", "2")
    assert r.exit_code == 2 and "no evaluation yet for tiny-cls" in r.output
    out = tmp_path / "export" / "tiny.pth"
    assert run("runs", "export", "1", "-o", str(out)).exit_code == 0
    assert set(torch.load(out, weights_only=True)) >= {"conv1.weight", "fc.weight"}
    r = run("runs", "cancel", "1")
    assert r.exit_code == 0 and "run 1 tiny-cls: done" in r.output
    r = run("runs", "params", "--task", "det", "--preset", "paper", "--json")
    params = {p["parameter"]: p["value"] for p in json.loads(r.output)}
    assert params["arch"] == "resnet101" and params["roi_size"] == 14 and params["proj_channels"] == 256


def test_a_cancelled_foreground_run_exits_130_and_resumes(run, tmp_path, make_images, monkeypatch):
    from featscope.training.runs import RunStore
    from featscope.workspace import training

    folder = make_images(tmp_path / "colours", {"red": 6, "green": 6}, size=48)
    assert run("dataset", "add", str(folder), "--name", "colours").exit_code == 0
    monkeypatch.setattr(training, "_HEARTBEAT_SECONDS", 0.0)
    asked = {"n": 0, "cancel": True}
    real = RunStore.heartbeat

    def heartbeat(self, run_id, **values):  # `featscope runs cancel 1` from another shell, as seen by the run
        asked["n"] += 1
        return real(self, run_id, **values) or (asked["cancel"] and asked["n"] >= 3)

    monkeypatch.setattr(RunStore, "heartbeat", heartbeat)
    args = ["train", "cls", "-d", "colours", *TINY, "--epochs", "3", "--checkpoint-every", "1"]
    r = run(*args)
    assert r.exit_code == 130 and "cancelled: the last checkpoint is kept" in r.output, r.output
    asked["cancel"] = False
    r = run(*args)
    assert r.exit_code == 0 and "resumed from the checkpoint at iteration 2 of 9" in r.output, r.output


def test_held_out_classes_are_shown(run, tmp_path, make_images):
    folder = make_images(tmp_path / "colours", {"red": 4, "green": 4, "blue": 4}, size=32)
    assert run("dataset", "add", str(folder), "--name", "colours").exit_code == 0
    r = run("train", "cls", "-d", "colours", "--holdout", "blue", *TINY)
    assert r.exit_code == 0, r.output
    r = run("runs", "show", "1")
    assert "classes: green, red;" in r.output and "held out of pre-training: blue" in r.output, r.output
    assert json.loads(run("runs", "show", "1", "--json").output)["config"]["holdout_classes"] == ["blue"]


def test_runs_json_and_train_output_give_the_recounted_table3(run, tmp_path, capsys, old_rule_run):
    """`runs show --json`, `runs list --json`, `runs show` and the train verbs' summary all give Table 3 recounted
    from detections.json, as the dashboard and the REST API do, not a run's old-rule stored rates."""
    from featscope.cli.train import _print_run
    from featscope.config import Settings
    from featscope.workspace import Workspace

    run_id = old_rule_run(Workspace(Settings(data_dir=tmp_path / "data", num_workers=0)),
                          tmp_path / "runs" / "ft-old", "backbone cls-x (run:1)")
    r = run("runs", "show", str(run_id), "--json")
    assert r.exit_code == 0, r.output
    missed = json.loads(r.output)["result"]["eval"]["missed_by_occlusion"]
    assert missed["score"] == 0.3 and missed["score_ceiling"] == 0.5
    assert [b["rate"] for b in missed["bins"]] == [1.0, None, 0.0, None]  # stored: 1.0 at medium
    assert json.loads(r.output)["result"]["eval"]["ap"] == {"0.5": 0.25}
    r = run("runs", "list", "--json")
    assert r.exit_code == 0 and json.loads(r.output)[0]["result"]["eval"]["missed_by_occlusion"] == missed
    r = run("runs", "show", str(run_id))
    text = " ".join(r.output.replace("│", " ").split())  # the table's cells, whatever the terminal's width
    assert r.exit_code == 0 and "(IoU >= 0.5; score 0.3 (its lowest))" in text, r.output
    assert "medium 0.25-0.5 1 0 0.0000" in text and "medium 0.25-0.5 1 1 1.0000" not in text
    info = Workspace(Settings(data_dir=tmp_path / "data", num_workers=0)).run(run_id)
    assert info.result["eval"]["missed_by_occlusion"] == old_rule_run.stored  # stored unchanged
    capsys.readouterr()
    _print_run(info, False)
    printed = " ".join(capsys.readouterr().out.split())
    assert "missed objects by occlusion (score 0.3 (its lowest)): none: 1.000 (1/1) medium: 0.000 (0/1)" in printed
    _print_run(info, True)
    assert json.loads(capsys.readouterr().out)[0]["result"]["eval"]["missed_by_occlusion"] == missed
    # with no detections.json left, the stored rates, labelled as the old fixed threshold
    (tmp_path / "runs" / "ft-old" / "detections.json").unlink()
    r = run("runs", "show", str(run_id))
    text = " ".join(r.output.replace("│", " ").split())
    assert "fixed score 0.5 (recorded before per-detector thresholds)" in text and "N-th" not in text, r.output
    assert "medium 0.25-0.5 1 1 1.0000" in text
