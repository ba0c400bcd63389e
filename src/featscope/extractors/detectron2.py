"""Detectron2 / Caffe2 weight files: a pickle reader that runs no code, and a name map to torchvision.

Detectron2 publishes ``.pkl`` files: a pickle of ``{"model": {name: numpy array}, "__author__": ...}``
(or a bare dict of arrays). A pickle can name any callable to run on load, so
:class:`_ArraysOnlyUnpickler` resolves only what numpy arrays and plain containers need and refuses
everything else before it is called. Its ``.pth`` checkpoints use the same names inside a torch file.

Names: ``backbone.bottom_up.`` (FPN models) or ``backbone.`` (C4 models, whose ``res5`` lives under
``roi_heads.``) prefix ``stem.conv1`` / ``resN.B.convK`` / ``resN.B.shortcut`` with ``.norm`` for
their FrozenBatchNorm; Caffe2 (Detectron1, MSRA ImageNet) files use ``res2_0_branch2a_w`` style.

Conventions (not stored as weights): MSRA-initialised ResNets put the stride in the first 1x1
conv of a bottleneck and take BGR pixels in [0, 255] minus a mean, std 1. We read them from the
``pixel_mean``/``pixel_std`` buffers when the file has them, else from ``__author__ == "torchvision"``
(Detectron2's converted torchvision weights: RGB, ImageNet normalisation, stride in the 3x3), else
assume Detectron2's defaults (MSRA).
"""

from __future__ import annotations

import pickle
import re
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from featscope.extractors.checkpoints import CAFFE_PREPROCESS, CheckpointError
from featscope.extractors.types import Preprocess


def _numpy_core(submodule: str) -> Any:
    """``numpy._core.<submodule>`` on numpy 2, ``numpy.core.<submodule>`` on numpy 1."""
    import importlib

    try:
        return importlib.import_module(f"numpy._core.{submodule}")
    except ImportError:
        return importlib.import_module(f"numpy.core.{submodule}")


def _allowed(module: str, name: str) -> Any | None:
    """The object a pickle may reference as ``module.name``, or None when it may not."""
    if (module, name) == ("collections", "OrderedDict"):
        return OrderedDict
    if (module, name) == ("_codecs", "encode"):  # how protocol-2 pickles spell bytes
        import codecs

        return codecs.encode
    if module == "numpy" and name in ("ndarray", "dtype"):
        return getattr(np, name)
    if module in ("numpy.core.multiarray", "numpy._core.multiarray") and name in ("_reconstruct", "scalar"):
        return getattr(_numpy_core("multiarray"), name)
    if module in ("numpy.core.numeric", "numpy._core.numeric") and name == "_frombuffer":
        return _numpy_core("numeric")._frombuffer
    return None


class _ArraysOnlyUnpickler(pickle.Unpickler):
    """An unpickler that can rebuild numpy arrays, dicts and lists, and nothing else."""

    def __init__(self, file: Any, path: Path) -> None:
        super().__init__(file, encoding="latin1")  # latin1: Python 2 (Detectron1) pickles
        self._path = path

    def find_class(self, module: str, name: str) -> Any:
        obj = _allowed(module, name)
        if obj is None:
            raise CheckpointError(
                f"refusing to load {self._path}: it asks to run {module}.{name}, which is not part of "
                f"a weights file (only numpy arrays and plain containers are allowed); "
                f"featscope never executes code from checkpoints"
            )
        return obj

    def persistent_load(self, pid: Any) -> Any:
        raise CheckpointError(f"refusing to load {self._path}: it uses pickle persistent ids; "
                              f"featscope never executes code from checkpoints")


def read_pickle(path: Path) -> Any:
    """The object in a Detectron2-style pickle, rebuilt without running any code from the file."""
    try:
        with Path(path).open("rb") as f:
            return _ArraysOnlyUnpickler(f, Path(path)).load()
    except CheckpointError:
        raise
    except Exception as e:  # noqa: BLE001 - a corrupt pickle is one kind of error for the user
        raise CheckpointError(f"could not read {path} as a Detectron2 .pkl: {e}") from e


# --- naming -----------------------------------------------------------------------------------

