"""The demo's measured counterpart of each of the study's findings, read from the catalog and the cache.

Public names: :func:`measure`, :func:`study_findings`.

Reads only: cached analyses (``cached_only=True``), finished runs' evaluations, stored maps. Nothing is
computed here (the dashboard calls this in a request), so a finding whose inputs are not ready yet is
``not measured``. Backbone A is the classification run, B the detection run, as on every page.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import urlencode

import numpy as np

from featscope.analysis import findings as F
from featscope.analysis.study_measures import box_coverage, class_ap, knn_purity, largest_drop, same_class_share
from featscope.demo.pipeline import HEAD_POOLINGS, PROBE_PARTS, ROLES, embedding_set
from featscope.workspace import NotFound, Workspace
from featscope.workspace.analyses import NotCached

log = logging.getLogger(__name__)
PURITY_K = 10


def _cached(fn, *args, **kwargs):
    try:
        return fn(*args, cached_only=True, **kwargs)
    except (NotCached, NotFound, ValueError):
        return None


def _run_info(ws: Workspace, manifest: dict[str, Any], key: str):
    """The manifest's run ``key`` (``RunInfo``) when it exists and is done, else None."""
    run_id = (manifest.get("runs") or {}).get(key)
    if run_id is None:
        return None
    try:
        run = ws.run(run_id)
    except NotFound:
        return None
    return run if run.state == "done" else None


def _run_eval(ws: Workspace, manifest: dict[str, Any], key: str) -> dict[str, Any] | None:
    run = _run_info(ws, manifest, key)
    return (run.result or {}).get("eval") if run is not None else None


def _finetune(ws: Workspace, manifest: dict[str, Any]) -> tuple[dict, dict]:
    det, cls = {}, {}
    for role in ROLES:
        ev = _run_eval(ws, manifest, f"finetune-det-{role}")
        if ev and ev.get("ap"):
            det[role] = {t: (v if v is not None and v >= 0 else None) for t, v in ev["ap"].items()}
        ev = _run_eval(ws, manifest, f"finetune-cls-{role}")
        if ev and ev.get("top1") is not None:
            cls[role] = {"top1": ev["top1"], "interval": (ev.get("ci_low"), ev.get("ci_high"))}
    return det, cls


def _heldout(ws: Workspace, manifest: dict[str, Any]) -> dict[str, Any]:
    """Table 2: AP@0.7 on the held-out classes after fine-tuning from cls, det and the detector without them."""
    classes = (manifest.get("heldout") or {}).get("classes")
    if not classes:
        return {}
    out: dict[str, Any] = {"classes": list(classes)}
    for key, run in (("cls", "heldout-finetune-cls"), ("with", "heldout-finetune-det"),
                     ("without", "heldout-finetune-without")):
        ev = _run_eval(ws, manifest, run)
        if ev and ev.get("per_class") and ev.get("ap"):
            out[key] = class_ap(ev["per_class"], classes, sorted(ev["ap"], key=float), "0.7")
    return out


def _occlusion(ws: Workspace, manifest: dict[str, Any]) -> dict[str, Any]:
    """Table 3: each detection fine-tuning run's missed-object rate per occlusion bin, at IoU 0.5 and its
    operating score (0.5; or, when fewer than N of its boxes score 0.5, N = the test set's objects, its N-th best
    score, or its lowest when it has fewer than N boxes), from its ``detections.json`` when it kept one, else its
    stored evaluation (at the fixed score 0.5 for a run recorded before per-detector thresholds); ``rule``: how
    each threshold was chosen (:func:`featscope.training.detections.threshold_rule`)."""
    from featscope.workspace.detection_errors import run_missed_by_occlusion, threshold_rule

    out: dict[str, Any] = {}
    for role in ROLES:
        run = _run_info(ws, manifest, f"finetune-det-{role}")
        missed = run_missed_by_occlusion(run) if run is not None else None
        if missed:
            out[role] = {b["name"]: b["rate"] for b in missed["bins"]}
            out["objects"] = {b["name"]: b["objects"] for b in missed["bins"]}
            out.setdefault("score", {})[role] = missed.get("score", 0.5)
            out.setdefault("rule", {})[role] = threshold_rule(missed)
            out["n_objects"] = missed.get("n_objects")
    return out if all(r in out for r in ROLES) else {}


