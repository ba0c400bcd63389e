"""Load a backbone from any source and weight format, never over the network, never silently random.

Public names: :data:`SOURCES`, :func:`list_sources`, :func:`parse_spec`, :func:`load_backbone`,
:func:`weights_fingerprint`, :class:`TapInfo`, :func:`list_taps`.

A spec is ``source:name``: ``torchvision:resnet50`` (ImageNet weights from the local torch hub
cache or ``weights=``), ``torchvision-det:fasterrcnn_resnet50_fpn`` (the ResNet body of a
torchvision detector), ``timm:convnext_tiny`` (with ``weights=``), ``checkpoint:/path/file`` (any
format :mod:`featscope.extractors.checkpoints` reads) and ``run:<id>`` (training runs, later).

Every tensor of the network comes from the weight file, or the caller asked for ``random_init``:
a file that leaves any tensor unfilled is a :class:`~featscope.extractors.checkpoints.CheckpointError`.
The one exception is a classifier absent as a whole from a body-only file; the classifier is then
removed from the network, so nothing random remains.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from featscope.extractors import architectures as archs
from featscope.extractors.checkpoints import WEIGHTS_FORMATS, CheckpointError, load_exact, read_state_dict
from featscope.extractors.taps import POOLINGS, pool, pooled_dim, tap_model
from featscope.extractors.timm_files import timm_folder
from featscope.extractors.types import Backbone, Preprocess

SOURCES = ("torchvision", "torchvision-det", "timm", "checkpoint", "run")
_EXAMPLE = "torchvision:resnet50, torchvision-det:fasterrcnn_resnet50_fpn, timm:resnet50, checkpoint:/path/file.pth"
_HASH_IN_NAME = re.compile(r"-([a-f0-9]+)\.")


def list_sources() -> list[str]:
    """The backbone sources a spec may name, in the order of :data:`SOURCES`."""
    return list(SOURCES)


def parse_spec(spec: str) -> tuple[str, str]:
    """``"torchvision:resnet50"`` -> ``("torchvision", "resnet50")``; the name may contain colons."""
    source, sep, name = spec.partition(":") if isinstance(spec, str) else ("", "", "")
    if not sep or source not in SOURCES or not name.strip():
        raise ValueError(f"bad backbone spec {spec!r}: write SOURCE:NAME with SOURCE one of "
                         f"{', '.join(SOURCES)}; for example {_EXAMPLE}")
    return source, name.strip()


def load_backbone(
    spec: str,
    *,
    weights: str | Path | None = None,
    weights_format: str = "auto",
    arch: str | None = None,
    random_init: bool = False,
    seed: int = 0,
    preprocess: Preprocess | None = None,
) -> Backbone:
    """Build and fill the backbone ``spec`` names; the model is in eval mode on the CPU.

    ``weights``: a local file for torchvision/torchvision-det/timm specs (default for torchvision
    specs: the official file in the torch hub cache). ``weights_format``: force a format instead of
    detecting it. ``arch``: the architecture of a ``checkpoint:`` file when its keys do not say.
    ``random_init``: an untrained network seeded with ``seed``. ``preprocess`` overrides the
    preprocessing that travels with the weights.
    """
    source, name = parse_spec(spec)
    if weights_format not in WEIGHTS_FORMATS:
        raise ValueError(f"unknown weights format {weights_format!r}; choose one of {', '.join(WEIGHTS_FORMATS)}")
    if preprocess is not None and not isinstance(preprocess, Preprocess):
        raise TypeError("preprocess must be a featscope Preprocess")
    if random_init and weights is not None:
        raise ValueError("pass either a weights file (--weights FILE, REST: weights) or --random-init (REST: random_init), not both")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {seed!r}")
    if source == "run":
        raise ValueError(f"backbone {spec!r}: training runs arrive with the training issue; "
                         f"load its checkpoint file with checkpoint:/path/file.pth for now")
    if source != "checkpoint" and arch is not None and arch != name:
        raise ValueError(f"{spec} already names the architecture; drop --arch {arch} (REST: arch)")
    weights = Path(weights) if weights is not None else None
    loader = {"torchvision": _torchvision, "torchvision-det": _detector, "timm": _timm,
              "checkpoint": _checkpoint}[source]
    return loader(spec, name, weights=weights, weights_format=weights_format, arch=arch,
                  random_init=random_init, seed=seed, preprocess=preprocess)


def weights_fingerprint(model: nn.Module, arch_id: str) -> str:
    """sha256 over ``arch_id`` and every tensor of ``model`` (sorted keys, dtype, shape, raw bytes).

    ``num_batches_tracked`` is left out: it does not change an eval-mode forward and is absent
    from FrozenBatchNorm networks, so the same weights hash the same from any format.
    """
    h = hashlib.sha256(arch_id.encode())
    for key, value in sorted(model.state_dict().items()):
        if key.endswith("num_batches_tracked"):
            continue
        t = value.detach().cpu().contiguous().reshape(-1)
        h.update(f"\0{key}\0{t.dtype}\0{tuple(value.shape)}\0".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


@dataclass
class TapInfo:
    """One tap: its name, the aliases that point at it, its (C, H, W) and vector length per pooling."""

    name: str
    aliases: list[str]
    channels: int
    height: int
    width: int
    dims: dict[str, int] = field(default_factory=dict)


def list_taps(backbone: Backbone, input_size: int | None = None) -> list[TapInfo]:
    """Every tap of ``backbone`` with its shape at ``input_size`` (default: the crop size), in order."""
    size = backbone.preprocess.crop if input_size is None else input_size
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"input_size must be a positive int, got {input_size!r}")
    names = list(backbone.taps)
    dtype = next((p.dtype for p in backbone.model.parameters()), torch.float32)
    with torch.no_grad():
        out = tap_model(backbone, names)(torch.zeros(1, 3, size, size, dtype=dtype))
    infos = []
    for name in names:
        act = out[name]
        if not isinstance(act, torch.Tensor) or act.ndim != 4:
            raise ValueError(f"tap {name!r} of {backbone.spec} is not a (B, C, H, W) map "
                             f"(got {getattr(act, 'shape', type(act))}); featscope taps convolutional maps")
        _, c, h, w = act.shape
        infos.append(TapInfo(name=name, aliases=[a for a, t in backbone.aliases.items() if t == name],
                             channels=c, height=h, width=w, dims={p: pooled_dim(c, h, w, p) for p in POOLINGS}))
    return infos


# --- sources ----------------------------------------------------------------------------------

def _torchvision(spec: str, name: str, *, weights: Path | None, weights_format: str, arch: str | None,
                 random_init: bool, seed: int, preprocess: Preprocess | None) -> Backbone:
    if name not in archs.torchvision_names():
        raise ValueError(f"{name!r} is not a torchvision classification model; see "
                         f"torchvision.models.list_models(module=torchvision.models), e.g. resnet50")
    archs.check_not_transformer(name)
    if random_init:
        with _seeded(seed):
            model = archs.build(name, "torchvision")
        return _assemble(spec, "torchvision", name, model, "torchvision", preprocess or Preprocess(),
                         _random_fingerprint(seed, name))
    if weights is None:
        weights, entry = _cached_official(spec, name)
        sd, fmt, meta = read_state_dict(weights, "torchvision")
    else:
        # An official file passed by hand (e.g. `--weights resnet50-11ad3fa6.pth`) brings its own
        # transform and class names, as it does from the hub cache.
        entry = _official_entry(name, weights)
        sd, fmt, meta = read_state_dict(weights, weights_format)
    if entry is not None:
        default_pre = _official_preprocess(entry)
        class_names = list(entry.meta.get("categories") or []) or None
    else:
        default_pre = Preprocess.from_dict(meta["preprocess"]) if "preprocess" in meta else Preprocess()
        class_names = meta.get("class_names")
    model, arch_id = _fill(name, "torchvision", sd, meta, f"{weights} ({fmt})", fmt)
    return _assemble(spec, "torchvision", name, model, "torchvision", preprocess or default_pre,
                     weights_fingerprint(model, arch_id), class_names, str(weights), fmt)


def _detector(spec: str, name: str, *, weights: Path | None, weights_format: str, arch: str | None,
              random_init: bool, seed: int, preprocess: Preprocess | None) -> Backbone:
    import torchvision

    if name not in archs.DETECTORS:
        raise ValueError(f"torchvision-det supports the ResNet-50 detectors {', '.join(archs.DETECTORS)}; "
                         f"got {name!r}")
    if weights_format not in ("auto", "torchvision-det"):
        raise ValueError(f"{spec} reads the detector's own state dict; drop --weights-format (REST: weights_format) "
                         f"{weights_format} or use checkpoint:FILE for other formats")
    with _seeded(seed):  # only matters for random_init; loaded weights overwrite every tensor
        detector = torchvision.models.get_model(name, weights=None, weights_backbone=None)
    fmt = None
    if not random_init:
        if weights is None:
            weights, _entry = _cached_official(spec, name)
        sd, _, _ = read_state_dict(weights, "torchvision")  # full detector keys, unmapped
        fmt = "torchvision-det"
        load_exact(detector, sd, source=f"{weights}",
                   hint=f"is it the state dict of {name}? Name the detector that saved it "
                        f"(torchvision-det:NAME) or load just its body with checkpoint:{weights}")
    body = archs.build("resnet50", "torchvision", frozen_bn=archs.DETECTORS[name])
    body.fc = nn.Identity()
    load_exact(body, detector.backbone.body.state_dict(), source=f"{name} body")
    fp = _random_fingerprint(seed, name) if random_init else weights_fingerprint(body, "resnet50")
    return _assemble(spec, "torchvision-det", "resnet50", body, "torchvision", preprocess or Preprocess(), fp,
                     None, str(weights) if weights else None, fmt, classifier=False)


def _timm(spec: str, name: str, *, weights: Path | None, weights_format: str, arch: str | None,
          random_init: bool, seed: int, preprocess: Preprocess | None) -> Backbone:
    import timm

    if not timm.is_model(name):
        raise ValueError(f"{name!r} is not a timm model; see timm.list_models('{name[:6]}*')")
    if random_init:
        with _seeded(seed):
            model = archs.build(name, "timm")
        return _assemble(spec, "timm", name, model, "timm", preprocess or _timm_preprocess(model),
                         _random_fingerprint(seed, name))
    if weights is None:
        raise FileNotFoundError(f"{spec} needs a local weights file: pass --weights FILE (REST: weights; a timm state dict "
                                f".pth/.bin/.safetensors) or --random-init (REST: random_init) for an untrained "
                                f"network; "
                                f"featscope never downloads weights")
    sd, fmt, meta = read_state_dict(weights, weights_format)
    fmt = "timm" if fmt == "torchvision" else fmt  # same container; the names are timm's own
    hub = timm_folder(weights)
    hub = hub if hub is not None and hub.fits(name) else None
    model, arch_id = _fill(name, "timm", sd, meta, f"{weights} ({fmt})", fmt, hub.model_name if hub else None)
    pre = Preprocess.from_dict(meta["preprocess"]) if "preprocess" in meta else _timm_preprocess(model)
    return _assemble(spec, "timm", name, model, "timm", preprocess or pre, weights_fingerprint(model, arch_id),
                     meta.get("class_names") or (hub.label_names if hub else None), str(weights), fmt)


def _checkpoint(spec: str, name: str, *, weights: Path | None, weights_format: str, arch: str | None,
                random_init: bool, seed: int, preprocess: Preprocess | None) -> Backbone:
    if weights is not None or random_init:
        raise ValueError(f"{spec} already names the weights file; drop --weights / --random-init (REST: weights, random_init)")
    path = Path(name).expanduser()
    sd, fmt, meta = read_state_dict(path, weights_format)
    # a plain state dict with timm's config.json beside it (the hub's layout) is a timm network
    hub = timm_folder(path) if fmt in ("torchvision", "timm") else None
    arch = arch or meta.get("arch") or (hub.architecture if hub else None) or archs.infer_arch(sd)
    if not arch:
        raise ValueError(f"could not infer the architecture of {path} from its keys; pass --arch NAME "
                         f"(REST: arch), e.g. resnet50")
    hub = hub if hub is not None and hub.fits(arch) else None
    prefer = "timm" if fmt == "timm" or meta.get("builder") == "timm" or hub else None
    builder = archs.builder_for(arch, prefer, sd)
    if builder == "timm" and fmt == "torchvision":
        fmt = "timm"  # same container; the names are timm's own
    model, arch_id = _fill(arch, builder, sd, meta, f"{path} ({fmt})", fmt, hub.model_name if hub else None)
    if "preprocess" in meta:
        default_pre = Preprocess.from_dict(meta["preprocess"])
    else:  # timm networks: their pretrained_cfg, as for timm:NAME
        default_pre = _timm_preprocess(model) if builder == "timm" else Preprocess()
    class_names = meta.get("class_names") or (hub.label_names if hub else None)
    return _assemble(spec, "checkpoint", arch, model, builder, preprocess or default_pre,
                     weights_fingerprint(model, arch_id), class_names, str(path), fmt)


# --- helpers ----------------------------------------------------------------------------------

def _fill(arch: str, builder: str, sd: dict[str, torch.Tensor], meta: dict[str, Any], source: str,
          fmt: str, timm_name: str | None = None) -> tuple[nn.Module, str]:
    """Build ``arch`` as the weights' framework ran it and load ``sd`` exactly; (model, fingerprint id).
    ``timm_name``: build the timm model by that name instead (``local-dir:FOLDER``, see timm_files)."""
    frozen = bool(meta.get("frozen_bn")) and builder == "torchvision" and archs.is_resnet_name(arch)
    stride = bool(meta.get("stride_in_1x1")) and builder == "torchvision" and "layer1.0.conv3.weight" in sd
    model = archs.build(arch, builder, frozen_bn=frozen, stride_in_1x1=stride, timm_name=timm_name)
    head = archs.find_classifier(model, arch)
    if head:
        _fit_head(model, head[0], head[1], sd)
        head = archs.find_classifier(model, arch)
    inferred = archs.infer_arch(sd)
    hint = (f"the file holds {inferred} weights: pass --arch {inferred} (REST: arch)" if inferred and inferred != arch
            else f"pass the network the file was saved from (--arch NAME, REST: arch); it was read as format {fmt}, "
                 f"so if that is wrong name the format (--weights-format NAME, REST: weights_format)")
    absent = load_exact(model, sd, optional=(f"{head[0]}.",) if head else (), source=source, hint=hint)
    if absent:
        _drop_classifier(model, head[0])
    modules = dict(model.named_modules())
    for name in meta.get("affine_bn", []):
        if name in modules and hasattr(modules[name], "eps"):
            modules[name].eps = 0.0
    arch_id = arch + ("+stride_in_1x1" if stride else "") + ("+affine_bn" if meta.get("affine_bn") else "")
    return model, arch_id


def _fit_head(model: nn.Module, name: str, linear: nn.Linear, sd: dict[str, torch.Tensor]) -> None:
    """Resize the classifier to the file's class count (a fine-tuned head); its values still come from the file."""
    weight = sd.get(f"{name}.weight")
    if weight is None or weight.ndim != 2 or weight.shape[1] != linear.in_features \
            or weight.shape[0] == linear.out_features:
        return
    if hasattr(model, "reset_classifier"):  # timm
        model.reset_classifier(int(weight.shape[0]))
        return
    _replace(model, name, nn.Linear(linear.in_features, int(weight.shape[0]), bias=f"{name}.bias" in sd))


