"""``/detections`` and the Table 2/3/Fig. 2 blocks of ``/runs`` on hand-made runs: two detection fine-tuning runs
whose ``detections.json`` and evaluations are written by the test (so every drawn box and count is known)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from featscope.frontend.pages import detections, runs

from .conftest import find, make_services, text_of

BINS = [("none", 0.0, 0.01), ("low", 0.01, 0.25), ("medium", 0.25, 0.5), ("high", 0.5, 1.0)]


def _missed(rates: dict[str, tuple[int, int]]) -> dict:
    return {"iou": 0.5, "score": 0.5, "n_objects": sum(n for _, n in rates.values()),
            "bins": [{"name": n, "low": lo, "high": hi, "objects": rates[n][1], "missed": rates[n][0],
                      "rate": rates[n][0] / rates[n][1] if rates[n][1] else None} for n, lo, hi in BINS]}


def _run(ctx, run_dir: Path, *, name: str, task: str, dataset_id: int | None, init: str, result: dict,
         classes: list[str], config: dict | None = None, doc: dict | None = None) -> int:
    from featscope.catalog import Run

    run_dir.mkdir(parents=True, exist_ok=True)
    if doc is not None:
        (run_dir / "detections.json").write_text(json.dumps(doc))
    with ctx.session() as s:
        row = Run(name=name, task=task, key=f"test-{name}", state="done", config=config or {}, dataset_id=dataset_id,
                  test_dataset_id=dataset_id, classes=classes, init=init, dir=str(run_dir), result=result)
        s.add(row)
        s.flush()
        return row.id


@pytest.fixture(scope="module")
def scene(tmp_path_factory, make_images):
    """Three images of a data set, and two detection runs on them: at 0.5, A misses the occluded red object of
    image 0 (its box there scores 0.2), B finds it; B misses image 1's blue object (not occluded). A has 3 of its
    4 boxes at 0.5 or more for 4 objects, so its operating score is its 4th best, 0.2 (B's stays 0.5): at those
    scores both find the red object. The stored evaluations are those of an older rule (score 0.5)."""
    from featscope.server.settings import ServerSettings
    from featscope.workspace import Workspace
    from featscope.workspace.datasets import readable_images

    root = tmp_path_factory.mktemp("det")
    allowed = root / "allowed"
    make_images(allowed / "imgs", {"red": 2, "blue": 1}, size=40)
    settings = ServerSettings(data_dir=root / "data", allowed_roots=[allowed], num_workers=0)
    ws = Workspace(settings)
    ds = ws.add_dataset(allowed / "imgs", name="shapes")
    rel = sorted(r.relpath for r in readable_images(ws.ctx, ds.id))
    truth = {rel[0]: [{"label": "red", "box": [2, 2, 20, 20], "occlusion": 0.3},
                      {"label": "blue", "box": [22, 22, 38, 38], "occlusion": 0.0}],
             rel[1]: [{"label": "blue", "box": [5, 5, 30, 30], "occlusion": 0.0}],
             rel[2]: [{"label": "red", "box": [0, 0, 40, 40], "occlusion": None}]}
    hit = {rel[0]: [{"label": "red", "box": [2, 2, 20, 20], "score": 0.8}],  # the occluded red
           "blue0": [{"label": "blue", "box": [22, 22, 38, 38], "score": 0.9}],
           rel[1]: [{"label": "blue", "box": [5, 5, 30, 30], "score": 0.6}],
           rel[2]: [{"label": "red", "box": [0, 0, 40, 40], "score": 0.7}]}

    def doc(preds: dict[str, list]) -> dict:
        return {"classes": ["blue", "red"], "score_floor": 0.05,
                "images": [{"relpath": r, "width": 40, "height": 40, "gt": truth[r], "pred": preds[r]} for r in rel]}

    doc_a = doc({rel[0]: hit["blue0"] + [{**hit[rel[0]][0], "score": 0.2}], rel[1]: hit[rel[1]], rel[2]: hit[rel[2]]})
    doc_b = doc({rel[0]: hit["blue0"] + hit[rel[0]], rel[1]: [], rel[2]: hit[rel[2]]})
    ap = {f"{t / 10:g}": 0.5 for t in range(1, 10)}
    per_class = {"blue": [0.6] * 9, "red": [0.2] * 9}
    # the pre-training runs the two fine-tunings start from; det-x never saw red (Table 2)
    cls_x = _run(ws.ctx, root / "runs" / "cls", name="cls-x", task="cls", dataset_id=None, init="", result={},
                 classes=["blue", "red"])
    det_x = _run(ws.ctx, root / "runs" / "det", name="det-x", task="det", dataset_id=None, init="", result={},
                 classes=["blue"], config={"holdout_classes": ["red"]})
    a = _run(ws.ctx, root / "runs" / "a", name="ft-a", task="finetune-det", dataset_id=ds.id,
             init=f"backbone cls-x (run:{cls_x})", classes=["blue", "red"], doc=doc_a,
             result={"test_images": 3, "eval": {"ap": ap, "per_class": per_class,
                                                 "missed_by_occlusion": _missed({"none": (1, 2), "low": (0, 0),
                                                                                 "medium": (1, 1), "high": (0, 0)})}})
    b = _run(ws.ctx, root / "runs" / "b", name="ft-b", task="finetune-det", dataset_id=ds.id,
             init=f"backbone det-x (run:{det_x})", classes=["blue", "red"], doc=doc_b,
             result={"test_images": 3, "eval": {"ap": {**ap, "0.7": 0.7}, "per_class": {"blue": [0.5] * 9,
                                                                                        "red": [0.9] * 9},
                                                 "missed_by_occlusion": _missed({"none": (1, 2), "low": (0, 0),
                                                                                 "medium": (0, 1), "high": (0, 0)})}})
    return make_services(ws, settings), a, b, rel, root


def test_without_two_runs_the_page_says_what_to_run(tmp_path):
    from featscope.server.settings import ServerSettings
    from featscope.workspace import Workspace

    settings = ServerSettings(data_dir=tmp_path / "data", num_workers=0)
    svc = make_services(Workspace(settings), settings)
    opts_a, a, opts_b, b, empty, body_style = detections.runs(svc, {})
    assert opts_a == [] and a is None and body_style == {"display": "none"}
    text = text_of(empty)
    assert "No two detection fine-tuning runs" in text and "featscope finetune det -b" in text and "make demo" in text


def test_the_pair_defaults_to_the_url_then_the_demo_then_the_newest(scene):
    svc, a, b, _, root = scene
    opts, va, _, vb, empty, style = detections.runs(svc, {})
    assert {o["value"] for o in opts} == {a, b} and (va, vb) == (a, b) and empty is None and style == {}
    assert "from cls-x" in next(o["label"] for o in opts if o["value"] == a)
    _, va, _, vb, _, _ = detections.runs(svc, {"a": b, "b": a})
    assert (va, vb) == (b, a)
    (Path(svc.settings.data_dir) / "demo.json").write_text(json.dumps({"runs": {"finetune-det-cls": b,
                                                                                 "finetune-det-det": a}}))
    try:
        _, va, _, vb, _, _ = detections.runs(svc, {})
        assert (va, vb) == (b, a)
    finally:
        (Path(svc.settings.data_dir) / "demo.json").unlink()


def test_images_all_and_the_fig8_picks(scene, monkeypatch):
    svc, a, b, rel, _ = scene
    options, value, shows, status = detections.images(svc, a, b, "all", 0.5, "one", None, None, None, {})
    assert [o["value"] for o in options] == rel and value == rel[0]
    assert "only B finds an occluded one" in options[0]["label"] and "missed 1 (A) 0 (B)" in options[0]["label"]
    assert [s["label"] for s in shows] == ["all common test images (3)", "only B finds an occluded object (1)",
                                           "only A finds an occluded object (0)"]
    assert "Image 1 of 3" in status
    options, value, _, _ = detections.images(svc, a, b, "only-b", 0.5, "one", None, None, None, {})
    assert [o["value"] for o in options] == [rel[0]] and value == rel[0]
    # at 0.15 A's low-scoring red box counts: nobody finds an occluded object the other misses
    options, value, _, status = detections.images(svc, a, b, "only-b", 0.15, "one", None, None, None, {})
    assert options == [] and value is None and "No image of this kind" in text_of(status)
    # the URL's image first; Next and Previous step through the list, wrapping around
    assert detections.images(svc, a, b, "all", 0.5, "one", None, None, None, {"image": rel[2]})[1] == rel[2]
    monkeypatch.setattr(detections, "triggered_id", lambda: "det-next")
    assert detections.images(svc, a, b, "all", 0.5, "one", None, 1, rel[2], {})[1] == rel[0]
    monkeypatch.setattr(detections, "triggered_id", lambda: "det-prev")
    assert detections.images(svc, a, b, "all", 0.5, "one", 1, 1, rel[0], {})[1] == rel[2]


def test_images_at_each_runs_operating_score(scene):
    """The page's default (and the study page's Fig. 8): A at 0.2 finds the occluded red object too."""
    svc, a, b, rel, _ = scene
    options, value, shows, status = detections.images(svc, a, b, "all", 0.5, "own", None, None, None, {})
    assert [o["value"] for o in options] == rel and "missed 0 (A) 0 (B)" in options[0]["label"]
    assert "missed 0 (A) 1 (B)" in options[1]["label"]
    assert [s["label"] for s in shows][1:] == ["only B finds an occluded object (0)",
                                               "only A finds an occluded object (0)"]
    assert "at each run's operating score (A >= 0.2, B >= 0.5), only B finds an occluded object in 0" in status
    options, _, _, status = detections.images(svc, a, b, "only-b", 0.5, "own", None, None, None, {})
    assert options == [] and "at the runs' operating scores; show all images, or choose one threshold" in text_of(status)
    assert detections.slider_enabled("own") is True and detections.slider_enabled("one") is False


def test_draw_shows_each_detectors_boxes_and_what_it_misses(scene):
    svc, a, b, rel, _ = scene
    fig_a, data_a, fig_b, data_b, sum_a, sum_b, name_a, name_b = detections.draw(svc, a, b, rel[0], 0.5, "one")
    shapes_a, shapes_b = fig_a["layout"]["shapes"], fig_b["layout"]["shapes"]
    # A: 2 objects + 1 box above 0.5 (its red box scores 0.2); B: 2 objects + 2 boxes
    assert len(shapes_a) == 3 and len(shapes_b) == 4
    missed_a = [s for s in shapes_a if s["line"].get("dash") == "dash"]
    assert [(s["x0"], s["y0"], s["line"]["color"]) for s in missed_a] == [(2, 2, detections.MISSED)]
    assert not [s for s in shapes_b if s["line"].get("dash") == "dash"]
    notes_a = [n["text"] for n in fig_a["layout"]["annotations"]]
    assert notes_a == ["blue 0.90", "missed red · 30% hidden"]  # the missed object's label on top
    assert sorted(n["text"] for n in fig_b["layout"]["annotations"]) == ["blue 0.90", "red 0.80"]
    assert fig_a["layout"]["images"][0]["source"].startswith("data:image/jpeg;base64,")
    assert fig_a["layout"]["xaxis"]["range"] == [0, 40] and fig_a["layout"]["yaxis"]["range"] == [40, 0]
    assert sum_a == "1 boxes at score >= 0.5; missed 1 of 2 objects (1 of them occluded)"
    assert sum_b == "2 boxes at score >= 0.5; missed 0 of 2 objects"
    assert "from cls-x" in name_a and "from det-x" in name_b
    assert [r["found"] for r in data_a["rows"] if r["kind"] == "ground truth"] == [False, True]
    assert len(data_b["rows"]) == 4
    lower = detections.draw(svc, a, b, rel[0], 0.1, "one")
    assert len(lower[0]["layout"]["shapes"]) == 4 and "missed 0 of 2" in lower[4]
    # each at its operating score: A's red box at 0.2 is drawn and finds the occluded object; B as at 0.5
    own = detections.draw(svc, a, b, rel[0], 0.9, "own")  # the slider's value plays no part
    assert own[4] == "2 boxes at score >= 0.2; missed 0 of 2 objects" and own[5] == sum_b
    assert own[1]["meta"]["score"] == 0.2 and own[3]["meta"]["score"] == 0.5


def test_bad_choices_are_explained(scene):
    svc, a, b, rel, root = scene
    seg = _run(svc.ctx, root / "runs" / "seg", name="seg", task="finetune-seg", dataset_id=None, init="", result={},
               classes=[])
    status = detections.images(svc, a, seg, "all", 0.5, "one", None, None, None, {})[3]
    assert "is a finetune-seg run; choose a detection fine-tuning run" in text_of(status)
    fig = detections.draw(svc, a, b, "nowhere.png", 0.5, "one")[0]
    assert fig["data"] == [] and "no longer in the catalog" in fig["layout"]["annotations"][0]["text"]
    assert detections.draw(svc, None, b, rel[0], 0.5, "one")[1] is None


def test_table3_of_the_pair(scene):
    """Recounted from each run's detections.json at its operating score (A 0.2, B 0.5), not its stored rates."""
    svc, a, b, _, _ = scene
    table = detections.table3(svc, a, b)
    rows = find(table, lambda c: type(c).__name__ == "Tr")
    text = [text_of(r) for r in rows]
    assert text[0] == "Occlusion A · from cls-x B · from det-x"
    assert text[1] == "none 0-1% hidden 0.0% 0 of 2 50.0% 1 of 2"
    assert text[3] == "medium 25-50% hidden 0.0% 0 of 1 0.0% 0 of 1"
    assert text[2] == "low 1-25% hidden — 0 of 0 — 0 of 0"  # an empty bin has no rate
    assert text[5] == "judged at score 0.2 (its N-th best) score 0.5"  # A: 4 boxes for 4 objects, its 4th best
    note = text_of(table)
    assert ("a run with fewer than N boxes scoring 0.5 (N = its test set's objects) is judged at its N-th best box "
            "score (its lowest, when it has fewer than N boxes)") in note
    assert "A run that stays at 0.5 may keep more than N boxes." in note
    assert "recorded before per-detector thresholds" not in note  # both runs were recounted from their files


