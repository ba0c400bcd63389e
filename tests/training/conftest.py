"""Tiny training fixtures: a few generated study scenes and parameters that train in seconds."""

from __future__ import annotations

from pathlib import Path

import pytest

# Every TrainConfig value a test run overrides: a ResNet-18 on 64-px images with a miniature head.
TINY = dict(arch="resnet18", image_size=64, max_size=64, batch_size=4, epochs=2, num_workers=0, roi_size=4,
            proj_channels=8, fc_dim=16, rois_per_image=8, rpn_batch_size_per_image=16, rpn_pre_nms_top_n_train=50,
            rpn_post_nms_top_n_train=20, rpn_pre_nms_top_n_test=50, rpn_post_nms_top_n_test=20,
            checkpoint_every=3, log_every=1, warmup_iters=2, lr=0.01, schedule="step", lr_steps=(), threads=1)
# threads=1: on a busy shared CPU, torch's spinning OpenMP threads made a step up to 10x slower than one thread.


@pytest.fixture(scope="session")
def study_sets(tmp_path_factory):
    """The study sets at 64 px: 16 pre-training scenes, 8 target scenes per split, 2 probe images per class."""
    from featscope.datasets.study import study_datasets

    return study_datasets(tmp_path_factory.mktemp("study") / "sets", n_pretrain=16, n_pretrain_val=4,
                          n_target_train=8, n_target_test=6, n_probe=2, size=64, seed=0)


@pytest.fixture(scope="session")
def tiny():
    return dict(TINY)


def samples_of(coco_json: Path):
    """Training samples of a generated COCO file."""
    from featscope.datasets import read_dataset
    from featscope.training.data import Sample

    scan = read_dataset(coco_json)
    return scan.classes, [Sample(scan.image_path(r), r.label, tuple((b.label, b.x0, b.y0, b.x1, b.y1) for b in r.boxes))
                          for r in scan.images]


@pytest.fixture(scope="session")
def pretrain_samples(study_sets):
    return samples_of(study_sets.coco["pretrain"])
