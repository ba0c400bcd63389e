"""The ``/study`` and ``/runs`` callbacks: empty states on a data dir without a demo, then the tiny demo's data."""

from __future__ import annotations

from featscope.demo.pipeline import STAGES
from featscope.frontend.pages import runs, study

from .conftest import find, make_services, text_of


def _svc(data_dir):
    from featscope.server.settings import ServerSettings
    from featscope.workspace import Workspace

    settings = ServerSettings(data_dir=data_dir)
    return make_services(Workspace(settings), settings)


def test_empty_states_say_what_to_do(tmp_path):
    svc = _svc(tmp_path / "data")
    summary, table, pipeline, poll_off = study.show(svc, None)
    assert "No demo in this data dir yet" in text_of(table) and "make demo" in text_of(table) and poll_off
    out = runs.overview(svc, None)
    assert "No training runs yet" in text_of(out[0]) and "featscope train cls" in text_of(out[0])
    assert out[-1] is True  # nothing runs: no polling
    loss, _, lr, _, ev, _ = runs.curves(svc, None, None)
    assert loss["data"] == [] and ev["data"] == []


def test_study_page_shows_the_computed_findings(tiny_demo):
    from featscope.analysis.findings import ORDER
    from featscope.demo.pipeline import read_manifest
    from featscope.demo.study import study_findings

    _, data_dir, _ = tiny_demo
    svc = _svc(data_dir)
    summary, table, pipeline, poll_off = study.show(svc, None)
    assert poll_off  # the demo is done
    rows = find(table, lambda c: getattr(c, "id", "") and str(c.id).startswith("study-row-"))
    assert [r.id for r in rows] == [f"study-row-{k}" for k in ORDER]
    expected = study_findings(svc.ws, read_manifest(data_dir))
    for row, f in zip(rows, expected):
        text = text_of(row)
        assert f.title in text and f.study in text and f.measured in text and text.endswith(f"{f.verdict} open")
        assert find(row, lambda c: getattr(c, "href", None) == f.link)
    n_yes = sum(f.verdict == "reproduced" for f in expected)
    assert f"Reproduced {n_yes} " in text_of(summary)
    assert text_of(pipeline).count("jobs finished") == len(STAGES)


def test_runs_page_curves_ap_and_tables(tiny_demo):
    from featscope.demo.pipeline import read_manifest

    _, data_dir, _ = tiny_demo
    svc = _svc(data_dir)
    m = read_manifest(data_dir)
    table, options, finetune, ap_fig, ap_data, poll_off = runs.overview(svc, None)
    assert poll_off and len(options) == 12  # cls, det, det without a class; 2 + 2 + 2 + 3 fine-tunings
    text = text_of(table)
    for role in ("cls", "det"):
        assert f"{m['backbones'][role]} run:{m['runs'][role]}" in text  # the registered backbone of each run
    on_target = [tr for tr in ap_fig["data"] if tr["name"].endswith(" on study-target-test")]
    assert len(on_target) == 2 and len(ap_fig["data"]) == 5  # Fig. 1: from cls and from det; Table 2's three
    assert all(tr["x"] == [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9] for tr in on_target)
    tasks = [c.children for c in find(finetune, lambda c: type(c).__name__ == "Td" and c.children in
                                      ("finetune-det", "finetune-cls", "finetune-seg"))]
    assert sorted(tasks) == ["finetune-cls"] * 2 + ["finetune-det"] * 5 + ["finetune-seg"] * 2
    table2, table3, fig2, _ = runs.study_results(svc, None)
    assert "never saw star" in text_of(table2) and "(without them)" in text_of(table2)
    assert "medium" in text_of(table3)
    assert len(fig2["data"]) == 4  # trimap and anti-trimap of both segmentation runs
    loss, loss_data, lr, _, ev, ev_data = runs.curves(svc, None, None)
    assert len(loss["data"]) == 3 and len(lr["data"]) == 3  # the pre-training runs by default: cls, det, det without star
    metrics = svc.ws.run_metrics(m["runs"]["cls"], kind="train")
    cls_trace = next(t for t in loss["data"] if t["name"].startswith(f"{m['runs']['cls']} "))
    assert cls_trace["y"] == [r["loss"] for r in metrics]
    assert {r["metric"] for r in ev_data["rows"]} == {"top-1", "mAP@0.5"}
    only = runs.curves(svc, [m["runs"]["finetune-det-det"]], None)[0]
    assert len(only["data"]) == 1


def test_study_page_follows_a_running_demo(tmp_path):
    import json

    from featscope.worker import jobs

    svc = _svc(tmp_path / "data")
    job = jobs.submit(svc.ctx, "dataset-study", {"n_pretrain": 10}, queue=svc.queue)  # queued: no worker runs here
    manifest = {"version": 1, "profile": "tiny", "state": "running", "study_name": "study", "stages": [
        {"name": "sets", "title": "generate the study sets", "state": "running",
         "jobs": [{"label": "study sets", "kind": "dataset-study", "job": job.id, "state": "queued"}]}]}
    (tmp_path / "data" / "demo.json").write_text(json.dumps(manifest))
    summary, table, pipeline, poll_off = study.show(svc, None)
    assert not poll_off  # keeps polling while the demo runs
    text = text_of(pipeline)
    assert "generate the study sets running · 0/1 jobs finished" in text and f"job {job.id}" in text
    assert "queued" in text
    assert "Not measured 16 waiting for the pipeline" in text_of(summary)
    jobs.cancel_job(svc.ctx, job.id, queue=svc.queue)
    assert study.show(svc, None)[3] is False  # the manifest still says running: the page keeps following it
