"""Held-out categories (study Table 2): the classes are absent from what pre-training batches carry, the
option is refused where it makes no sense, and leaving it out keeps a run's key what it was."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from torch.utils.data import DataLoader

from featscope.cache.store import content_key
from featscope.config import Settings
from featscope.training.data import EpochSampler
from featscope.workspace import Workspace
from featscope.workspace import training

TINY = dict(arch="resnet18", image_size=64, max_size=64, batch_size=4, num_workers=0, threads=1)
HELD = ["circle", "star"]


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("holdout")
    ws = Workspace(Settings(data_dir=root / "data", num_workers=0, batch_size=4))
    ws.study_datasets(root / "sets", n_pretrain=24, n_pretrain_val=8, n_target_train=4, n_target_test=4, n_probe=1,
                      size=64)
    return ws, root / "sets"


def _coco_objects(coco_json: Path) -> dict[str, set[str]]:
    """file name -> the classes of its objects, read straight from the generator's COCO file."""
    doc = json.loads(Path(coco_json).read_text())
    names = {c["id"]: c["name"] for c in doc["categories"]}
    files = {im["id"]: im["file_name"] for im in doc["images"]}
    out: dict[str, set[str]] = {f: set() for f in files.values()}
    for a in doc["annotations"]:
        out[files[a["image_id"]]].add(names[a["category_id"]])
    return out


def _one_epoch(task) -> list[tuple[int, object]]:
    """(sample index, item) of everything the task's training data yields in one epoch, in batches."""
    data = task.train_data()
    sampler = EpochSampler(len(data), seed=0)
    sampler.set_position(0, 0)
    seen = [i for i, _ in sampler]
    items = []
    for batch in DataLoader(data, batch_size=4, sampler=sampler, collate_fn=task.collate):
        items.extend(zip(*batch) if isinstance(batch[0], list) else zip(batch[0], batch[1].tolist()))
    assert len(items) == len(seen)
    return list(zip(seen, [it[1] for it in items]))


@pytest.mark.parametrize("kind", ["det", "cls"])
def test_held_out_classes_never_reach_a_pretraining_batch(study, kind):
    ws, sets = study
    objects = _coco_objects(sets / "pretrain.json")
    having = {f for f, cs in objects.items() if cs & set(HELD)}
    assert having and len(having) < len(objects)  # the test set-up holds both kinds of image
    p = training.plan(ws.ctx, kind, "study-pretrain", test_dataset="study-pretrain-val",
                      params={**TINY, "holdout_classes": " , ".join(reversed(HELD))})
    assert p.config.holdout_classes == tuple(HELD)  # parsed, stripped, sorted
    assert p.classes == sorted(set().union(*objects.values()) - set(HELD))
    root = Path(p.dataset.root)
    task = training._task(ws.ctx, p, training._resolved(p.config))
    data = task.train_data()
    yielded = _one_epoch(task)
    seen_files = {data.samples[i].path.relative_to(root).as_posix() for i, _ in yielded}
    assert seen_files == set(objects) - having  # every other image, none of the held-out ones
    for i, target in yielded:
        truth = objects[data.samples[i].path.relative_to(root).as_posix()]
        if kind == "det":  # every box of the image is in the batch: none was dropped as an unknown class
            assert len(target["labels"]) == sum(1 for b in data.samples[i].boxes) > 0
            assert {p.classes[k - 1] for k in target["labels"].tolist()} == truth
        else:
            assert {p.classes[target]} == truth
    test_root = Path(p.test_dataset.root)
    val_objects = _coco_objects(sets / "pretrain-val.json")
    assert p.test and all(not val_objects[s.path.relative_to(test_root).as_posix()] & set(HELD) for s in p.test)


def test_holdout_refusals(study):
    ws, _ = study
    cases = [(dict(holdout_classes=["zebra"]), "det", None,
              r"cannot hold out unknown class\(es\) 'zebra': the classes of 'study-pretrain' are \w+, \w+"),
             (dict(holdout_classes=["circle"]), "det", ["circle", "star"], "both chosen and held out"),
             (dict(holdout_classes="circle,cross,hexagon,square,star"), "cls", None, "has a single class")]
    for params, task, classes, message in cases:
        with pytest.raises(ValueError, match=message):
            training.plan(ws.ctx, task, "study-pretrain", classes=classes, params={**TINY, **params})
    ws.add_backbone("torchvision:resnet18", random_init=True, name="r18-holdout")
    with pytest.raises(ValueError, match="holdout_classes applies to pre-training runs"):
        training.plan(ws.ctx, "finetune-det", "study-target-train", init="r18-holdout",
                      params={"holdout_classes": ["ring"]})


def test_a_run_without_holdout_keeps_its_key(study):
    ws, _ = study
    p = training.plan(ws.ctx, "det", "study-pretrain", params=TINY)
    assert p.config.holdout_classes == () and "holdout_classes" in p.config.to_dict()
    # the key as it was computed before the option existed: the configuration without it
    defaults_then = {"optimizer": "sgd", "zero_init_residual": True}
    added = ("holdout_classes", "output_stride", "trimap_widths")  # the parameters issue 16 added
    before = {k: v for k, v in p.config.to_dict().items() if k not in training._BOOKKEEPING
              and k not in added and not (k in defaults_then and v == defaults_then[k])}
    old = content_key({"kind": "training-run", "version": training.TRAINING_VERSION, "task": "det", "config": before,
                       "dataset": p.dataset.fingerprint, "classes": p.classes, "test": None,
                       "test_images": [], "init": p.init_fingerprint})
    assert p.key == old
    held = training.plan(ws.ctx, "det", "study-pretrain", params={**TINY, "holdout_classes": ["circle"]})
    assert held.key != p.key


def test_a_start_that_saw_the_held_out_classes_is_refused(study):
    """Table 2's "never saw": a run started from a backbone trained on the held-out classes would have seen them."""
    ws, _ = study
    cls = ws.train("cls", "study-pretrain", name="cls-all-classes", **{**TINY, "epochs": 1})
    with pytest.raises(ValueError, match=r"was trained on circle: a run started from it has seen the classes it holds"):
        training.plan(ws.ctx, "det", "study-pretrain", init=cls.backbone_id, params={**TINY, "holdout_classes": ["circle"]})
    ws.add_backbone("torchvision:resnet18", random_init=True, name="r18-never-saw")  # knows no classes: allowed
    p = training.plan(ws.ctx, "det", "study-pretrain", init="r18-never-saw", params={**TINY, "holdout_classes": ["circle"]})
    assert "circle" not in p.classes
