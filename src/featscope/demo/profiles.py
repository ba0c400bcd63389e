"""How big the demo is: the study sets' sizes and the training parameters over a preset, per machine.

``cpu`` is the default without a GPU: the ``cpu-demo`` preset on 3,000 pre-training scenes (8 classifier epochs:
750 iterations; the detector's one epoch: 375), a 150-image target set and 6 detection fine-tuning epochs, so the
first run, segmentation fine-tuning included, fits in a quarter of an hour with ``make demo``'s set-up; its Table 2 stages (a third pre-training) are off unless
``featscope demo --heldout star,cross`` asks for them. ``cuda`` (chosen when CUDA is present) trains on more images
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
    finetune_seg: dict[str, Any] = field(default_factory=dict)  # Table 4, Fig. 2: DeepLabV3 head on target sets
    # Table 2: pre-training classes a third backbone, a detector from the classifier's seeded random start, never
    # sees; empty: the two "heldout" stages are off. heldout_det: that detector's parameters over ``det``'s;
    # heldout_finetune: the three detection fine-tunings' on a split of pretrain-val over ``finetune_det``'s.
    heldout: tuple[str, ...] = ()
    heldout_det: dict[str, Any] = field(default_factory=dict)
    heldout_finetune: dict[str, Any] = field(default_factory=dict)


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
        n_map_images=1, umap=False, expected="one to two minutes",
        finetune_seg={**_TINY_NET, "epochs": 1, "batch_size": 4, "warmup_iters": 1},
        heldout=("star",), heldout_finetune={"test_fraction": 0.5}),
    "cpu": Profile(
        "cpu", "the cpu-demo preset on 3,000 scenes and a 150-image target set (ResNet-18, 128-pixel scenes)",
        sets={"n_pretrain": 3000, "n_pretrain_val": 150, "n_target_train": 150, "n_target_test": 100, "n_probe": 40,
              "size": 128},
        # 3,600 scenes, 8 classifier epochs and 7 fine-tuning epochs took 827 s of stages (15 min 30 s with the
        # fresh .venv) before segmentation joined: 3,000 scenes and 6 epochs make room for it
        cls={"epochs": 8, "eval_every": 2},
        finetune_det={"epochs": 6},
        expected="15 minutes on an idle 2-core CPU at the preset's throughput; longer on a busy one",
        # Table 4 / Fig. 2 on the 150 target scenes at the preset's 128 pixels, 3 epochs (54 iterations): 23 s per
        # backbone from a random ResNet-18 at a load average of 1.5 on the 2-core machine (2 epochs: 17 s)
        finetune_seg={"epochs": 3},
        heldout_det={"epochs": 2}),  # Table 2 is off unless asked for (featscope demo --heldout star,cross)
    "cuda": Profile(
        "cuda", "the cpu-demo networks on four times the preset's images, trained longer (for a GPU)",
        sets={"n_pretrain": 19200, "n_pretrain_val": 300, "n_target_train": 1200, "n_target_test": 300, "n_probe": 100,
              "size": 128},
        cls={"epochs": 18, "batch_size": 64, "lr": 0.002, "num_workers": 4, "eval_every": 3},
        det={"epochs": 3, "batch_size": 16, "lr": 0.0003, "num_workers": 4, "eval_every": 1},
        finetune_det={"num_workers": 4}, finetune_cls={"num_workers": 4},
        n_map_images=4, expected="a few minutes on one GPU",
        finetune_seg={"num_workers": 4},
        heldout=("star", "cross"), heldout_det={"epochs": 6, "batch_size": 16, "lr": 0.0003, "num_workers": 4}),
}


def with_heldout(profile: Profile, classes: str | None) -> Profile:
    """``profile`` holding out ``classes`` (comma-separated pre-training class names; "" or "none": none) in its
    Table 2 stages; unchanged when ``classes`` is None."""
    if classes is None:
        return profile
    from dataclasses import replace

    from featscope.datasets.study import PRETRAIN_CLASSES

    names = tuple(dict.fromkeys(c.strip() for c in classes.split(",") if c.strip() and c.strip() != "none"))
    unknown = [c for c in names if c not in PRETRAIN_CLASSES]
    if unknown:
        raise ValueError(f"cannot hold out {', '.join(map(repr, unknown))}: the pre-training classes are "
                         f"{', '.join(PRETRAIN_CLASSES)}")
    if len(names) >= len(PRETRAIN_CLASSES) - 1:
        raise ValueError(f"hold out at most {len(PRETRAIN_CLASSES) - 2} of the {len(PRETRAIN_CLASSES)} pre-training "
                         f"classes: the detector needs some to learn from")
    return replace(profile, heldout=names)


def choose_profile(name: str | None = None) -> Profile:
    """``name``, else ``$DEMO_PROFILE``, else ``cuda`` when a GPU is present and ``cpu`` when not."""
    name = name or os.environ.get("DEMO_PROFILE") or None
    if name is None:
        import torch

        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name not in PROFILES:
        raise ValueError(f"unknown demo profile {name!r}; choose one of {', '.join(PROFILES)}")
    return PROFILES[name]
