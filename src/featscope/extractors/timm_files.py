"""timm weights kept the way timm and the Hugging Face hub publish them: a weights file with timm's
``config.json`` beside it (``model.safetensors`` / ``pytorch_model.bin`` + ``config.json``).

Public names: :class:`TimmFolder`, :func:`timm_folder`.

Why: a plain state dict does not say which preprocessing its network was trained with, and for a
ResNet its keys are the same in timm and torchvision. timm's ``config.json`` names the architecture
and holds the weights' ``pretrained_cfg`` (input size, interpolation, crop, mean/std, class names).
timm itself reads such a folder as ``local-dir:FOLDER`` (``timm.create_model``), so building the
model that way gives it exactly that ``pretrained_cfg``; featscope then derives its preprocessing
from it as it does for ``timm:NAME``. The file is JSON only: reading it runs nothing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

CONFIG_NAME = "config.json"


@dataclass(frozen=True)
class TimmFolder:
    """A folder holding timm's ``config.json``: its architecture (a timm model name) and class names."""

    folder: Path
    architecture: str
    label_names: list[str] | None = None

    @property
    def model_name(self) -> str:
        """The name ``timm.create_model`` builds this folder's network (and pretrained_cfg) from."""
        return f"local-dir:{self.folder}"

    def fits(self, arch: str) -> bool:
        """Whether this config describes ``arch`` (a timm name, with or without a pretrained tag)."""
        return arch.partition(".")[0] == self.architecture.partition(".")[0]


def timm_folder(weights: str | Path) -> TimmFolder | None:
    """timm's ``config.json`` beside ``weights``, or None when there is none (or it is another
    framework's config, e.g. a transformers ``config.json`` with ``architectures``)."""
    path = Path(weights).parent / CONFIG_NAME
    if not path.is_file():
        return None
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    if not isinstance(cfg, dict) or not isinstance(cfg.get("architecture"), str):
        return None
    import timm

    arch = cfg["architecture"]
    if not timm.is_model(arch):
        return None
    pretrained = cfg.get("pretrained_cfg") if isinstance(cfg.get("pretrained_cfg"), dict) else cfg
    labels = cfg.get("label_names") or pretrained.get("label_names") or pretrained.get("labels")
    if not (isinstance(labels, list) and all(isinstance(x, str) for x in labels)):
        labels = None
    return TimmFolder(folder=path.parent.resolve(), architecture=arch, label_names=labels)
