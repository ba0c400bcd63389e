"""Job kinds ``train`` and ``finetune``: a training run in a worker, with progress and cancel.

Registered in :mod:`featscope.worker.kinds` (which imports this module). The run itself is keyed by
its content, so a job run again (a retry after its worker died, a second submit) resumes the same run
from its last checkpoint instead of starting over.
"""

from __future__ import annotations

from typing import Any

from featscope.worker.kinds import JobKind, Report, register_kind
from featscope.workspace.context import Context

_COMMON = {"dataset", "preset", "classes", "name", "restart", "params"}
_TRAIN = _COMMON | {"task", "val_dataset", "init"}
_FINETUNE = _COMMON | {"task", "backbone", "test_dataset"}


def _ref(value: Any, what: str, optional: bool = False) -> str | int | None:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int)) or value == "":
        raise ValueError(f"{what} must be a registered name or id, got {value!r}")
    return value


def _normalize(allowed: set[str], finetune: bool):
    def normalize(params: dict[str, Any]) -> dict[str, Any]:
        from featscope.training.presets import resolve_config

        unknown = sorted(set(params) - allowed)
        if unknown:
            raise ValueError(f"unknown parameter(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}")
        task = params.get("task")
        tasks = ("cls", "det", "seg") if finetune else ("cls", "det")
        if task not in tasks:
            named = [repr(t) for t in tasks]
            raise ValueError(f"task must be {', '.join(named[:-1])} or {named[-1]}, got {task!r}")
        extra = params.get("params") or {}
        if not isinstance(extra, dict):
            raise ValueError(f"params must be an object of training parameters, got {extra!r}")
        preset = params.get("preset") or "cpu-demo"
        resolve_config(f"finetune-{task}" if finetune else task, preset, extra)  # unknown preset / field / value
        classes = params.get("classes")
        if classes is not None and (not isinstance(classes, list) or not all(isinstance(c, str) for c in classes)):
            raise ValueError(f"classes must be a list of class names, got {classes!r}")
        out = {"task": task, "dataset": _ref(params.get("dataset"), "dataset"), "preset": preset,
               "classes": classes, "name": params.get("name"), "restart": bool(params.get("restart", False)),
               "params": dict(extra)}
        if finetune:
            out["backbone"] = _ref(params.get("backbone"), "backbone")
            out["test_dataset"] = _ref(params.get("test_dataset"), "test_dataset", optional=True)
        else:
            out["val_dataset"] = _ref(params.get("val_dataset"), "val_dataset", optional=True)
            out["init"] = _ref(params.get("init"), "init", optional=True)
        return out

    return normalize


def _callbacks(report: Report) -> dict[str, Any]:
    def progress(p) -> None:  # featscope.training.loop.TrainProgress
        report.progress(p.iteration / max(p.iterations, 1), p.line())

    return {"progress": progress, "check": report.check, "on_message": report.log,
            "job_id": getattr(report, "job_id", None)}


def _result(info) -> dict[str, Any]:
    return {"run": info.id, "name": info.name, "task": info.task, "state": info.state, "cached": info.cached,
            "backbone_id": info.backbone_id, "eval": (info.result or {}).get("eval")}


def _run_train(ctx: Context, params: dict[str, Any], report: Report) -> dict[str, Any]:
    from featscope.workspace.training import train

    from featscope.training.runs import RunCancelled
    from featscope.worker.tasks import JobCancelled

    try:  # a run cancelled through `featscope runs cancel` ends its job as cancelled, not as an error to retry
        info = train(ctx, params["task"], params["dataset"], preset=params["preset"], init=params.get("init"),
                     val_dataset=params.get("val_dataset"), classes=params.get("classes"), name=params.get("name"),
                     restart=params["restart"], **_callbacks(report), **params["params"])
    except RunCancelled as e:
        raise JobCancelled(str(e)) from None
    return _result(info)


def _run_finetune(ctx: Context, params: dict[str, Any], report: Report) -> dict[str, Any]:
    from featscope.workspace.training import finetune

    from featscope.training.runs import RunCancelled
    from featscope.worker.tasks import JobCancelled

    try:
        info = finetune(ctx, params["task"], params["backbone"], params["dataset"], preset=params["preset"],
                        test_dataset=params.get("test_dataset"), classes=params.get("classes"),
                        name=params.get("name"), restart=params["restart"], **_callbacks(report), **params["params"])
    except RunCancelled as e:
        raise JobCancelled(str(e)) from None
    return _result(info)


register_kind("train", JobKind(_normalize(_TRAIN, False), _run_train,
                               "Pre-train a backbone: {task: cls|det, dataset, val_dataset?, preset, init?, classes?, "
                               "name?, restart?, params: {lr, epochs, ...}}"))
register_kind("finetune", JobKind(_normalize(_FINETUNE, True), _run_finetune,
                                  "Fine-tune a backbone: {task: cls|det|seg, backbone, dataset, test_dataset?, preset, "
                                  "classes?, name?, restart?, params}"))
