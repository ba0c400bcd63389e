"""Read weight files of every supported format into one naming, safely; write featscope checkpoints.

Public names: :class:`CheckpointError`, :data:`FORMATS`, :func:`detect_format`,
:func:`read_state_dict`, :func:`load_exact`, :func:`save_checkpoint`.

Why one reader: a ResNet trained by torchvision, by a torchvision detector, by MMDetection or by
Detectron2 is the same network under different key names and containers. Everything is mapped to
torchvision's names (``conv1``, ``bn1``, ``layer1.0.conv1`` ... ``fc``) so the same weights in
two formats load into the same module and get the same fingerprint.

Safety: torch files go through ``torch.load(weights_only=True)``; Detectron2 ``.pkl`` files through
the restricted unpickler in :mod:`featscope.extractors.detectron2`; nothing else is ever unpickled.
"""

from __future__ import annotations

import os
import re
import tempfile
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from featscope.extractors.types import Preprocess

FORMATS = ("torchvision", "featscope", "torchvision-det", "mmdet", "detectron2", "caffe2", "timm")
WEIGHTS_FORMATS = ("auto",) + FORMATS

# Caffe-style ResNets (Detectron2 / MMDetection "caffe" weights) see BGR pixels in [0, 255].
CAFFE_PREPROCESS = Preprocess(mean=(103.530, 116.280, 123.675), std=(1.0, 1.0, 1.0),
                              channel_order="BGR", pixel_scale=255.0)

_LEGACY_TORCH_MAGIC = b"\x80\x02\x8a\nl\xfc\x9cF\xf9 j\xa8P\x19"
_SHOW = 10  # keys listed per category in error messages


class CheckpointError(ValueError):
    """A weight file that cannot be read safely, or that does not fit the network asked for."""


def detect_format(path: str | os.PathLike) -> str:
    """The format of the weight file at ``path`` (one of :data:`FORMATS`), from its keys."""
    raw, container = _read_container(Path(path))
    return _detect_naming(raw, container)


def read_state_dict(
    path: str | os.PathLike, weights_format: str = "auto"
) -> tuple[dict[str, torch.Tensor], str, dict[str, Any]]:
    """``(state dict in torchvision naming, format used, metadata)`` for the file at ``path``.

    Metadata keys (all optional): ``arch``, ``builder``, ``preprocess`` (a dict),
    ``class_names``, ``extra`` (featscope checkpoints); ``stride_in_1x1`` and ``preprocess`` for
    Caffe-style ResNets; ``frozen_bn`` when the source framework runs FrozenBatchNorm;
    ``affine_bn`` (module names whose running stats were absent and filled with mean 0, var 1);
    ``dropped_keys`` (count of non-backbone keys left out); ``notes`` (human-readable remarks).
    """
    if weights_format not in WEIGHTS_FORMATS:
        raise ValueError(f"unknown weights format {weights_format!r}; choose one of {', '.join(WEIGHTS_FORMATS)}")
    path = Path(path)
    raw, container = _read_container(path)
    fmt = _detect_naming(raw, container) if weights_format == "auto" else weights_format
    meta: dict[str, Any] = {"notes": []}
    if fmt == "featscope":
        if not isinstance(raw, Mapping) or not isinstance(raw.get("featscope"), Mapping):
            raise CheckpointError(f"{path} is not a featscope checkpoint (no 'featscope' entry); "
                                  f"pass --weights-format auto (REST: weights_format) to detect its format")
        info = dict(raw["featscope"])
        meta.update({k: info[k] for k in ("arch", "builder", "preprocess", "class_names", "extra") if k in info})
        sd = _as_state_dict(raw.get("state_dict"), path)
    elif fmt in ("detectron2", "caffe2"):
        from featscope.extractors import detectron2

        sd, d2_meta = detectron2.to_torchvision(_unwrap(raw, path), fmt, _author(raw))
        meta.update(d2_meta)
    else:
        sd = _strip_module_prefix(_unwrap(raw, path))
        if fmt == "torchvision-det":
            # a whole detector ("backbone.body.") or just its backbone module ("body.")
            prefix = "backbone.body." if any(k.startswith("backbone.body.") for k in sd) else "body."
            sd = _take_prefix(sd, prefix, meta)
            meta["frozen_bn"] = not any(k.endswith("num_batches_tracked") for k in sd)
        elif fmt in ("torchvision", "timm"):
            sd = _rename_legacy_densenet(sd)
        elif fmt == "mmdet":
            sd = _take_prefix(sd, "backbone.", meta)
            if _mmdet_caffe_style(raw):
                meta.update(stride_in_1x1=True, preprocess=CAFFE_PREPROCESS.to_dict())
                meta["notes"].append("MMDetection config says style='caffe': stride in the 1x1 convs, "
                                     "BGR 0-255 input")
    if not sd:
        raise CheckpointError(f"{path} holds no weights in {fmt} naming; pass --weights-format NAME (REST: weights_format) "
                              f"(one of {', '.join(FORMATS)}) if auto-detection chose wrong")
    from featscope.extractors.detectron2 import to_tensor

    return {k: to_tensor(k, v) for k, v in sd.items()}, fmt, meta


