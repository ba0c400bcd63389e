"""/api/v1/runs: start a training run (a job) after checking it, list, show with metrics, cancel; errors."""

from __future__ import annotations

from .conftest import run_queued  # noqa: F401 - tests/server is imported as a package under importlib mode

API = "/api/v1"
TINY = {"arch": "resnet18", "image_size": 32, "batch_size": 4, "epochs": 1, "num_workers": 0, "checkpoint_every": 2,
        "log_every": 1, "lr": 0.005, "threads": 1}


def test_run_errors_before_any_job(client):
    n_jobs = client.get(f"{API}/jobs").json()["total"]
    cases = [({"task": "det", "dataset": "shapes"}, 400, "no object boxes"),
             ({"task": "cls", "dataset": "shapes", "classes": ["a", "zebra"]}, 400, "unknown class"),
             ({"task": "cls", "dataset": "shapes", "params": {"learning_rate": 1}}, 400, "unknown training parameter"),
             ({"task": "cls", "dataset": "shapes", "params": {"lr": "fast"}}, 400, "not a valid float"),
             ({"task": "cls", "dataset": "nope"}, 404, "no data set 'nope'"),
             ({"task": "cls", "dataset": "shapes", "preset": "huge"}, 422, None),
             ({"task": "seg", "dataset": "shapes"}, 422, None),
             ({"task": "cls", "dataset": "shapes", "holdout_classes": ["zebra"]}, 400,
              "cannot hold out unknown class(es) 'zebra'")]
    for body, status, detail in cases:
        r = client.post(f"{API}/runs", json=body)
        assert r.status_code == status, (body, r.text)
        if detail:
            assert detail in r.json()["detail"] and "--" not in r.json()["detail"]  # no CLI flags in REST errors
    r = client.post(f"{API}/runs/finetune", json={"task": "cls", "backbone": "nope", "dataset": "shapes"})
    assert r.status_code == 404 and "no backbone 'nope'" in r.json()["detail"]
    r = client.post(f"{API}/runs/finetune", json={"task": "seg", "backbone": "r18a", "dataset": "shapes"})
    assert r.status_code == 400 and "has no segmentation masks" in r.json()["detail"], r.text
    assert client.get(f"{API}/runs/999").status_code == 404
    assert client.get(f"{API}/jobs").json()["total"] == n_jobs


def test_start_list_show_and_cancel(client, world):
    r = client.post(f"{API}/runs", json={"task": "cls", "dataset": "shapes", "params": TINY})
    assert r.status_code == 202 and r.json()["kind"] == "train" and r.json()["state"] == "queued"
    job_id = r.json()["id"]
    assert run_queued(client) >= 1
    job = client.get(f"{API}/jobs/{job_id}").json()
    assert job["state"] == "done", job
    run_id = job["result"]["run"]
    listing = client.get(f"{API}/runs").json()
    assert listing["total"] >= 1 and run_id in [r["id"] for r in listing["items"]]
    assert client.get(f"{API}/runs", params={"task": "det"}).json()["items"] == []
    show = client.get(f"{API}/runs/{run_id}").json()
    assert show["state"] == "done" and show["task"] == "cls" and show["job_id"] == job_id
    train_rows = [m for m in show["metrics"] if m["kind"] == "train"]
    assert train_rows and {"loss", "lr", "images_per_second"} <= set(train_rows[0])
    thin = client.get(f"{API}/runs/{run_id}", params={"max_points": 2}).json()
    assert len([m for m in thin["metrics"] if m["kind"] == "train"]) <= 3
    assert client.get(f"{API}/backbones/{show['backbone_id']}").status_code == 200
    r = client.get(f"{API}/runs/{run_id}/detections")
    assert r.status_code == 404 and "only detection fine-tuning runs keep their test-set boxes" in r.json()["detail"]
    assert client.get(f"{API}/runs", params={"task": "finetune-seg"}).json()["items"] == []
    r = client.post(f"{API}/runs/{run_id}/cancel")  # a finished run stays finished
    assert r.status_code == 200 and r.json()["state"] == "done"
    r = client.post(f"{API}/runs/finetune", json={"task": "cls", "backbone": show["name"], "dataset": "shapes",
                                                 "params": TINY})
    assert r.status_code == 202 and r.json()["kind"] == "finetune"


def test_a_runs_table3_is_recounted_from_its_boxes(client, world, old_rule_run):
    """Show and list give Table 3 recounted from detections.json (as the dashboard and `runs show` do), not the
    old rule's stored rates."""
    run_id = old_rule_run(world.ws, world.root / "runs" / "ft-old", "backbone r18a")
    show = client.get(f"{API}/runs/{run_id}").json()
    missed = show["result"]["eval"]["missed_by_occlusion"]
    assert missed["score"] == 0.3 and missed["score_ceiling"] == 0.5 and missed["n_missed"] == 2
    assert [b["rate"] for b in missed["bins"]] == [1.0, None, 0.0, None]  # stored: 1.0 at medium
    assert show["result"]["eval"]["ap"] == {"0.5": 0.25} and show["result"]["iterations"] == 4
    listed = {r["id"]: r for r in client.get(f"{API}/runs", params={"task": "finetune-det"}).json()["items"]}
    assert listed[run_id]["result"]["eval"]["missed_by_occlusion"] == missed
    # the stored row is unchanged
    assert world.ws.run(run_id).result["eval"]["missed_by_occlusion"] == old_rule_run.stored
