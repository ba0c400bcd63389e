"""Training runs through the workspace: refusals before any work, registration as run:<id>, its outputs
equal to the checkpoint's network, caching, export, fine-tuning, cancel and resume, Table 5 taps."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torchvision

from featscope.config import Settings
from featscope.workspace import Workspace

TINY = dict(arch="resnet18", image_size=64, max_size=64, batch_size=4, epochs=1, num_workers=0, roi_size=4,
            proj_channels=8, fc_dim=16, rois_per_image=8, rpn_batch_size_per_image=16, rpn_pre_nms_top_n_train=50,
            rpn_post_nms_top_n_train=20, rpn_pre_nms_top_n_test=50, rpn_post_nms_top_n_test=20,
            checkpoint_every=2, log_every=1, warmup_iters=2, lr=0.01, threads=1)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A workspace with the study sets at 64 px and one finished cls and det run."""
    root = tmp_path_factory.mktemp("training")
    ws = Workspace(Settings(data_dir=root / "data", num_workers=0, batch_size=4))
    ws.study_datasets(root / "sets", n_pretrain=12, n_pretrain_val=4, n_target_train=8, n_target_test=6, n_probe=2,
                      size=64)
    cls = ws.train("cls", "study-pretrain", val_dataset="study-pretrain-val", **TINY)
    det = ws.train("det", "study-pretrain", val_dataset="study-pretrain-val", **TINY)
    return ws, cls, det


def _no_runs(ws):
    assert ws.runs() == []


def test_refusals_before_any_work(tmp_path, make_images):
    ws = Workspace(Settings(data_dir=tmp_path / "data", num_workers=0))
    ws.add_dataset(make_images(tmp_path / "labelled", {"a": 3, "b": 3}), name="labelled")
    ws.add_dataset(make_images(tmp_path / "plain", {"x": 4}), name="plain", format="folder")
    cases = [
        (lambda: ws.train("det", "labelled"), "no object boxes; detection needs a COCO JSON or Pascal VOC"),
        (lambda: ws.train("cls", "plain"), "no image labels"),
        (lambda: ws.train("cls", "labelled", classes=["a", "zebra"]), r"unknown class\(es\) 'zebra'.*are a, b"),
        (lambda: ws.train("cls", "labelled", preset="huge"), "unknown preset 'huge'; choose one of cpu-demo, paper"),
        (lambda: ws.train("cls", "labelled", learning_rate=0.1), "unknown training parameter 'learning_rate'"),
        (lambda: ws.train("cls", "labelled", lr="fast"), "lr='fast' is not a valid float"),
        (lambda: ws.train("seg", "labelled"), "train task must be 'cls' or 'det'"),
        (lambda: ws.finetune("cls", "nope", "labelled"), "no backbone 'nope'"),
    ]
    for call, message in cases:
        with pytest.raises((ValueError, LookupError), match=message):
            call()
    ws.add_backbone("torchvision:resnet18", random_init=True, name="r18")
    with pytest.raises(ValueError, match="backbone 'r18' is a resnet18, the run a resnet50"):
        ws.finetune("cls", "r18", "labelled", arch="resnet50")
    with pytest.raises(ValueError, match="cannot split 'labelled' into train and test: .*train set will be empty"):
        ws.finetune("cls", "r18", "labelled", test_fraction=0.99)
    with pytest.raises(ValueError, match="test data set 'plain' has no image labels"):
        ws.finetune("cls", "r18", "labelled", test_dataset="plain")
    _no_runs(ws)
    assert not (tmp_path / "data" / "runs").exists() or not any((tmp_path / "data" / "runs").iterdir())


def test_a_run_is_a_backbone_equal_to_its_checkpoint(trained):
    from featscope.training.loop import load_checkpoint
    from featscope.training.models import build_classifier, build_detector

    ws, cls, det = trained
    assert cls.state == det.state == "done" and cls.backbone_id and det.backbone_id
    assert {b.spec for b in ws.backbones()} >= {f"run:{cls.id}", f"run:{det.id}"}
    x = torch.rand(2, 3, 64, 64)
    ckpt = load_checkpoint(Path(cls.dir) / "checkpoint.pt")
    net = build_classifier("resnet18", len(cls.classes))
    net.load_state_dict(ckpt["model"])
    bb = ws.load_backbone(cls.name)
    assert bb.fingerprint == cls.fingerprint and bb.class_names == cls.classes and bb.classifier is not None
    with torch.no_grad():
        torch.testing.assert_close(bb.model(x), net.eval()(x))

    ckpt = load_checkpoint(Path(det.dir) / "checkpoint.pt")
    detector = build_detector("resnet18", len(det.classes), frozen_bn=False, min_size=64, max_size=64,
                              roi_size=4, proj_channels=8, fc_dim=16, anchor_sizes=tuple(det.config["anchor_sizes"]))
    detector.load_state_dict(ckpt["model"])
    detector.eval()
    bb = ws.load_backbone(det.name)
    assert list(bb.taps) == ["layer1", "layer2", "layer3", "layer4", "convproj", "fc1", "fc2"]
    with torch.no_grad():
        pixels = x * torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1) + torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
        images, _ = detector.transform(list(pixels))
        whole = [torch.tensor([[0.0, 0.0, 64.0, 64.0]])] * 2
        rh = detector.roi_heads
        expected = rh.box_head(rh.box_roi_pool(detector.backbone(images.tensors), whole, images.image_sizes))
        torch.testing.assert_close(bb.model(x).flatten(1), expected, rtol=1e-4, atol=1e-5)