def load_exact(model: nn.Module, state_dict: Mapping[str, torch.Tensor], *, optional: tuple[str, ...] = (),
               source: str = "checkpoint", hint: str = "") -> list[str]:
    """Load ``state_dict`` into ``model``, refusing any missing, unexpected or mis-shaped tensor.

    ``optional`` lists key prefixes (a classifier such as ``"fc."``) that may be absent as a
    whole; the prefixes actually absent are returned so the caller can drop those modules.
    ``num_batches_tracked`` never counts: it does not change an eval-mode forward.
    Raises :class:`CheckpointError` naming the first keys of each kind, the totals and ``hint``.
    """
    expected = model.state_dict()

    def counts(key: str) -> bool:
        return not key.endswith("num_batches_tracked")

    missing = [k for k in expected if k not in state_dict and counts(k)]
    absent = [p for p in optional if any(k.startswith(p) for k in expected)
              and all(k not in state_dict for k in expected if k.startswith(p))]
    missing = [k for k in missing if not any(k.startswith(p) for p in absent)]
    unexpected = [k for k in state_dict if k not in expected and counts(k)]
    shapes = [f"{k}: file {tuple(v.shape)} vs network {tuple(expected[k].shape)}"
              for k, v in state_dict.items() if k in expected and tuple(v.shape) != tuple(expected[k].shape)]
    if missing or unexpected or shapes:
        lines = [f"{source} does not fit the network"]
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("shape mismatches", shapes)):
            if keys:
                more = f" (+{len(keys) - _SHOW} more)" if len(keys) > _SHOW else ""
                lines.append(f"  {label} ({len(keys)}): {', '.join(keys[:_SHOW])}{more}")
        lines.append("Likely fix: " + (hint or "pass --arch NAME (REST: arch) for the network the file was saved "
                                               "from, or --weights-format NAME (REST: weights_format) if its "
                                               "format was mis-detected"))
        raise CheckpointError("\n".join(lines))
    loadable = {k: v for k, v in state_dict.items() if k in expected}
    with torch.no_grad():
        result = model.load_state_dict(loadable, strict=False)
    left = [k for k in result.missing_keys if counts(k) and not any(k.startswith(p) for p in absent)]
    if left or result.unexpected_keys:  # defensive: the checks above should make this unreachable
        raise CheckpointError(f"{source}: tensors left unloaded: {left[:_SHOW]} {result.unexpected_keys[:_SHOW]}")
    return absent


def save_checkpoint(path: str | os.PathLike, model: nn.Module | Mapping[str, torch.Tensor], arch: str,
                    preprocess: Preprocess, class_names: list[str] | None = None,
                    extra: Mapping[str, Any] | None = None) -> Path:
    """Write ``model`` as a featscope checkpoint that :func:`read_state_dict` loads with ``weights_only``.

    Layout: ``{"featscope": {"version", "arch", "builder", "preprocess", "class_names", "extra"},
    "state_dict": {...}}``. ``extra`` must hold plain values only (str, int, float, bool, None,
    lists, tuples, dicts with str keys) so the file stays loadable without unpickling objects.
    Written to a temporary name and renamed, so a crash never leaves half a checkpoint.
    """
    if not arch:
        raise ValueError("arch is required (e.g. 'resnet50') so the checkpoint can be rebuilt")
    if not isinstance(preprocess, Preprocess):
        raise TypeError("preprocess must be a featscope Preprocess")
    if class_names is not None and not all(isinstance(c, str) for c in class_names):
        raise TypeError("class_names must be a list of str")
    _check_plain(extra, "extra")
    if isinstance(model, nn.Module):
        builder = "timm" if type(model).__module__.startswith("timm.") else "torchvision"
        sd = model.state_dict()
    else:
        builder, sd = "torchvision", model
    info = {"version": 1, "arch": arch, "builder": builder, "preprocess": preprocess.to_dict(),
            "class_names": list(class_names) if class_names is not None else None,
            "extra": dict(extra) if extra is not None else None}
    payload = {"featscope": info, "state_dict": {k: v.detach().cpu() for k, v in sd.items()}}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


# --- containers -------------------------------------------------------------------------------

def _read_container(path: Path) -> tuple[Any, str]:
    """The file's top-level object and its container kind: 'torch', 'pickle' or 'safetensors'."""
    if not path.is_file():
        raise FileNotFoundError(f"weights file {path} does not exist")
    with path.open("rb") as f:
        head = f.read(16)
    if zipfile.is_zipfile(path) or head.startswith(_LEGACY_TORCH_MAGIC):
        return _torch_load(path), "torch"
    if _looks_like_safetensors(head):
        try:
            from safetensors.torch import load_file
        except ImportError as e:
            raise CheckpointError(f"{path} is a .safetensors file; install the 'safetensors' package "
                                  f"or convert it to a .pth state dict") from e
        return load_file(str(path), device="cpu"), "safetensors"
    if head[:1] == b"\x80" or path.suffix in (".pkl", ".pickle"):
        from featscope.extractors import detectron2

        return detectron2.read_pickle(path), "pickle"
    raise CheckpointError(f"{path} is not a weight file featscope can read (torch .pth/.pt, "
                          f"Detectron2 .pkl, .safetensors)")


