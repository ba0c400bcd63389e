"""The demo's stages: which worker jobs each submits, built from what the stages before it produced.

Public names: :class:`Step`, :class:`Stage`, :data:`STAGES`, :class:`Manifest`, :func:`manifest_path`,
:func:`read_manifest`, :data:`ALIASES`.

A stage is a function of the manifest (what earlier stages recorded: data set names, backbone names,
embedding set ids, run ids) returning its :class:`Step` s; the runner submits them, waits, and hands each
step's job result to the step's ``record`` so the next stages can use it. The analysis requests are the
dashboard's own (:mod:`featscope.frontend.standard`), so every page opens on a cache hit.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from featscope.demo.profiles import Profile
from featscope.workspace import Workspace

MANIFEST = "demo.json"
ALIASES = {"conv2": "layer1", "conv3": "layer2", "conv4": "layer3", "conv5": "layer4"}
PROBE_PARTS = ("single", "several", "small")
HEAD_POOLINGS = ("none", "grid4", "grid2", "avg")
ROLES = ("cls", "det")  # A = the classification backbone, B = the detection backbone, on every page


def manifest_path(data_dir: Path) -> Path:
    return Path(data_dir) / MANIFEST


def read_manifest(data_dir: Path) -> dict[str, Any] | None:
    """The last demo's manifest, or None when no demo ran in this data dir."""
    path = manifest_path(data_dir)
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


@dataclass
class Manifest:
    """What the demo has done so far; written to ``<data dir>/demo.json`` after every change (atomically)."""

    path: Path
    data: dict[str, Any] = field(default_factory=dict)

    def save(self) -> None:
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".demo-", suffix=".json")
        with os.fdopen(fd, "w") as f:
            json.dump(self.data, f, indent=1)
        os.replace(tmp, self.path)

    def __getitem__(self, key: str) -> Any:
        return self.data[key]

    def setdefault(self, key: str, value: Any) -> Any:
        return self.data.setdefault(key, value)


@dataclass(frozen=True)
class Step:
    """One job: ``kind`` with ``params``; ``record(manifest, result)`` keeps what later stages need."""

    label: str
    kind: str
    params: dict[str, Any]
    record: Callable[[Manifest, dict[str, Any]], None] | None = None


@dataclass(frozen=True)
class Stage:
    """``steps`` builds the stage's jobs from the manifest; ``off`` says why a profile leaves the stage out (None:
    it runs), e.g. the Table 2 stages of a profile that holds out no class."""

    name: str
    title: str
    steps: Callable[[Workspace, Profile, Manifest], list[Step]]
    off: Callable[[Profile], str | None] | None = None


def _ds(m: Manifest, part: str) -> str:
    return f"{m['study_name']}-{part}"


# ------------------------------------------------------------------------------------------ 1. data sets
def _sets(ws: Workspace, p: Profile, m: Manifest) -> list[Step]:
    def record(man: Manifest, result: dict[str, Any]) -> None:
        man.data["datasets"] = dict(zip(result["names"], result["n_images"]))

    return [Step("study sets", "dataset-study", {"name": m["study_name"], **p.sets}, record)]


# ------------------------------------------------------------------------------------------ 2. pre-training
def _registered_name(ws: Workspace, result: dict[str, Any]) -> str:
    """The name of the backbone a finished training run registered (the run's own name if it registered none)."""
    from featscope.workspace.backbones import get_backbone_row

    bid = result.get("backbone_id")
    return get_backbone_row(ws.ctx, int(bid)).name if bid is not None else result["name"]


def _pretrain_step(ws: Workspace, p: Profile, m: Manifest, role: str) -> Step:
    def rec(man: Manifest, result: dict[str, Any]) -> None:
        man.setdefault("runs", {})[role] = result["run"]
        # The backbone the run registered: its name differs from the run's when that name was taken.
        man.setdefault("backbones", {})[role] = _registered_name(ws, result)
        man.setdefault("pretrain_eval", {})[role] = result.get("eval")

    params = {"task": role, "dataset": _ds(m, "pretrain"), "val_dataset": _ds(m, "pretrain-val"),
              "preset": p.preset, "name": f"demo-{role}", "params": dict(getattr(p, role))}
    if role == "det":  # the study's detectors start from its classification network
        params["init"] = m.data["backbones"]["cls"]
    return Step(f"pre-train {role}", "train", params, rec)


