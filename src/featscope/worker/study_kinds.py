"""Job kind ``dataset-study``: generate the study's synthetic sets in the data dir and register them.

Registered in :mod:`featscope.worker.kinds` (which imports this module). The sets are written under
``<data dir>/study/<name>/<version>-<sizes>`` (never a client's path) and registered as ``<name>-pretrain``, ``-pretrain-val``,
``-target-train``, ``-target-test``, ``-single``, ``-several`` and ``-small``; the same parameters again
leave the files alone and register nothing new.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from featscope.worker.catalog_kinds import _NAME
from featscope.worker.kinds import JobKind, Report, register_kind
from featscope.workspace.context import Context

_COUNTS = {"n_pretrain": (1, 100_000, 4800), "n_pretrain_val": (1, 20_000, 150), "n_target_train": (1, 20_000, 300),
           "n_target_test": (1, 20_000, 150), "n_probe": (2, 5_000, 40), "size": (32, 512, 128),
           "seed": (0, 2**31 - 1, 0)}


def study_dir(data_dir: Path, name: str, counts: dict[str, int] | None = None) -> Path:
    """``<data dir>/study/<name>/<generator version>-<hash of the counts>``: other sizes, or a newer generator,
    write beside the sets already there (registered as new versions of the same names), never over them."""
    from featscope.cache.store import content_key
    from featscope.datasets.study import GENERATOR_VERSION

    tag = content_key({"counts": dict(sorted((counts or {}).items()))})[:10]
    return data_dir / "study" / name / f"v{GENERATOR_VERSION}-{tag}"


def _normalize(params: dict[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(params) - {"name", *_COUNTS})
    if unknown:
        raise ValueError(f"dataset-study does not take {', '.join(unknown)}; it takes name, {', '.join(_COUNTS)}")
    name = params.get("name", "study")
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError(f"name must be 1-64 letters, digits, '_', '.' or '-' (it names a folder), got {name!r}")
    out: dict[str, Any] = {"name": name}
    for key, (lo, hi, default) in _COUNTS.items():
        value = params.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            raise ValueError(f"{key} must be an integer from {lo} to {hi}, got {value!r}")
        out[key] = value
    return out


def _run(ctx: Context, params: dict[str, Any], report: Report) -> dict[str, Any]:
    from featscope.workspace.datasets import study

    def progress(done: int, total: int) -> None:
        report.progress(0.9 * done / max(total, 1), f"{done}/{total} images generated")
        report.check()

    counts = {k: v for k, v in params.items() if k != "name"}
    infos = study(ctx, study_dir(ctx.settings.data_dir, params["name"], counts), name=params["name"],
                  progress=progress, **counts)
    for info in infos:
        report.log(f"{'registered' if info.created else 'already registered'}: {info.name}@{info.version}, "
                   f"{info.n_images} images")
    return {"datasets": [i.id for i in infos], "names": [i.name for i in infos],
            "n_images": [i.n_images for i in infos], "created": [i.created for i in infos],
            "cached": not any(i.created for i in infos)}


register_kind("dataset-study", JobKind(_normalize, _run, "Generate and register the study's synthetic sets: "
                                       "{name?, n_pretrain?, n_pretrain_val?, n_target_train?, n_target_test?, "
                                       "n_probe?, size?, seed?}"))