def _torch_load(path: Path) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - every failure gets the same explanation
        raise CheckpointError(
            f"could not load {path} safely: {e}\n"
            f"featscope loads only tensors and plain containers (torch.load weights_only=True) and never "
            f"executes code from checkpoints. If you trust the file, re-save just its weights in a "
            f"separate session: torch.save(torch.load(f)['model'], 'weights.pth')"
        ) from e


def _looks_like_safetensors(head: bytes) -> bool:
    if len(head) < 9:
        return False
    n = int.from_bytes(head[:8], "little")
    return 0 < n < 100_000_000 and head[8:9] == b"{"


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, Mapping) and bool(obj) and all(
        isinstance(k, str) and (isinstance(v, torch.Tensor) or type(v).__name__ == "ndarray")
        for k, v in obj.items())


def _unwrap(raw: Any, path: Path) -> Mapping[str, Any]:
    """The state dict inside ``raw``: itself, or its 'state_dict' / 'model' / 'blobs' entry."""
    if _is_state_dict(raw):
        return raw
    if isinstance(raw, Mapping):
        for key in ("state_dict", "model", "blobs"):
            inner = raw.get(key)
            if isinstance(inner, Mapping) and inner:
                # Detectron2 and Caffe2 pickles may carry non-array odds and ends (e.g. '__author__').
                return {k: v for k, v in inner.items()
                        if isinstance(v, torch.Tensor) or type(v).__name__ == "ndarray"}
    keys = list(raw)[:_SHOW] if isinstance(raw, Mapping) else type(raw).__name__
    raise CheckpointError(f"{path} holds no state dict (found {keys}); expected a dict of tensors, "
                          f"or one under 'state_dict' or 'model'")


def _as_state_dict(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    if not _is_state_dict(obj):
        raise CheckpointError(f"{path}: 'state_dict' is not a dict of tensors")
    return dict(obj)


def _strip_module_prefix(sd: Mapping[str, Any]) -> dict[str, Any]:
    """Drop DataParallel's ``module.`` prefix when every key has it."""
    if sd and all(k.startswith("module.") for k in sd):
        return {k[len("module."):]: v for k, v in sd.items()}
    return dict(sd)


def _take_prefix(sd: Mapping[str, Any], prefix: str, meta: dict[str, Any]) -> dict[str, Any]:
    kept = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
    meta["dropped_keys"] = len(sd) - len(kept)
    return kept


_LEGACY_DENSENET = re.compile(r"(denselayer\d+\.(?:norm|relu|conv))\.([12])\.")


def _rename_legacy_densenet(sd: dict[str, Any]) -> dict[str, Any]:
    """torchvision's published DenseNet files predate its module names ('norm.1' for 'norm1')."""
    if not any(_LEGACY_DENSENET.search(k) for k in sd):
        return sd
    return {_LEGACY_DENSENET.sub(r"\1\2.", k): v for k, v in sd.items()}


def _author(raw: Any) -> str | None:
    author = raw.get("__author__") if isinstance(raw, Mapping) else None
    return author if isinstance(author, str) else None


def _mmdet_caffe_style(raw: Any) -> bool:
    meta = raw.get("meta") if isinstance(raw, Mapping) else None
    config = meta.get("config") if isinstance(meta, Mapping) else None
    return isinstance(config, str) and ("style='caffe'" in config or 'style="caffe"' in config)


# --- naming -----------------------------------------------------------------------------------

def _detect_naming(raw: Any, container: str) -> str:
    """Which framework's key names ``raw`` uses; see :data:`FORMATS`."""
    from featscope.extractors import detectron2

    if isinstance(raw, Mapping) and "featscope" in raw:
        return "featscope"
    try:
        keys = list(_unwrap(raw, Path("<file>")))
    except CheckpointError:
        keys = []
    if detectron2.is_caffe2_naming(keys):
        return "caffe2"
    if detectron2.is_detectron2_naming(keys):
        return "detectron2"
    if any(k.startswith(("backbone.body.", "body.layer1.")) for k in keys):
        return "torchvision-det"
    if any(k.startswith("backbone.") for k in keys):
        return "mmdet"
    if container == "pickle":
        return "detectron2"
    return "torchvision"


def _check_plain(value: Any, where: str) -> None:
    if value is None or isinstance(value, (str, int, float, bool)):
        return
    if isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _check_plain(v, f"{where}[{i}]")
        return
    if isinstance(value, Mapping):
        for k, v in value.items():
            if not isinstance(k, str):
                raise TypeError(f"{where} has a non-str key {k!r}; checkpoint metadata must be plain")
            _check_plain(v, f"{where}[{k!r}]")
        return
    raise TypeError(f"{where} is a {type(value).__name__}; checkpoint metadata must be plain values "
                    f"(str, int, float, bool, None, list, tuple, dict) so it loads with weights_only")