def test_same_request_is_cached_and_metrics_are_logged(trained):
    ws, cls, _ = trained
    again = ws.train("cls", "study-pretrain", val_dataset="study-pretrain-val", **{**TINY, "num_workers": 1})
    assert again.cached and again.id == cls.id  # loader workers do not change what is trained
    rows = ws.run_metrics(cls.id)
    train_rows = [r for r in rows if r["kind"] == "train"]
    assert [r["iteration"] for r in train_rows] == list(range(1, cls.iteration + 1))
    assert {"loss", "lr", "images_per_second", "epoch"} <= set(train_rows[0])
    assert [r for r in rows if r["kind"] == "eval"][0]["top1"] == cls.result["eval"]["top1"]


def test_export_torchvision_state_dicts(trained, tmp_path):
    ws, cls, det = trained
    sd = torch.load(ws.export_run(cls.id, tmp_path / "cls.pth"), weights_only=True)
    torchvision.models.resnet18(num_classes=len(cls.classes)).load_state_dict(sd)  # strict: every key
    sd = torch.load(ws.export_run(det.id, tmp_path / "det.pth"), weights_only=True)
    missing, unexpected = torchvision.models.resnet18().load_state_dict(sd, strict=False)
    assert sorted(missing) == ["fc.bias", "fc.weight"] and not unexpected
    with pytest.raises(ValueError, match="unknown export format"):
        ws.export_run(cls.id, tmp_path / "x", format="onnx")
    info = ws.add_backbone(f"checkpoint:{tmp_path / 'det.pth'}", name="det-trunk")
    assert info.arch == "resnet18"


def test_finetuning_from_both_backbones(trained):
    ws, cls, det = trained
    runs = [ws.finetune("det", b.name, "study-target-train", test_dataset="study-target-test", **TINY)
            for b in (cls, det)]
    for r in runs:
        assert r.task == "finetune-det" and r.state == "done" and r.backbone_id is None
        assert list(r.result["eval"]["ap"]) == [f"0.{i}" for i in range(1, 10)]
        assert r.classes == ["arrow", "diamond", "ellipse", "ring"]
    ft = ws.finetune("cls", det.name, "study-single", **TINY)  # deterministic split of the data set
    ev = ft.result["eval"]
    assert ft.result["test_images"] == ev["n"] > 0 and ev["ci_low"] <= ev["top1"] <= ev["ci_high"]
    assert ws.finetune("cls", det.name, "study-single", **TINY).cached


def test_cancel_then_resume(trained, monkeypatch):
    from featscope.training.runs import RunCancelled
    from featscope.workspace import training

    ws, _, _ = trained
    monkeypatch.setattr(training, "_HEARTBEAT_SECONDS", 0.0)
    params = {**TINY, "epochs": 2, "seed": 5}

    def cancel_at_3(p):
        if p.iteration == 3:
            run = [r for r in ws.runs() if r.state == "running"][0]
            ws.cancel_run(run.id)

    with pytest.raises(RunCancelled):
        ws.train("cls", "study-pretrain", progress=cancel_at_3, **params)
    stopped = [r for r in ws.runs() if r.config.get("seed") == 5][0]
    assert stopped.state == "cancelled" and "run it again" in stopped.message
    done = ws.train("cls", "study-pretrain", **params)
    assert done.id == stopped.id and done.state == "done" and done.result["resumed_from"] == 2


def test_table5_taps_of_a_detection_run(trained):
    ws, _, det = trained
    ws.extract(det.name, "study-single", taps=["conv5", "fc1", "fc2"], poolings=["avg"], num_workers=0)
    sets = ws.extract(det.name, "study-single", taps=["convproj"], poolings=["none", "grid4", "grid2", "avg"],
                      num_workers=0)
    assert [s.dim for s in sets] == [8 * 4 * 4, 8 * 16, 8 * 4, 8]
    rows = ws.probe_table([det.name], "study-single")
    assert {(r["tap"], r["pooling"]) for r in rows} == {("layer4", "avg"), ("fc1", "avg"), ("fc2", "avg"),
                                                         ("convproj", "none"), ("convproj", "grid4"),
                                                         ("convproj", "grid2"), ("convproj", "avg")}


