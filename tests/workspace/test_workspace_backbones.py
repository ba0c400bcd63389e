"""Registering and reopening backbones: what a row records, how older rows map back to the loader's
arguments, and loaded networks kept per workspace (never shared between catalogs)."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torchvision

from featscope.catalog import Backbone as Row
from featscope.extractors.backbones import list_taps
from featscope.extractors.types import Preprocess
from featscope.workspace.backbones import (get_backbone_row, load_arguments, recorded_classes, recorded_taps,
                                           tap_choices)

SMALL = Preprocess(resize=40, crop=32)


def _old_row(spec: str, **kw) -> Row:
    base = {"name": "x", "spec": spec, "source": spec.partition(":")[0], "arch": "resnet18", "weights": None,
            "weights_format": None, "random_init": False, "seed": 0, "fingerprint": "f" * 64,
            "preprocess": SMALL.to_dict(), "taps": ["layer1", "layer2", "layer3", "layer4"], "has_classifier": True,
            "load_args": None, "network": None}
    return Row(**{**base, **kw})


def test_older_rows_map_back_to_the_loaders_own_arguments():
    """Older rows stored the loader's resolved values; each source gets back what the loader accepts."""
    ck = _old_row("checkpoint:/w/model_final.pkl", weights="/w/model_final.pkl", weights_format="detectron2")
    assert load_arguments(ck) == {"spec": "checkpoint:/w/model_final.pkl", "weights_format": "detectron2",
                                  "random_init": False, "seed": 0, "arch": "resnet18"}  # the file is the spec's
    det = _old_row("torchvision-det:fasterrcnn_resnet50_fpn", arch="resnet50", weights="/w/frcnn.pth",
                   weights_format="torchvision-det")
    assert load_arguments(det) == {"spec": "torchvision-det:fasterrcnn_resnet50_fpn", "weights": "/w/frcnn.pth",
                                   "weights_format": "torchvision-det", "random_init": False, "seed": 0}
    rnd = _old_row("torchvision:resnet18", random_init=True, seed=4)
    assert load_arguments(rnd) == {"spec": "torchvision:resnet18", "weights": None, "weights_format": "auto",
                                   "random_init": True, "seed": 4}
    new = _old_row("run:12", load_args={"spec": "run:12"})
    assert load_arguments(new) == {"spec": "run:12"}  # any source: its own arguments, replayed as stored
    assert recorded_taps(ck) is None and recorded_classes(ck) is None
    assert tap_choices(ck) == (["layer1", "layer2", "layer3", "layer4"],
                               {"conv2": "", "conv3": "", "conv4": "", "conv5": ""})


def test_a_row_records_the_callers_arguments_and_what_the_network_offers(ws, tmp_path, monkeypatch):
    torch.manual_seed(0)
    torch.save(torchvision.models.resnet18(num_classes=7).state_dict(), tmp_path / "r18.pth")
    monkeypatch.chdir(tmp_path)
    info = ws.add_backbone("checkpoint:r18.pth", name="ck", preprocess={"resize": 40, "crop": 32})
    row = get_backbone_row(ws.ctx, "ck")
    assert row.load_args == {"spec": f"checkpoint:{tmp_path / 'r18.pth'}", "weights": None, "weights_format": "auto",
                             "arch": None, "random_init": False, "seed": 0}
    assert info.spec == row.load_args["spec"]
    bb = ws.load_backbone("ck")
    assert [dataclasses.asdict(t) for t in recorded_taps(row)] == [dataclasses.asdict(t) for t in list_taps(bb)]
    assert row.network["input_size"] == 32 and recorded_classes(row) == [str(i) for i in range(7)]
    assert tap_choices(row) == (["layer1", "layer2", "layer3", "layer4"],
                                {"conv2": "layer1", "conv3": "layer2", "conv4": "layer3", "conv5": "layer4"})


def test_a_size_override_keeps_the_weights_normalisation(ws, tmp_path):
    """`--resize/--crop` change the sizes only: a Caffe-style network keeps its BGR 0..255 input."""
    from featscope.extractors.checkpoints import CAFFE_PREPROCESS, save_checkpoint

    torch.manual_seed(0)
    save_checkpoint(tmp_path / "caffe.pth", torchvision.models.resnet18(), "resnet18", CAFFE_PREPROCESS)
    ws.add_backbone(f"checkpoint:{tmp_path / 'caffe.pth'}", name="c", preprocess={"resize": 40, "crop": 32})
    got = Preprocess.from_dict(get_backbone_row(ws.ctx, "c").preprocess)
    assert got == dataclasses.replace(CAFFE_PREPROCESS, resize=40, crop=32)
    with pytest.raises(ValueError, match="crop"):
        ws.add_backbone(f"checkpoint:{tmp_path / 'caffe.pth'}", name="bad", preprocess={"resize": 32, "crop": 40})


def test_loaded_networks_are_kept_per_workspace(settings, tmp_path):
    """Two catalogs may number two registrations of the same weights alike (id 1, same fingerprint) with
    different preprocessing: each workspace gets its own."""
    from featscope.workspace import Workspace

    a = Workspace(settings)
    b = Workspace(settings.model_copy(update={"data_dir": tmp_path / "other"}))
    a.add_backbone("torchvision:resnet18", random_init=True, name="r", preprocess=SMALL)
    b.add_backbone("torchvision:resnet18", random_init=True, name="r", preprocess=Preprocess(resize=72, crop=64))
    assert a.load_backbone("r").fingerprint == b.load_backbone("r").fingerprint
    assert a.load_backbone("r").preprocess == SMALL and b.load_backbone("r").preprocess.crop == 64
    fresh = Workspace(settings)  # a new workspace loads from its catalog row, not from another's memory
    assert fresh.load_backbone("r") is not a.load_backbone("r") and fresh.load_backbone("r").preprocess == SMALL


def test_changed_weights_are_refused_on_reopen(ws, tmp_path):
    torch.manual_seed(0)
    torch.save(torchvision.models.resnet18().state_dict(), tmp_path / "w.pth")
    ws.add_backbone("torchvision:resnet18", weights=tmp_path / "w.pth", name="w", preprocess=SMALL)
    torch.manual_seed(1)
    torch.save(torchvision.models.resnet18().state_dict(), tmp_path / "w.pth")
    ws.ctx.networks.clear()
    with pytest.raises(ValueError, match=r"its weights .* changed since it was registered"):
        ws.load_backbone("w")
