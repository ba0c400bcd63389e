"""Job kinds ``heatmap`` and ``maskout``: activation / mask-out maps of a catalog image or an upload.

Registered in :mod:`featscope.worker.kinds` (which imports this module). Parameters name the image by catalog id
(``image_id``) or upload id (``upload_id``), never by a client path; the result holds the map
artifact's key, whose overlay PNG ``GET /api/v1/maps/{job}/overlay.png`` serves.
"""

from __future__ import annotations

import re
from typing import Any

from pathlib import Path

from featscope.worker.kinds import JobKind, Report, register_kind
from featscope.workspace.context import Context

_UPLOAD_ID = re.compile(r"^[0-9a-f]{32}$")


def upload_path(uploads_dir: Path, upload_id: str) -> Path:
    """The stored file of ``upload_id``; ``FileNotFoundError`` if there is none (ids are 32 hex digits)."""
    if not _UPLOAD_ID.match(upload_id or ""):
        raise ValueError(f"upload id must be 32 hex digits (as returned by POST /api/v1/uploads), got {upload_id!r}")
    hits = [p for p in uploads_dir.glob(f"{upload_id}.*") if p.is_file()] if uploads_dir.is_dir() else []
    if not hits:
        raise FileNotFoundError(f"no upload {upload_id}; upload the image again with POST /api/v1/uploads")
    return hits[0]
_COMMON = {"backbone", "image_id", "upload_id", "probe_dataset"}
_HEATMAP = _COMMON | {"tap", "method", "target", "top_channels"}
_MASKOUT = _COMMON | {"target", "size", "stride", "fill", "mean_pixel", "precision", "approx_margin", "scale"}


def _normalize(allowed: set[str], defaults: dict[str, Any], required: tuple[str, ...]):
    def normalize(params: dict[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(params) - allowed)
        if unknown:
            raise ValueError(f"unknown parameter(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}")
        for name in required:
            if params.get(name) in (None, ""):
                raise ValueError(f"{name!r} is required")
        if (params.get("image_id") is None) == (params.get("upload_id") is None):
            raise ValueError("give exactly one of image_id (a catalog image) and upload_id (an upload)")
        if params.get("upload_id") is not None and not _UPLOAD_ID.match(str(params["upload_id"])):
            raise ValueError("upload_id must be the 32 hex digit id POST /api/v1/uploads returned")
        return {**defaults, **{k: v for k, v in params.items() if v is not None}}

    return normalize


def map_image(ctx: Context, params: dict[str, Any]) -> Path | int:
    """The image a map job's parameters name: an upload's stored file, or a catalog image id."""
    if params.get("upload_id") is not None:
        return upload_path(ctx.settings.data_dir / "uploads", str(params["upload_id"]))
    return int(params["image_id"])


def _result(res) -> dict[str, Any]:
    return {"map": res.kind, "artifact_key": res.artifact_key, "cached": res.cached, "backbone": res.backbone,
            "image": res.image, "params": res.params, "data": res.data, "legend": res.legend}


def _run_heatmap(ctx: Context, params: dict[str, Any], report: Report) -> dict[str, Any]:
    from featscope.workspace.maps import heatmap

    report.progress(0.0, "computing the activation map")
    res = heatmap(ctx, params["backbone"], map_image(ctx, params), tap=params["tap"], method=params["method"],
                  target=params.get("target"), top_channels=params["top_channels"],
                  probe_dataset=params.get("probe_dataset"), on_message=report.log)
    return _result(res)


def _run_maskout(ctx: Context, params: dict[str, Any], report: Report) -> dict[str, Any]:
    from featscope.workspace.maps import maskout

    res = maskout(ctx, params["backbone"], map_image(ctx, params), target=params["target"], size=params["size"],
                  stride=params["stride"], fill=params["fill"], mean_pixel=params.get("mean_pixel"), precision=params["precision"],
                  approx_margin=params.get("approx_margin"), probe_dataset=params.get("probe_dataset"),
                  scale=params.get("scale", "relative"),
                  progress=lambda done, total: report.progress(done / max(total, 1), f"{done}/{total} mask positions"),
                  on_message=report.log)
    return _result(res)


register_kind("heatmap", JobKind(
    _normalize(_HEATMAP, {"tap": "conv5", "method": "mean", "top_channels": 0}, ("backbone",)), _run_heatmap,
    "Activation or Grad-CAM map: {backbone, image_id | upload_id, tap, method, target?, top_channels?}"))
register_kind("maskout", JobKind(
    _normalize(_MASKOUT, {"size": 60, "stride": 8, "fill": "zero", "precision": "fp32", "scale": "relative"},
               ("backbone", "target")), _run_maskout,
    "Mask-out map: {backbone, image_id | upload_id, target, size, stride, fill, mean_pixel?, precision, approx_margin?, "
    "scale?}"))