def test_restart_of_a_finished_run_is_a_new_run(trained):
    ws, cls, _ = trained
    again = ws.train("cls", "study-pretrain", val_dataset="study-pretrain-val", restart=True, **TINY)
    assert again.id != cls.id and again.state == "done" and again.name == f"cls-resnet18-{again.id}"
    assert ws.load_backbone(cls.name).fingerprint == cls.fingerprint  # the first run's backbone is intact
    assert ws.train("cls", "study-pretrain", val_dataset="study-pretrain-val", **TINY).id == again.id


def _with_occlusion(ws, name: str = "target-test-occ"):
    """The target test set registered again with an ``occlusion`` on every object (0, 0.1, 0.3, 0.6, ...)."""
    import json

    sets = ws.ctx.settings.data_dir.parent / "sets"
    doc = json.loads((sets / "target-test.json").read_text())
    levels = [0.0, 0.1, 0.3, 0.6]
    for k, a in enumerate(doc["annotations"]):
        a["occlusion"] = levels[k % len(levels)]
    path = sets / f"{name}.json"
    path.write_text(json.dumps(doc))
    return ws.add_dataset(path, name=name, format="coco", images_root=sets / "target-test")


def test_detection_finetuning_keeps_its_test_boxes_and_missed_objects(trained):
    import numpy as np

    from featscope.training.errors import missed_by_occlusion
    from featscope.workspace import NotFound
    from featscope.workspace.datasets import readable_images
    from featscope.workspace.detection_errors import run_missed_by_occlusion

    ws, cls, det = trained
    test = _with_occlusion(ws)
    run = ws.finetune("det", det.name, "study-target-train", test_dataset=test.name, **TINY)
    doc = ws.run_detections(run.id)
    assert doc["classes"] == run.classes and doc["score_floor"] == 0.05
    images = {im.relpath: im for im in readable_images(ws.ctx, test.id)}
    assert len(doc["images"]) == len(images) and {d["relpath"] for d in doc["images"]} == set(images)
    n_objects = 0
    for d in doc["images"]:
        im = images[d["relpath"]]
        assert (d["width"], d["height"]) == (im.width, im.height)
        assert [[g["label"], *g["box"]] for g in d["gt"]] == [[b[0], *(round(v, 2) for v in b[1:5])] for b in im.boxes]
        assert [g["occlusion"] for g in d["gt"]] == [b[5] for b in im.boxes]
        assert all(p["score"] >= 0.05 and p["label"] in run.classes for p in d["pred"])
        assert [p["score"] for p in d["pred"]] == sorted((p["score"] for p in d["pred"]), reverse=True)
        n_objects += len(d["gt"])
    missed = run.result["eval"]["missed_by_occlusion"]
    assert (missed["iou"], missed["score_ceiling"], missed["n_objects"]) == (0.5, 0.5, n_objects)
    # the operating score: 0.5 when N boxes reach it, else the N-th best box (the lowest when fewer than N)
    scores = sorted((p["score"] for d in doc["images"] for p in d["pred"]), reverse=True)
    expected = 0.5 if not scores or sum(s >= 0.5 for s in scores) >= n_objects else \
        min(0.5, scores[min(n_objects, len(scores)) - 1])
    assert missed["score"] == expected  # counted from the file's own (rounded) scores
    assert [b["name"] for b in missed["bins"]] == ["none", "low", "medium", "high"]
    assert [b["objects"] for b in missed["bins"]] == [
        sum(1 for d in doc["images"] for g in d["gt"] if g["occlusion"] == v) for v in (0.0, 0.1, 0.3, 0.6)]
    # the same analysis from the stored file (boxes rounded to 0.01 px) gives the same counts
    index = {c: k + 1 for k, c in enumerate(doc["classes"])}

    def arrays(items, score):
        return {"boxes": np.array([x["box"] for x in items], float).reshape(-1, 4),
                "labels": np.array([index[x["label"]] for x in items], int),
                **({"scores": np.array([x["score"] for x in items], float)} if score else
                   {"occlusion": np.array([x["occlusion"] for x in items], float)})}

    again = missed_by_occlusion([arrays(d["gt"], False) for d in doc["images"]],
                                [arrays(d["pred"], True) for d in doc["images"]], score=missed["score"])
    assert [b["missed"] for b in again["bins"]] == [b["missed"] for b in missed["bins"]]
    recounted = run_missed_by_occlusion(run)  # what the dashboard and the study page show: from the file
    assert recounted == missed  # the stored rates were counted from the same document: equal by construction
    with pytest.raises(NotFound, match="only detection fine-tuning runs keep their test-set boxes"):
        ws.run_detections(cls.id)


