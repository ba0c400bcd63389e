"""What a job can do: a registry of kinds, each checking its parameters and running through the Python API.

A kind is two functions: ``normalize(params) -> params`` runs at submit time (in the request thread:
cheap checks only, defaults filled in so equal requests get equal content keys) and raises
``ValueError`` with the fix; ``run(ctx, params, report) -> result`` runs in the worker. Add a kind
with :func:`register_kind` (``heatmap`` and ``maskout`` are meant to come this way).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from featscope.workspace.context import Context


class Report(Protocol):
    """What a running kind may call: progress (fraction 0..1 and a message), log lines, a cancel check."""

    def progress(self, fraction: float, message: str | None = None) -> None: ...

    def log(self, line: str) -> None: ...

    def check(self) -> None: ...


@dataclass(frozen=True)
class JobKind:
    normalize: Callable[[dict[str, Any]], dict[str, Any]]
    run: Callable[[Context, dict[str, Any], Report], dict[str, Any]]
    description: str = ""


KINDS: dict[str, JobKind] = {}


def register_kind(name: str, kind: JobKind) -> None:
    KINDS[name] = kind


def list_kinds() -> list[str]:
    return sorted(KINDS)


def get_kind(name: str) -> JobKind:
    if name not in KINDS:
        raise ValueError(f"unknown job kind {name!r}; choose from {', '.join(list_kinds())}")
    return KINDS[name]


# ---------------------------------------------------------------- extract
def _names(value: Any, what: str) -> list[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)) or not value or not all(isinstance(v, str) and v for v in value):
        raise ValueError(f"{what} must be a non-empty list of names, got {value!r}")
    return list(dict.fromkeys(value))


def _ref(value: Any, what: str) -> str | int:
    if isinstance(value, bool) or not isinstance(value, (str, int)) or value == "":
        raise ValueError(f"{what} must be a registered name or id, got {value!r}")
    return value


def _normalize_extract(params: dict[str, Any]) -> dict[str, Any]:
    allowed = {"backbone", "dataset", "taps", "poolings", "precision", "batch_size"}
    unknown = sorted(set(params) - allowed)
    if unknown:
        raise ValueError(f"extract does not take {', '.join(unknown)}; it takes {', '.join(sorted(allowed))}")
    for required in ("backbone", "dataset"):
        if required not in params:
            raise ValueError(f"extract needs {required!r} (a registered name or id)")
    out = {"backbone": _ref(params["backbone"], "backbone"), "dataset": _ref(params["dataset"], "dataset"),
           "taps": _names(params.get("taps", ["conv5"]), "taps"),
           "poolings": _names(params.get("poolings", ["avg"]), "poolings"),
           "precision": params.get("precision"), "batch_size": params.get("batch_size")}
    if out["precision"] not in (None, "fp32", "bf16", "fp16"):
        raise ValueError(f"precision must be fp32, bf16 or fp16, not {out['precision']!r}")
    bs = out["batch_size"]
    if bs is not None and (isinstance(bs, bool) or not isinstance(bs, int) or bs < 1):
        raise ValueError(f"batch_size must be a positive integer, got {bs!r}")
    return out


def _run_extract(ctx: Context, params: dict[str, Any], report: Report) -> dict[str, Any]:
    """Extract; over more than ``FEATSCOPE_EXTRACT_JOB_IMAGES`` images, split into shard jobs any worker may run."""
    from featscope.worker.sharding import run_extract

    return run_extract(ctx, params, report)


# ---------------------------------------------------------------- analysis
def _analysis_calls() -> dict[str, tuple[Callable[..., Any], Callable[[list[Any]], list[Any]]]]:
    """analysis name -> (function of featscope.workspace.analyze, inputs -> its positional arguments)."""
    from featscope.workspace import analyze as an

    return {
        "comembership": (an.comembership, lambda xs: _count(xs, 2, "embedding sets A and B")),
        "closest": (an.closest, lambda xs: [xs]),
        "contrast": (an.contrast, lambda xs: _count(xs, 2, "embedding sets A and B")),
        "agreement": (an.agreement, lambda xs: _count(xs, 2, "embedding sets A and B")),
        "projection": (an.projection, lambda xs: [xs]),
        "probe": (an.probe, lambda xs: _count(xs, 1, "one embedding set")),
        "similarity": (an.similarity, lambda xs: _count(xs, 2, "embedding sets A and B")),
        "cka-matrix": (an.cka_matrix, lambda xs: _count(xs, 3, "backbone A, backbone B and the data set")),
    }


ANALYSES = ("comembership", "closest", "contrast", "agreement", "projection", "probe", "similarity", "cka-matrix")
_RESERVED = ("progress", "on_message", "cached_only")


def _count(inputs: list[Any], n: int, what: str) -> list[Any]:
    if len(inputs) != n:
        raise ValueError(f"this analysis takes {n} input(s) ({what}), got {len(inputs)}: {inputs}")
    return list(inputs)


def _normalize_analysis(params: dict[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(params) - {"analysis", "inputs", "params"})
    if unknown:
        raise ValueError(f"an analysis job takes 'analysis', 'inputs' and 'params', not {', '.join(unknown)}")
    name = params.get("analysis")
    if name not in ANALYSES:
        raise ValueError(f"analysis must be one of {', '.join(ANALYSES)}, got {name!r}")
    inputs = params.get("inputs")
    if not isinstance(inputs, (list, tuple)) or not inputs:
        raise ValueError(f"inputs must be a non-empty list (embedding set ids, or for cka-matrix backbone A, "
                         f"backbone B and data set), got {inputs!r}")
    inputs = [_ref(x, "each input") for x in inputs]
    extra = params.get("params") or {}
    if not isinstance(extra, dict):
        raise ValueError(f"params must be an object of the analysis' parameters, got {extra!r}")
    bad = [k for k in extra if k in _RESERVED]
    if bad:
        raise ValueError(f"{', '.join(bad)} cannot be set on an analysis job")
    fn, args = _analysis_calls()[name]
    try:
        inspect.signature(fn).bind(None, *args(inputs), **extra)
    except TypeError as e:
        raise ValueError(f"bad parameters for {name}: {e}") from None
    return {"analysis": name, "inputs": inputs, "params": dict(extra)}


def _run_analysis(ctx: Context, params: dict[str, Any], report: Report) -> dict[str, Any]:
    fn, args = _analysis_calls()[params["analysis"]]
    kwargs = dict(params["params"])

    def say(line: str) -> None:
        report.log(line)
        report.check()

    kwargs["on_message"] = say
    if "progress" in inspect.signature(fn).parameters:
        kwargs["progress"] = lambda done, total: report.progress(done / max(total, 1), f"{done}/{total}")
    res = fn(ctx, *args(params["inputs"]), **kwargs)
    return {"analysis_id": res.id, "kind": res.kind, "cached": res.cached}


# ---------------------------------------------------------------- dataset-add
_FORMATS = ("auto", "imagefolder", "coco", "voc", "folder", "csv")


def _normalize_dataset_add(params: dict[str, Any]) -> dict[str, Any]:
    """The path must already be checked against the allowed roots (the API route does) and absolute."""
    allowed = {"path", "name", "format", "images_root", "split"}
    unknown = sorted(set(params) - allowed)
    if unknown:
        raise ValueError(f"dataset-add does not take {', '.join(unknown)}; it takes {', '.join(sorted(allowed))}")
    path = params.get("path")
    if not isinstance(path, str) or not path.startswith("/"):
        raise ValueError(f"dataset-add needs 'path', an absolute path, got {path!r}")
    out = {"path": path, "name": params.get("name"), "format": params.get("format") or "auto",
           "images_root": params.get("images_root"), "split": params.get("split")}
    if out["format"] not in _FORMATS:
        raise ValueError(f"format must be one of {', '.join(_FORMATS)}, got {out['format']!r}")
    return out


def _run_dataset_add(ctx: Context, params: dict[str, Any], report: Report) -> dict[str, Any]:
    from featscope.workspace.datasets import add_dataset

    def progress(done: int, total: int) -> None:
        report.progress(done / max(total, 1), f"{done}/{total} files checked")
        report.check()

    info = add_dataset(ctx, params["path"], name=params["name"], format=params["format"],
                       images_root=params["images_root"], split=params["split"], progress=progress)
    report.log(f"{'registered' if info.created else 'already registered'}: {info.name}@{info.version}, "
               f"{info.n_images} images, {info.n_skipped} skipped")
    return {"dataset": info.id, "name": info.name, "version": info.version, "n_images": info.n_images,
            "n_skipped": info.n_skipped, "created": info.created}


register_kind("dataset-add", JobKind(_normalize_dataset_add, _run_dataset_add,
                                     "Scan and register a data set: {path, name?, format?, images_root?, split?}"))
register_kind("extract", JobKind(_normalize_extract, _run_extract,
                                 "Embed a data set with a backbone: {backbone, dataset, taps, poolings, precision?, batch_size?}"))
register_kind("analysis", JobKind(_normalize_analysis, _run_analysis,
                                  "Run an analysis: {analysis, inputs, params}"))

from featscope.worker import map_kinds as _map_kinds  # noqa: E402,F401 - registers heatmap and maskout
from featscope.worker import catalog_kinds as _catalog_kinds  # noqa: E402,F401 - registers dataset-synth, backbone-taps
from featscope.worker import sharding as _sharding  # noqa: E402,F401 - registers extract-shard
from featscope.worker import train_kinds as _train_kinds  # noqa: E402,F401 - registers train and finetune
from featscope.worker import study_kinds as _study_kinds  # noqa: E402,F401 - registers dataset-study