_D2_BODY = re.compile(r"(?:stem\.conv1|res[2-5]\.\d+\.(?:conv\d|shortcut))\.(?:weight|norm\.)")
_C2_BODY = re.compile(r"^(?:res\d+_\d+_branch|res_conv1_bn_|conv1_w$)")
_D2_PREFIXES = ("backbone.bottom_up.", "backbone.", "roi_heads.", "")
_D2_RULES = (
    (re.compile(r"stem\.conv1\.weight"), "conv1.weight"),
    (re.compile(r"stem\.conv1\.norm\.(\w+)"), r"bn1.\1"),
    (re.compile(r"res([2-5])\.(\d+)\.conv(\d)\.weight"), r"layer{L}.\2.conv\3.weight"),
    (re.compile(r"res([2-5])\.(\d+)\.conv(\d)\.norm\.(\w+)"), r"layer{L}.\2.bn\3.\4"),
    (re.compile(r"res([2-5])\.(\d+)\.shortcut\.weight"), r"layer{L}.\2.downsample.0.weight"),
    (re.compile(r"res([2-5])\.(\d+)\.shortcut\.norm\.(\w+)"), r"layer{L}.\2.downsample.1.\3"),
)
_C2_RULES = (
    (re.compile(r"conv1_w"), "conv1.weight"),
    (re.compile(r"res_conv1_bn_s"), "bn1.weight"),
    (re.compile(r"res_conv1_bn_b"), "bn1.bias"),
    (re.compile(r"res([2-5])_(\d+)_branch2([abc])_w"), r"layer{L}.\2.conv{K}.weight"),
    (re.compile(r"res([2-5])_(\d+)_branch2([abc])_bn_s"), r"layer{L}.\2.bn{K}.weight"),
    (re.compile(r"res([2-5])_(\d+)_branch2([abc])_bn_b"), r"layer{L}.\2.bn{K}.bias"),
    (re.compile(r"res([2-5])_(\d+)_branch1_w"), r"layer{L}.\2.downsample.0.weight"),
    (re.compile(r"res([2-5])_(\d+)_branch1_bn_s"), r"layer{L}.\2.downsample.1.weight"),
    (re.compile(r"res([2-5])_(\d+)_branch1_bn_b"), r"layer{L}.\2.downsample.1.bias"),
    (re.compile(r"pred_w"), "fc.weight"),
    (re.compile(r"pred_b"), "fc.bias"),
)


def is_detectron2_naming(keys: Iterable[str]) -> bool:
    """Whether any key is a Detectron2 ResNet body name (``stem.conv1.weight``, ``res2.0.conv1...``)."""
    return any(_D2_BODY.search(k) for k in keys)


def is_caffe2_naming(keys: Iterable[str]) -> bool:
    """Whether any key is a Caffe2 / Detectron1 ResNet blob name (``res2_0_branch2a_w``)."""
    return any(_C2_BODY.search(k) for k in keys)


def to_torchvision(raw: Mapping[str, Any], fmt: str,
                   author: str | None) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Map a Detectron2 (``fmt="detectron2"``) or Caffe2 (``"caffe2"``) dict to torchvision names.

    Non-backbone entries (FPN, RPN, heads) are dropped and counted. Returns the state dict and the
    metadata described in :func:`featscope.extractors.checkpoints.read_state_dict`.
    """
    sd: dict[str, torch.Tensor] = {}
    for key, value in raw.items():
        new = _map_c2(key) if fmt == "caffe2" else _map_d2(key)
        if new is not None:
            if new in sd:
                raise CheckpointError(f"two entries map to {new!r} (second: {key!r}); the file mixes "
                                      f"backbones — pass --weights-format (REST: weights_format) explicitly or re-export it")
            sd[new] = to_tensor(key, value)
    if "fc.weight" in sd and sd["fc.weight"].ndim == 4:  # Caffe2 may store the classifier as 1x1 conv
        sd["fc.weight"] = sd["fc.weight"].flatten(1)
    meta: dict[str, Any] = {"notes": [], "dropped_keys": len(raw) - len(sd), "frozen_bn": True}
    affine = _fill_missing_stats(sd)
    if affine:
        meta["affine_bn"] = affine
        meta["notes"].append(f"{len(affine)} norm layers had no running statistics (Caffe2 AffineChannel or "
                             f"early FrozenBatchNorm); filled mean 0, var 1 and used eps 0 so y = w*x + b exactly")
    preprocess, stride_in_1x1, why = _conventions(raw, fmt, author)
    meta.update(preprocess=preprocess.to_dict(), stride_in_1x1=stride_in_1x1)
    meta["notes"].append(why)
    return sd, meta


def _map_d2(key: str) -> str | None:
    for prefix in _D2_PREFIXES:
        if not key.startswith(prefix):
            continue
        rest = key[len(prefix):]
        if prefix == "roi_heads." and not rest.startswith("res5."):
            return None
        if prefix == "" and rest.startswith("linear."):  # Detectron2's classification ResNet head
            return "fc." + rest[len("linear."):] if rest in ("linear.weight", "linear.bias") else None
        for pattern, template in _D2_RULES:
            m = pattern.fullmatch(rest)
            if m:
                return _expand(m, template)
    return None


def _map_c2(key: str) -> str | None:
    for pattern, template in _C2_RULES:
        m = pattern.fullmatch(key)
        if m:
            return _expand(m, template)
    return None


def _expand(m: re.Match[str], template: str) -> str:
    """Fill a rule's template: {L} = torchvision stage (resN -> layer N-1), {K} = branch2a/b/c -> 1/2/3."""
    if "{L}" in template:
        template = template.replace("{L}", str(int(m.group(1)) - 1))
    if "{K}" in template:
        template = template.replace("{K}", str("abc".index(m.group(3)) + 1))
    return m.expand(template)


