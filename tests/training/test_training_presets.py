"""Presets and parameters: every preset resolves for every task; every value can be overridden, strings parsed."""

from __future__ import annotations

import pytest

from featscope.training.presets import PRESETS, TASKS, TrainConfig, config_fields, resolve_config


def test_unknowns_are_refused_with_the_choices():
    with pytest.raises(ValueError, match="unknown preset 'gpu'; choose one of cpu-demo, paper"):
        resolve_config("det", "gpu")
    with pytest.raises(ValueError, match="unknown task 'seg'"):
        resolve_config("seg", "paper")
    with pytest.raises(ValueError, match="unknown training parameter 'learning_rate'; the parameters are arch, "):
        resolve_config("cls", "cpu-demo", {"learning_rate": 0.1})
    for bad, message in [({"lr": "fast"}, "lr='fast' is not a valid float"),
                         ({"epochs": 1.5}, "epochs=1.5 is not a valid int"),
                         ({"flip": "maybe"}, "flip='maybe' is not a valid bool"),
                         ({"arch": "vgg16"}, "training supports resnet18"),
                         ({"norm": "group"}, "norm must be 'bn' or 'frozen'"),
                         ({"batch_size": 0}, "batch_size must be >= 1"),
                         ({"epochs": "none"}, "epochs='none' is not a valid int")]:
        with pytest.raises(ValueError, match=message):
            resolve_config("cls", "cpu-demo", bad)


@pytest.mark.parametrize("preset", list(PRESETS))
@pytest.mark.parametrize("task", TASKS)
def test_every_preset_resolves_for_every_task(preset, task):
    cfg = resolve_config(task, preset)
    assert isinstance(cfg, TrainConfig) and cfg.loop().epochs == cfg.epochs


def test_paper_preset_is_the_studys_setup():
    det = resolve_config("det", "paper")
    assert (det.arch, det.roi_size, det.proj_channels, det.fc_dim, det.rois_per_image) == ("resnet101", 14, 256, 1024, 512)
    assert det.dilated is None and not det.fpn  # dilated Conv5 resolved from the ResNet-101
    ft = resolve_config("finetune-det", "paper")
    assert (ft.epochs, ft.lr_steps, ft.flip) == (7, (5,), True)  # 7 epochs, step after 5, horizontal flip


def test_every_value_is_a_parameter_and_strings_are_parsed():
    cfg = resolve_config("det", "cpu-demo", {"lr": "0.05", "lr_steps": "3,5", "flip": "false", "grad_clip": "none",
                                             "anchor_sizes": [8, 16], "aspect_ratios": "1.0", "dilated": "false"})
    assert (cfg.lr, cfg.lr_steps, cfg.flip, cfg.grad_clip, cfg.anchor_sizes, cfg.aspect_ratios, cfg.dilated) == \
        (0.05, (3, 5), False, None, (8, 16), (1.0,), False)
    assert set(config_fields()) == set(TrainConfig.__dataclass_fields__)
    assert resolve_config("cls", "cpu-demo", {"lr_steps": ""}).lr_steps == ()


def test_held_out_classes_and_segmentation_parameters():
    cfg = resolve_config("det", "cpu-demo", {"holdout_classes": " star, circle ,star"})
    assert cfg.holdout_classes == ("circle", "star") and cfg.to_dict()["holdout_classes"] == ["circle", "star"]
    seg = resolve_config("finetune-seg", "cpu-demo", {"trimap_widths": "1,3", "output_stride": "none"})
    assert (seg.trimap_widths, seg.output_stride, seg.arch) == ((1, 3), None, "resnet18")
    assert resolve_config("finetune-seg", "paper").output_stride == 16
    for bad, message in [({"output_stride": 12}, "output_stride must be 8, 16 or 32"),
                         ({"trimap_widths": "0,2"}, "trimap_widths are band widths in pixels >= 1")]:
        with pytest.raises(ValueError, match=message):
            resolve_config("finetune-seg", "cpu-demo", bad)