def _pretrain_cls(ws: Workspace, p: Profile, m: Manifest) -> list[Step]:
    return [_pretrain_step(ws, p, m, "cls")]


def _pretrain_det(ws: Workspace, p: Profile, m: Manifest) -> list[Step]:
    return [_pretrain_step(ws, p, m, "det")] if "cls" in m.data.get("backbones", {}) else []


# ------------------------------------------------------------------------------------------ 3. extraction
def _extract(ws: Workspace, p: Profile, m: Manifest) -> list[Step]:
    bbs = m.data.get("backbones", {})
    steps = []
    for role in ROLES:
        if role not in bbs:
            continue
        for part in PROBE_PARTS:
            steps.append(Step(f"extract {role} {part} conv4/conv5", "extract",
                              {"backbone": bbs[role], "dataset": _ds(m, part), "taps": ["conv4", "conv5"],
                               "poolings": ["avg"]}))
        # the mapped images' own set, so their image pages open with A and B (and their neighbours); the detector's
        # last tap (FC2) too: a probe on it is the detector's classification head in its mask-out maps
        steps.append(Step(f"extract {role} pretrain-val conv5", "extract",
                          {"backbone": bbs[role], "dataset": _ds(m, "pretrain-val"),
                           "taps": ["conv5", "fc2"] if role == "det" else ["conv5"], "poolings": ["avg"]}))
    if "det" in bbs:  # Table 5: the detection head's taps, the whole image as the RoI
        steps.append(Step("extract det single ConvProj", "extract",
                          {"backbone": bbs["det"], "dataset": _ds(m, "single"), "taps": ["convproj"],
                           "poolings": list(HEAD_POOLINGS)}))
        steps.append(Step("extract det single FC1/FC2", "extract",
                          {"backbone": bbs["det"], "dataset": _ds(m, "single"), "taps": ["fc1", "fc2"],
                           "poolings": ["avg"]}))
    return steps


def embedding_set(ws: Workspace, backbone: str, dataset: str, tap: str, pooling: str = "avg"):
    """The cached embedding set of ``backbone`` x ``dataset`` x ``tap`` (study alias or module name) x ``pooling``."""
    want = {tap, ALIASES.get(tap, tap)}
    hits = [s for s in ws.embedding_sets(backbone=backbone, dataset=dataset) if s.tap in want and s.pooling == pooling]
    return max(hits, key=lambda s: s.id) if hits else None


# ------------------------------------------------------------------------------------------ 4. analyses
def _analyses(ws: Workspace, p: Profile, m: Manifest) -> list[Step]:
    from featscope.frontend import standard

    bbs = m.data.get("backbones", {})
    if set(bbs) != set(ROLES):
        return []
    single = _ds(m, "single")
    a, b = (embedding_set(ws, bbs[r], single, "conv5") for r in ROLES)
    if a is None or b is None:
        return []
    m.data["sets"] = {"a": a.id, "b": b.id, "dataset": single, "n": a.n}
    needs = standard.compare_needs(a.id, b.id, a.n, bbs["cls"], bbs["det"], single, "avg", labelled=True)
    if p.umap:
        needs.append(standard.projection_need(a.id, b.id, a.n, "umap"))
    needs.append(standard.Need("contrast-clusters", "contrast", [a.id, b.id], {"definition": "clusters"}))
    probed = {a.id, b.id}
    for role in ROLES:
        for s in ws.embedding_sets(backbone=bbs[role]):
            if s.dataset.split("@")[0] in {_ds(m, x) for x in PROBE_PARTS} and s.id not in probed:
                probed.add(s.id)
                needs.append(standard.probe_need(s.id))
    return [Step(f"{n.kind} {' '.join(map(str, n.inputs))} {n.params.get('method') or n.params.get('definition') or ''}"
                 .strip(), "analysis", n.job_params()) for n in needs]