def _fig8(ws: Workspace, manifest: dict[str, Any]) -> dict[str, Any]:
    """Fig. 8: test images where only one of the two fine-tuned detectors finds an occluded object, each detector
    at its own operating score (the one its Table 3 rates are counted at)."""
    from featscope.training.detections import doc_threshold_rule
    from featscope.workspace.detection_errors import detection_pair

    ids = [(manifest.get("runs") or {}).get(f"finetune-det-{r}") for r in ROLES]
    if None in ids:
        return {}
    try:
        pair = detection_pair(ws.ctx, *ids)
    except (NotFound, ValueError, OSError) as e:
        log.info("Fig. 8 not measured: %s", e)
        return {}
    c = pair.compare()
    return {"only_cls": len(c.only_a), "only_det": len(c.only_b), "images": len(c.relpaths),
            "score": {"cls": c.score, "det": c.score_b},
            "rule": {role: doc_threshold_rule(doc) for role, doc in zip(ROLES, pair.docs)},
            "link": f"/detections?{urlencode({'a': ids[0], 'b': ids[1], 'show': 'only-b'})}"}


def _segmentation(ws: Workspace, manifest: dict[str, Any]) -> dict[str, Any]:
    """Table 4 and Fig. 2: mIoU and accuracy by band width of each segmentation fine-tuning run."""
    out = {}
    for role in ROLES:
        ev = _run_eval(ws, manifest, f"finetune-seg-{role}")
        if ev and ev.get("miou") is not None:
            out[role] = {"miou": ev["miou"],
                         "trimap": {r["width"]: r["accuracy"] for r in ev.get("trimap") or []},
                         "anti_trimap": {r["width"]: r["accuracy"] for r in ev.get("anti_trimap") or []}}
    return out


def _probe(ws: Workspace, set_info) -> dict[str, Any] | None:
    if set_info is None:
        return None
    res = _cached(ws.probe, set_info.id)
    return res.data if res is not None else None


def _probes(ws: Workspace, bbs: dict[str, str], ds: str) -> dict[str, tuple]:
    out = {}
    for part in PROBE_PARTS:
        c, d = (_probe(ws, embedding_set(ws, bbs[r], f"{ds}-{part}", "conv5")) for r in ROLES)
        if c and d:
            out[part] = (c["accuracy"], c["ci_low"], c["ci_high"], d["accuracy"], d["ci_low"], d["ci_high"])
    # Table 6 is judged on every probe set or not at all: a verdict on some of them would overstate it.
    return out if len(out) == len(PROBE_PARTS) else {}


def _head_probes(ws: Workspace, det: str, single: str) -> dict[str, float]:
    wanted = [("conv5", "avg"), *(("convproj", p) for p in HEAD_POOLINGS), ("fc1", "avg"), ("fc2", "avg")]
    out = {}
    for tap, pooling in wanted:
        d = _probe(ws, embedding_set(ws, det, single, tap, pooling))
        if d:
            out[f"{tap}/{pooling}"] = d["accuracy"]
    return out


def _pairs_and_maps(ws: Workspace, a: int, b: int) -> dict[str, Any]:
    """Fig. 3 (closest pairs), Fig. 6 (co-membership) and Fig. 7 (t-SNE) from the pair (A, B)'s cached analyses."""
    from featscope.frontend import standard

    out: dict[str, Any] = {}
    ea, eb = ws.load_embeddings(a), ws.load_embeddings(b)
    if not np.array_equal(ea.image_ids, eb.image_ids):
        # The analyses index the images both sets embed; A's own labels line up with them only when the two
        # sets hold the same rows (the demo extracts both over the whole set, so they do unless one is partial).
        log.warning("embedding sets %s and %s hold different images: Figs. 3, 6 and 7 not measured", a, b)
        return out
    labels = None
    closest = _cached(ws.closest_pairs, [a, b])
    if closest is not None:
        labels = ea.labels
        shares = [same_class_share([p["i"] for p in sp["pairs"]], [p["j"] for p in sp["pairs"]], labels)
                  for sp in closest.data["spaces"]]
        out["same_class"] = (shares[0], shares[1], len(closest.data["spaces"][0]["pairs"]))
    cm = _cached(ws.comembership, a, b)
    if cm is not None:  # A = cls, B = det: b_to_a = P(same in cls | same in det)
        out["comembership"] = (cm.data["ks"], cm.data["mean"]["b_to_a"], cm.data["mean"]["a_to_b"])
    n = len(ea.labels)
    proj = _cached(ws.projection, [a, b], **standard.projection_params(n, "tsne"))
    if proj is not None:
        labels = ea.labels
        k = min(PURITY_K, len(labels) - 1)
        out["tsne_purity"] = (knn_purity(proj.arrays["coords_0"], labels, k),
                              knn_purity(proj.arrays["coords_1"], labels, k))
    return out


