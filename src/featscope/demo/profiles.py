"""How big the demo is: the study sets' sizes and the training parameters over a preset, per machine.

``cpu`` is the default without a GPU: the ``cpu-demo`` preset on 3,600 pre-training scenes (the classifier
keeps the preset's 900 iterations; the detector's one epoch is shorter) and a 150-image target set, so the
first run fits in about a quarter of an hour. ``cuda`` (chosen when CUDA is present) trains on more images
for longer. ``tiny`` is the test suite's:
64-pixel images and a few iterations, so the whole pipeline runs in about a minute.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Profile:
    """Sizes of the study sets (``featscope.datasets.study.study_datasets`` arguments) and training parameters."""

    name: str
    description: str
    sets: dict[str, int]
    preset: str = "cpu-demo"
    cls: dict[str, Any] = field(default_factory=dict)
    det: dict[str, Any] = field(default_factory=dict)
    finetune_det: dict[str, Any] = field(default_factory=dict)
    finetune_cls: dict[str, Any] = field(default_factory=dict)
    n_map_images: int = 3
    umap: bool = True  # UMAP beside t-SNE (numba compiles its kernels on first use: ~30 s on a small CPU)
    expected: str = ""


_TINY_NET = {"image_size": 64, "warmup_iters": 2, "log_every": 1, "checkpoint_every": 50, "num_workers": 0}
_TINY_DET = {**_TINY_NET, "max_size": 64, "batch_size": 4, "rpn_post_nms_top_n_train": 50,
             "rpn_post_nms_top_n_test": 50}

PROFILES: dict[str, Profile] = {
    "tiny": Profile(
        "tiny", "64-pixel images, a few iterations (the test suite's)",
        sets={"n_pretrain": 48, "n_pretrain_val": 12, "n_target_train": 12, "n_target_test": 8, "n_probe": 8,
              "size": 64},
        cls={**_TINY_NET, "epochs": 2, "batch_size": 8, "eval_every": 1},
        det={**_TINY_DET, "epochs": 2, "eval_every": 1},
        finetune_det={**_TINY_DET, "epochs": 1, "lr_steps": []},
        finetune_cls={**_TINY_NET, "epochs": 1, "batch_size": 8, "lr_steps": []},
        n_map_images=1, umap=False, expected="one to two minutes"),
    "cpu": Profile(
        "cpu", "the cpu-demo preset on 3,600 scenes and a 150-image target set (ResNet-18, 128-pixel scenes)",
        sets={"n_pretrain": 3600, "n_pretrain_val": 150, "n_target_train": 150, "n_target_test": 100, "n_probe": 40,
              "size": 128},
        cls={"epochs": 8, "eval_every": 2},  # the preset's 900 classifier iterations on 3,600 scenes
        expected="15 minutes on an idle 2-core CPU at the preset's throughput; longer on a busy one"),
    "cuda": Profile(
        "cuda", "the cpu-demo networks on four times the preset's images, trained longer (for a GPU)",
        sets={"n_pretrain": 19200, "n_pretrain_val": 300, "n_target_train": 1200, "n_target_test": 300, "n_probe": 100,
              "size": 128},
        cls={"epochs": 18, "batch_size": 64, "lr": 0.002, "num_workers": 4, "eval_every": 3},
        det={"epochs": 3, "batch_size": 16, "lr": 0.0003, "num_workers": 4, "eval_every": 1},
        finetune_det={"num_workers": 4}, finetune_cls={"num_workers": 4},
        n_map_images=4, expected="a few minutes on one GPU"),
}


def choose_profile(name: str | None = None) -> Profile:
    """``name``, else ``$DEMO_PROFILE``, else ``cuda`` when a GPU is present and ``cpu`` when not."""
    name = name or os.environ.get("DEMO_PROFILE") or None
    if name is None:
        import torch

        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name not in PROFILES:
        raise ValueError(f"unknown demo profile {name!r}; choose one of {', '.join(PROFILES)}")
    return PROFILES[name]