# ------------------------------------------------------------------------------------------ 5. maps
def map_images(ws: Workspace, dataset: str, n: int) -> list[dict[str, Any]]:
    """``n`` images of the held-out scenes, chosen deterministically: alternately one object and several
    (the study's Fig. 4 shows both), of different classes where possible."""
    from featscope.workspace.datasets import get_dataset, readable_images

    rows = readable_images(ws.ctx, get_dataset(ws.ctx, dataset).id)
    one = [r for r in rows if len(r.boxes or []) == 1]
    many = [r for r in rows if len(r.boxes or []) >= 3]
    chosen, labels = [], set()
    for want in range(n):
        pool = one if want % 2 == 0 else many
        pick = next((r for r in pool if r.label not in labels and r not in chosen), None) or \
            next((r for r in pool if r not in chosen), None)
        if pick is not None:
            chosen.append(pick)
            labels.add(pick.label)
    return [{"image_id": r.id, "label": r.label, "boxes": [list(b[1:5]) for b in r.boxes or []]} for r in chosen]


def mask_size(ws: Workspace, backbone: str) -> int:
    """The study's 60-pixel mask at 224 pixels, as the same share of this backbone's input."""
    from featscope.workspace.backbones import get_backbone_row

    pre = get_backbone_row(ws.ctx, backbone).preprocess or {}
    crop = pre.get("crop") or pre.get("resize") or 224
    return max(4, round(60 * int(crop) / 224))


def _maps(ws: Workspace, p: Profile, m: Manifest) -> list[Step]:
    bbs = m.data.get("backbones", {})
    if set(bbs) != set(ROLES):
        return []
    images = map_images(ws, _ds(m, "pretrain-val"), p.n_map_images)
    a, b = (embedding_set(ws, bbs[r], _ds(m, "pretrain-val"), "conv5") for r in ROLES)
    m.data["maps"] = {"images": images, "heatmap": {}, "maskout": {},
                      "sets": {"a": a.id, "b": b.id} if a is not None and b is not None else None}

    def record(kind: str, role: str, image_id: int):
        def rec(man: Manifest, result: dict[str, Any]) -> None:
            man.data["maps"][kind].setdefault(role, {})[str(image_id)] = {
                "artifact_key": result.get("artifact_key"), "data": result.get("data")}
        return rec

    # One mask size for both (the image page asks with one): the study's 60 px at 224, scaled to the smaller input.
    size = min(mask_size(ws, bbs[r]) for r in ROLES)
    m.data["maps"]["mask_size"] = size
    steps = []
    for im in images:
        for role in ROLES:
            steps.append(Step(f"heatmap {role} image {im['image_id']}", "heatmap",
                              {"backbone": bbs[role], "image_id": im["image_id"], "tap": "conv5", "method": "mean"},
                              record("heatmap", role, im["image_id"])))
        for role in ROLES:
            # The detector has no classifier: its head is a linear probe on its Conv5 features of the image's own
            # (labelled) set, as the study trains a linear classification layer on the detection features.
            params = {"backbone": bbs[role], "image_id": im["image_id"], "target": im["label"], "size": size,
                      "stride": 8}
            steps.append(Step(f"mask-out {role} image {im['image_id']}", "maskout", params,
                              record("maskout", role, im["image_id"])))
    return steps


# ------------------------------------------------------------------------------------------ 6. fine-tuning
def _finetune(ws: Workspace, p: Profile, m: Manifest) -> list[Step]:
    bbs = m.data.get("backbones", {})

    def record(key: str):
        def rec(man: Manifest, result: dict[str, Any]) -> None:
            man.setdefault("runs", {})[key] = result["run"]
        return rec

    steps = []
    for role in ROLES:
        if role in bbs:
            steps.append(Step(f"fine-tune det from {role}", "finetune",
                              {"task": "det", "backbone": bbs[role], "dataset": _ds(m, "target-train"),
                               "test_dataset": _ds(m, "target-test"), "preset": p.preset,
                               "params": dict(p.finetune_det)}, record(f"finetune-det-{role}")))
    for role in ROLES:
        if role in bbs:
            steps.append(Step(f"fine-tune cls from {role}", "finetune",
                              {"task": "cls", "backbone": bbs[role], "dataset": _ds(m, "single"), "preset": p.preset,
                               "params": dict(p.finetune_cls)}, record(f"finetune-cls-{role}")))
    for role in ROLES:  # Table 4, Figs. 2 and 9: a DeepLabV3 head on each trunk, the target scenes' masks
        if role in bbs:
            steps.append(Step(f"fine-tune seg from {role}", "finetune",
                              {"task": "seg", "backbone": bbs[role], "dataset": _ds(m, "target-train"),
                               "test_dataset": _ds(m, "target-test"), "preset": p.preset,
                               "params": dict(p.finetune_seg)}, record(f"finetune-seg-{role}")))
    return steps