def _maps(ws: Workspace, maps: dict[str, Any]) -> dict[str, Any]:
    """Fig. 4: object coverage of each activation map; Fig. 5: the largest fall of each mask-out map."""
    out: dict[str, Any] = {}
    images = maps.get("images") or []
    cover: dict[str, list[float]] = {r: [] for r in ROLES}
    drop: dict[str, list[float]] = {r: [] for r in ROLES}
    for im in images:
        key = str(im["image_id"])
        heat = {r: (maps.get("heatmap", {}).get(r) or {}).get(key) for r in ROLES}
        if all(heat.values()) and im.get("boxes"):
            try:
                for r in ROLES:
                    art = ws.ctx.store.get("map", heat[r]["artifact_key"])
                    cover[r].append(box_coverage(art.array("heat"), im["boxes"]))
            except (KeyError, FileNotFoundError, ValueError) as e:
                log.warning("activation map of image %s unreadable: %s", key, e)
        mo = {r: (maps.get("maskout", {}).get(r) or {}).get(key) for r in ROLES}
        if all(mo.values()):
            try:
                for r in ROLES:
                    d = mo[r]["data"]
                    drop[r].append(largest_drop(d["min_probability"], d["unmasked_probability"]))
            except (KeyError, TypeError, ValueError) as e:
                log.warning("mask-out map of image %s unusable: %s", key, e)
    if all(len(cover[r]) == len(images) for r in ROLES) and images:
        out["coverage"] = (cover["cls"], cover["det"])
    if all(len(drop[r]) == len(images) for r in ROLES) and images:
        out["maskout_drop"] = (drop["cls"], drop["det"])
    if images:
        pair = maps.get("sets") or {}
        query = {"a": pair["a"], "b": pair["b"]} if pair else {}
        if maps.get("mask_size"):  # the settings the demo made its mask-out maps with: they open from the cache
            query.update(head="classifier", target=images[0].get("label") or "", size=maps["mask_size"])
        out["maps_link"] = f"/image/{images[0]['image_id']}" + (f"?{urlencode(query)}" if query else "")
    return out


def measure(ws: Workspace, manifest: dict[str, Any] | None) -> dict[str, Any]:
    """Every measurement :func:`featscope.analysis.findings.judge` takes, from a demo manifest (``demo.json``)."""
    if not manifest:
        return {}
    m: dict[str, Any] = {}
    m["finetune_det"], m["finetune_cls"] = _finetune(ws, manifest)
    m["heldout"] = _heldout(ws, manifest)
    m["missed_by_occlusion"] = _occlusion(ws, manifest)
    m["fig8"] = _fig8(ws, manifest)
    m["segmentation"] = _segmentation(ws, manifest)
    bbs = manifest.get("backbones") or {}
    ds = manifest.get("study_name", "study")
    if set(bbs) == set(ROLES):
        m["probes"] = _probes(ws, bbs, ds)
        m["head_probes"] = _head_probes(ws, bbs["det"], f"{ds}-single")
        a, b = (embedding_set(ws, bbs[r], f"{ds}-single", "conv5") for r in ROLES)
        if a is not None and b is not None:
            m.update(_pairs_and_maps(ws, a.id, b.id))
            m["pair_query"] = f"?a={a.id}&b={b.id}"
    m.update(_maps(ws, manifest.get("maps") or {}))
    return m


def study_findings(ws: Workspace, manifest: dict[str, Any] | None) -> list[F.Finding]:
    """The study's findings, each with the demo's number and its computed verdict."""
    return F.judge(measure(ws, manifest))