def _replace(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, module)


def _drop_classifier(model: nn.Module, name: str) -> None:
    if hasattr(model, "reset_classifier"):  # timm keeps its pooling/flatten consistent this way
        model.reset_classifier(0)
        return
    _replace(model, name, nn.Identity())


def _assemble(spec: str, source: str, arch: str, model: nn.Module, builder: str, preprocess: Preprocess,
              fingerprint: str, class_names: list[str] | None = None, weights: str | None = None,
              weights_format: str | None = None, classifier: bool = True) -> Backbone:
    model = model.float().cpu().eval()
    taps, aliases = archs.discover_taps(model, builder)
    head = _checked_classifier(model, arch, taps) if classifier else None
    if head is None or (class_names is not None and len(class_names) != head.out_features):
        class_names = None
    return Backbone(spec=spec, source=source, arch=arch, model=model, preprocess=preprocess,
                    fingerprint=fingerprint, taps=taps, aliases=aliases, classifier=head,
                    class_names=class_names, weights=weights, weights_format=weights_format)


def _checked_classifier(model: nn.Module, arch: str, taps: dict[str, str]) -> nn.Module | None:
    """The final Linear if the model's logits are exactly it applied to the avg-pooled last tap."""
    found = archs.find_classifier(model, arch)
    if found is None:
        return None
    linear = found[1]
    last = model.get_submodule(list(taps.values())[-1])
    seen: list[torch.Tensor] = []
    handle = last.register_forward_hook(lambda _m, _i, out: seen.append(out.clone()))  # before in-place ops
    try:
        with torch.no_grad():
            x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
            logits = model(x)
    except Exception:  # noqa: BLE001 - a net that cannot run at 64x64 keeps no verified classifier
        return None
    finally:
        handle.remove()
    if not seen or not isinstance(logits, torch.Tensor) or seen[-1].ndim != 4 \
            or seen[-1].shape[1] != linear.in_features:
        return None
    with torch.no_grad():
        mine = linear(pool(seen[-1], "avg"))
    if mine.shape != logits.shape:
        return None
    scale = float(logits.abs().max()) + 1e-6
    return linear if torch.allclose(mine, logits, rtol=1e-4, atol=1e-5 * scale) else None


@contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """Seed torch for a reproducible initialisation without disturbing the caller's random state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def _random_fingerprint(seed: int, arch: str) -> str:
    return hashlib.sha256(f"random-init:{seed}:{arch}".encode()).hexdigest()


def _official_entries(name: str) -> list[Any]:
    from torchvision.models import get_model_weights

    enum = get_model_weights(name)
    return [enum.DEFAULT] + [w for w in enum if w is not enum.DEFAULT]


def _official_entry(name: str, path: Path) -> Any | None:
    """The official weights entry whose file ``path`` is (same file name, checksum verified), or None."""
    try:
        entries = _official_entries(name)
    except (ValueError, KeyError, AttributeError):  # a model without published weights
        return None
    for entry in entries:
        if path.name == entry.url.rsplit("/", 1)[-1]:
            _verify_hash_in_name(path, entry.url)
            return entry
    return None


def _cached_official(spec: str, name: str) -> tuple[Path, Any]:
    """(path, weights entry) of an official weights file already in the local torch hub cache."""
    folder = Path(torch.hub.get_dir()) / "checkpoints"
    entries = _official_entries(name)
    for entry in entries:
        path = folder / entry.url.rsplit("/", 1)[-1]
        if path.is_file():
            _verify_hash_in_name(path, entry.url)
            return path, entry
    url = entries[0].url
    raise FileNotFoundError(
        f"no local weights for {spec}: featscope never downloads. On a machine with internet fetch\n"
        f"  {url}\nand put it in {folder}/ (keep its file name); or pass --weights FILE (REST: weights); "
        f"or pass --random-init (REST: random_init) for an untrained network")


def _verify_hash_in_name(path: Path, url: str) -> None:
    m = _HASH_IN_NAME.search(path.name)
    if not m:
        return
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    if not digest.hexdigest().startswith(m.group(1)):
        raise CheckpointError(f"{path} does not match the checksum in its name (sha256 starts "
                              f"{digest.hexdigest()[:len(m.group(1))]}, expected {m.group(1)}); it is corrupt "
                              f"or not the official file: delete it and fetch {url} again")


def _official_preprocess(entry: Any) -> Preprocess:
    """torchvision's own eval transform for these weights (e.g. resize 232 for ResNet-50 V2)."""
    kw = dict(getattr(entry.transforms, "keywords", {}) or {})
    crop = int(kw.get("crop_size", 224))
    interp = getattr(kw.get("interpolation"), "value", "bilinear")
    return Preprocess(resize=int(kw.get("resize_size", 256)), crop=crop,
                      mean=tuple(kw.get("mean", Preprocess.mean)), std=tuple(kw.get("std", Preprocess.std)),
                      interpolation=interp if interp in ("bilinear", "bicubic", "nearest") else "bilinear")


def _timm_preprocess(model: nn.Module) -> Preprocess:
    """timm's resolved eval config: input size, crop_pct -> resize, mean, std, interpolation."""
    import timm

    cfg = timm.data.resolve_data_config({}, model=model)
    crop = int(min(cfg["input_size"][1:]))
    resize = max(crop, math.floor(crop / float(cfg.get("crop_pct") or 0.875)))
    interp = cfg.get("interpolation", "bicubic")
    return Preprocess(resize=resize, crop=crop, mean=tuple(cfg["mean"]), std=tuple(cfg["std"]),
                      interpolation=interp if interp in ("bilinear", "bicubic", "nearest") else "bicubic")