# ------------------------------------------------------------------------------------------ 7. held-out classes
def _heldout_off(p: Profile) -> str | None:
    return None if p.heldout else ("this profile holds out no class (Table 2 adds a third pre-training); "
                                   "featscope demo --heldout star,cross runs it")


def _heldout_pretrain(ws: Workspace, p: Profile, m: Manifest) -> list[Step]:
    """Table 2's third backbone: a detector pre-trained on the same scenes without the held-out classes, from the
    classifier's seeded random start (not from the classifier, which saw those classes)."""
    if "cls" not in m.data.get("backbones", {}):
        return []
    m.data["heldout"] = {"classes": list(p.heldout)}

    def rec(man: Manifest, result: dict[str, Any]) -> None:
        man.setdefault("runs", {})["heldout"] = result["run"]
        man.data["heldout"]["backbone"] = _registered_name(ws, result)

    params = {**p.det, **p.heldout_det, "holdout_classes": list(p.heldout)}
    return [Step(f"pre-train det without {', '.join(p.heldout)}", "train",
                 {"task": "det", "dataset": _ds(m, "pretrain"), "val_dataset": _ds(m, "pretrain-val"),
                  "preset": p.preset, "name": "demo-det-without", "params": params}, rec)]


def _heldout(ws: Workspace, p: Profile, m: Manifest) -> list[Step]:
    """Detection fine-tuning from cls, det and the detector without the held-out classes on a split of
    pretrain-val (the pre-training distribution, which has those classes): AP@0.7 per class."""
    bbs = dict(m.data.get("backbones", {}))
    held = m.data.get("heldout") or {}
    if "backbone" not in held or set(bbs) != set(ROLES):
        return []
    bbs["without"] = held["backbone"]

    def record(key: str):
        def rec(man: Manifest, result: dict[str, Any]) -> None:
            man.setdefault("runs", {})[key] = result["run"]
        return rec

    params = {**p.finetune_det, **p.heldout_finetune}
    return [Step(f"fine-tune det from {role} on pretrain-val", "finetune",
                 {"task": "det", "backbone": bbs[role], "dataset": _ds(m, "pretrain-val"), "preset": p.preset,
                  "params": dict(params)}, record(f"heldout-finetune-{role}")) for role in (*ROLES, "without")]


STAGES: tuple[Stage, ...] = (
    Stage("sets", "generate the study sets", _sets),
    Stage("pretrain-cls", "pre-train the classification backbone from a seeded random start", _pretrain_cls),
    Stage("pretrain-det", "pre-train the detection backbone from the classification backbone (as the study does)",
          _pretrain_det),
    Stage("extract", "extract Conv4/Conv5 and the detection head's taps", _extract),
    Stage("analyses", "analyses: pairs, co-membership, t-SNE/UMAP, agreement, CKA, probes", _analyses),
    Stage("maps", "activation and mask-out maps of a few held-out scenes", _maps),
    Stage("finetune", "fine-tune both backbones for detection, classification and segmentation", _finetune),
    Stage("heldout-pretrain", "pre-train a detector without the held-out classes from the classifier's seeded "
          "random start (Table 2)", _heldout_pretrain, _heldout_off),
    Stage("heldout", "fine-tune cls, det and the detector without the held-out classes for detection on "
          "pretrain-val (Table 2)", _heldout, _heldout_off),
)