def test_runs_page_table2_table3_and_fig2(scene):
    svc, a, b, _, root = scene
    bands = [{"width": w, "accuracy": acc, "pixels": 10} for w, acc in ((1, 0.5), (2, 0.6), (4, None))]
    seg = _run(svc.ctx, root / "runs" / "seg-c", name="seg-c", task="finetune-seg", dataset_id=None,
               init="backbone cls-x (run:1)", classes=[], result={"eval": {"miou": 0.4, "trimap": bands,
                                                                          "anti_trimap": bands}})
    table2, table3, fig2, fig2_data = runs.study_results(svc, None)
    text = text_of(table2)
    # det-x held out red; the fine-tuning from it beside the one from cls-x on the same data
    assert "never saw red" in text and "AP@0.7 on red AP@0.7 on the other classes AP@0.7, all" in text
    assert f"{a} · from cls-x 20.0% 60.0% 50.0% {b} · from det-x (without them) 90.0% 50.0% 70.0%" in text
    assert "medium 25-50% hidden 0.0% 0 of 1 0.0% 0 of 1" in text_of(table3)
    # a run that kept no boxes shows its stored rates, labelled as counted at the old fixed 0.5 (no "N-th best")
    old = _run(svc.ctx, root / "runs" / "old", name="ft-old", task="finetune-det", dataset_id=None,
               init="backbone cls-x (run:1)", classes=["blue", "red"],
               result={"eval": {"missed_by_occlusion": _missed({"none": (1, 4), "low": (2, 2), "medium": (1, 1),
                                                                "high": (0, 0)})}})
    occlusion = text_of(runs.study_results(svc, None)[1])
    assert f"{old} · from cls-x" in occlusion
    assert "none 0-1% hidden 0.0% 0 of 2 50.0% 1 of 2 25.0% 1 of 4" in occlusion
    assert ("judged at score 0.2 (its N-th best) score 0.5 fixed score 0.5 (recorded before per-detector "
            "thresholds)") in occlusion
    assert ("A run recorded before per-detector thresholds that kept no detections.json shows its stored rates at "
            "the fixed score 0.5") in occlusion
    assert [t["name"] for t in fig2["data"]] == [f"{seg} · from cls-x · trimap", f"{seg} · from cls-x · anti-trimap"]
    assert fig2["data"][0]["x"] == [1, 2] and fig2["data"][0]["y"] == [0.5, 0.6]  # 4 px: no pixel, no point
    assert fig2["data"][0]["line"]["dash"] == "solid" and fig2["data"][1]["line"]["dash"] == "dash"
    assert len(fig2_data["rows"]) == 4
    finetune = text_of(runs.finetune_table(svc.ws.runs(), {}))
    assert f"{seg} · seg-c finetune-seg cls-x" in finetune and "40.0%" in finetune  # the mIoU column


def test_runs_page_table2_says_what_to_do_without_held_out_classes(tmp_path):
    assert "holdout_classes" in text_of(runs.heldout_tables([]))


def test_the_score_mode_follows_the_url():
    """Without ``score`` in the URL (the study page's Fig. 8 link) each run is shown at its operating score; a
    ``score`` sets the one threshold for both."""
    def controls(page):
        by_id = {c.id: c for c in find(page, lambda c: getattr(c, "id", None) in ("det-mode", "det-score"))}
        return by_id["det-mode"].value, by_id["det-score"].value, by_id["det-score"].disabled

    assert controls(detections.layout(a="1", b="2", show="only-b")) == ("own", 0.5, True)
    assert controls(detections.layout(score="0.3")) == ("one", 0.3, False)
    assert controls(detections.layout(score="nonsense")) == ("own", 0.5, True)
