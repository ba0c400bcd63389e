"""Job kinds ``dataset-synth`` and ``backbone-taps``: catalog work too slow for a request thread.

Registered in :mod:`featscope.worker.kinds` (which imports this module). ``dataset-synth`` generates the
synthetic shapes data set (up to thousands of images) and registers both halves, with progress;
``backbone-taps`` loads a backbone registered by an older featscope once, which records its taps'
shapes in the catalog so ``GET /api/v1/backbones/{b}/taps`` can answer without loading it again.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from featscope.worker.kinds import JobKind, Report, register_kind
from featscope.workspace.context import Context

_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_SYNTH_LIMITS = {"n_scenes": (1, 2000, 200), "n_per_class": (1, 500, 30), "size": (32, 512, 128),
                 "seed": (0, 2**31 - 1, 0)}


def synth_dir(data_dir: Path, name: str) -> Path:
    """Where the API's synthetic data set ``name`` is written: inside the data dir, never a client's path."""
    return data_dir / "synth" / name


def _normalize_synth(params: dict[str, Any]) -> dict[str, Any]:
    allowed = {"name", *_SYNTH_LIMITS}
    unknown = sorted(set(params) - allowed)
    if unknown:
        raise ValueError(f"dataset-synth does not take {', '.join(unknown)}; it takes {', '.join(sorted(allowed))}")
    name = params.get("name", "synth")
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError(f"name must be 1-64 letters, digits, '_', '.' or '-', got {name!r}")
    out: dict[str, Any] = {"name": name}
    for key, (lo, hi, default) in _SYNTH_LIMITS.items():
        value = params.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            raise ValueError(f"{key} must be an integer from {lo} to {hi}, got {value!r}")
        out[key] = value
    return out


def _run_synth(ctx: Context, params: dict[str, Any], report: Report) -> dict[str, Any]:
    from featscope.workspace.datasets import synth

    def progress(done: int, total: int) -> None:
        report.progress(0.9 * done / max(total, 1), f"{done}/{total} images generated")
        report.check()

    infos = synth(ctx, synth_dir(ctx.settings.data_dir, params["name"]), name=params["name"],
                  n_scenes=params["n_scenes"], n_per_class=params["n_per_class"], size=params["size"],
                  seed=params["seed"], progress=progress)
    for info in infos:
        report.log(f"{'registered' if info.created else 'already registered'}: {info.name}@{info.version}, "
                   f"{info.n_images} images")
    return {"datasets": [i.id for i in infos], "names": [i.name for i in infos],
            "n_images": [i.n_images for i in infos], "created": [i.created for i in infos]}


def _normalize_taps(params: dict[str, Any]) -> dict[str, Any]:
    if set(params) != {"backbone"}:
        raise ValueError(f"backbone-taps takes exactly 'backbone' (a registered name or id), got {sorted(params)}")
    ref = params["backbone"]
    if isinstance(ref, bool) or not isinstance(ref, (str, int)) or ref == "":
        raise ValueError(f"backbone must be a registered name or id, got {ref!r}")
    return {"backbone": ref}


def _run_taps(ctx: Context, params: dict[str, Any], report: Report) -> dict[str, Any]:
    from featscope.workspace.backbones import get_backbone_row, open_backbone, recorded_taps

    report.progress(0.0, "loading the backbone to record its taps")
    open_backbone(ctx, params["backbone"])  # records what an older row lacks
    row = get_backbone_row(ctx, params["backbone"])
    taps = recorded_taps(row) or []
    report.log(f"recorded {len(taps)} taps of {row.name}")
    return {"backbone": row.name, "taps": [t.name for t in taps]}


register_kind("dataset-synth", JobKind(_normalize_synth, _run_synth,
                                       "Generate and register the synthetic shapes data set: "
                                       "{name, n_scenes, n_per_class, size, seed}"))
register_kind("backbone-taps", JobKind(_normalize_taps, _run_taps,
                                       "Load a backbone once to record its taps' shapes: {backbone}"))