def to_tensor(key: str, value: Any) -> torch.Tensor:
    """A CPU tensor from a tensor or a numeric numpy array; anything else is a CheckpointError."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, np.ndarray) and value.dtype.kind in "fiub":
        return torch.from_numpy(np.array(value, copy=True))
    raise CheckpointError(f"entry {key!r} is a {type(value).__name__} "
                          f"{getattr(value, 'dtype', '')}, not a numeric array")


def _fill_missing_stats(sd: dict[str, torch.Tensor]) -> list[str]:
    """Give every norm layer with weight but no running stats mean 0 / var 1; return their names."""
    norms = [k[: -len(".weight")] for k in sd if k.endswith(".weight") and _is_norm(k[: -len(".weight")])]
    filled = []
    for name in norms:
        if f"{name}.running_mean" not in sd and f"{name}.running_var" not in sd:
            sd[f"{name}.running_mean"] = torch.zeros_like(sd[f"{name}.weight"], dtype=torch.float32)
            sd[f"{name}.running_var"] = torch.ones_like(sd[f"{name}.weight"], dtype=torch.float32)
            filled.append(name)
    return filled


def _is_norm(module: str) -> bool:
    last = module.rsplit(".", 1)[-1]
    return last.startswith("bn") or module.endswith("downsample.1")


def _conventions(raw: Mapping[str, Any], fmt: str, author: str | None) -> tuple[Preprocess, bool, str]:
    """(preprocess, stride_in_1x1, explanation) for the network these weights came from."""
    mean, std = raw.get("pixel_mean"), raw.get("pixel_std")
    if mean is not None and std is not None and np.asarray(mean).size == 3 and np.asarray(std).size == 3:
        mean_t = tuple(float(v) for v in np.asarray(mean).reshape(3))
        std_t = tuple(float(v) for v in np.asarray(std).reshape(3))
        caffe = all(abs(s - 1.0) < 0.5 for s in std_t)
        order = "BGR" if mean_t[0] < mean_t[2] else "RGB"  # ImageNet means: R 124 > G 116 > B 104
        pre = Preprocess(mean=mean_t, std=std_t, channel_order=order, pixel_scale=255.0)
        return pre, caffe, (f"pixel_mean/pixel_std from the file: {order} input in [0, 255]; "
                            f"{'MSRA' if caffe else 'torchvision'} ResNet (stride in the "
                            f"{'1x1' if caffe else '3x3'} conv of each bottleneck)")
    if fmt == "detectron2" and author == "torchvision":
        return Preprocess(), False, ("__author__ 'torchvision': torchvision ResNet conventions "
                                     "(RGB, ImageNet normalisation)")
    return CAFFE_PREPROCESS, True, ("no pixel statistics in the file: assuming Detectron2's MSRA defaults "
                                    "(BGR input in [0, 255], stride in the 1x1 conv); "
                                    "pass a preprocess to override")