def test_segmentation_finetuning(trained):
    ws, cls, det = trained
    seg = dict(TINY, lr=0.001)
    for call, message in [
            (lambda: ws.finetune("seg", det.name, "study-single", **seg), "has no segmentation masks"),
            (lambda: ws.finetune("seg", det.name, "study-target-train", classes=["ring"], **seg), "leave classes out"),
            (lambda: ws.finetune("seg", det.name, "study-target-train", **{**seg, "batch_size": 1}),
             "batch_size >= 2"),
            (lambda: ws.finetune("seg", det.name, "study-target-train", **{**seg, "output_stride": 16}),
             "resnet18 cannot dilate")]:
        with pytest.raises(ValueError, match=message):
            call()
    run = ws.finetune("seg", det.name, "study-target-train", test_dataset="study-target-test", **seg)
    names = ws.segmentation("study-target-train").classes
    assert run.task == "finetune-seg" and run.state == "done" and run.backbone_id is None
    assert run.classes == names and names[0] == "background" and run.result["train_images"] == 8
    assert sorted(names[1:]) == ["arrow", "diamond", "ellipse", "ring"]
    ev = run.result["eval"]
    assert {"miou", "pixel_accuracy", "per_class_iou", "trimap", "anti_trimap"} <= set(ev)
    assert list(ev["per_class_iou"]) == names and 0 <= ev["miou"] <= 1 and ev["n"] == 6
    assert [r["width"] for r in ev["trimap"]] == [1, 2, 4, 8] and all(r["pixels"] > 0 for r in ev["trimap"])
    assert [r["kind"] for r in ws.run_metrics(run.id)].count("eval") == 1
    assert ws.finetune("seg", det.name, "study-target-train", test_dataset="study-target-test", **seg).cached
    assert [r.id for r in ws.runs("finetune-seg")] == [run.id]


def _cli(ws, monkeypatch, *args):
    """``featscope ARGS`` on this workspace's data directory, in-process."""
    from typer.testing import CliRunner

    import featscope.cli as cli

    monkeypatch.setenv("FEATSCOPE_DATA_DIR", str(ws.ctx.settings.data_dir))
    cli._state.clear()
    return CliRunner().invoke(cli.app, list(args))


def test_runs_show_prints_segmentation_and_missed_objects(trained, monkeypatch):
    ws, _, det_run = trained  # the runs of the tests above (cached; trained here when run alone)
    seg = ws.finetune("seg", det_run.name, "study-target-train", test_dataset="study-target-test", **dict(TINY, lr=0.001))
    det = ws.finetune("det", det_run.name, "study-target-train", test_dataset="study-target-test", **TINY)
    r = _cli(ws, monkeypatch, "runs", "show", str(seg.id))
    ev = seg.result["eval"]
    assert r.exit_code == 0 and f"mIoU {ev['miou']:.4f}, pixel accuracy {ev['pixel_accuracy']:.4f}" in r.output
    assert "IoU per class" in r.output and "trimap" in r.output and "anti-trimap" in r.output, r.output
    from featscope.catalog import Run
    from featscope.workspace.detection_errors import run_missed_by_occlusion, threshold_words

    shown = run_missed_by_occlusion(det)  # recounted from its detections.json, as the dashboard shows it
    # the run's stored rates as a run recorded before the operating-score rule would hold them: other numbers
    stale = {"iou": 0.5, "score": 0.5, "bins": [{**b, "missed": b["objects"] + 7, "rate": 0.1234}
                                                for b in shown["bins"]]}
    with ws.ctx.session() as sess:
        row = sess.get(Run, det.id)
        row.result = {**row.result, "eval": {**row.result["eval"], "missed_by_occlusion": stale}}
    try:
        r = _cli(ws, monkeypatch, "runs", "show", str(det.id))
    finally:  # later tests find the run as it was trained
        with ws.ctx.session() as sess:
            sess.get(Run, det.id).result = det.result
    assert r.exit_code == 0 and "missed objects by occlusion" in r.output, r.output  # the study sets carry occlusion
    cells = " ".join(r.output.replace("│", " ").split())  # the table's cells, whatever the terminal's width
    for b in shown["bins"]:
        rate = "" if b["rate"] is None else f" {b['rate']:.4f}"
        assert f"{b['name']} {b['low']:g}-{b['high']:g} {b['objects']} {b['missed']}{rate}" in cells, r.output
    assert "0.1234" not in cells and any(b["rate"] not in (None, 0.1234) for b in shown["bins"])
    # the run's operating score and how it was chosen, in the table's title (which the terminal's width may wrap)
    assert f"(IoU >= 0.5; {threshold_words(shown)})" in cells, r.output
    r = _cli(ws, monkeypatch, "runs", "list")
    assert r.exit_code == 0 and "mIoU" in r.output
