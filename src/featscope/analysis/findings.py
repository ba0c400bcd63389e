"""The study's findings as checks on measured numbers: does the study's direction hold on this data?

Public names: :class:`Finding`, :data:`STUDY`, :func:`judge`, and one judge per finding (``fig1`` ...
``table8``). Each judge takes the demo's measured counterpart (plain numbers; ``None`` where it is not
measured yet) and returns a :class:`Finding` with the study's own number, the demo's number, and a verdict
*computed from them*: ``reproduced`` when the study's direction holds, ``not reproduced`` when it does not
(ties included: a direction needs a difference), ``not measured`` when an input is missing. Nothing here
is tuned to pass: the rule of each check is written in its ``rule`` text and shown beside the verdict.

Pure functions on numbers (no catalog, no network), so the verdict logic is tested on hand-made inputs. Table 3's
score threshold and its rule names come from :mod:`featscope.training.detections` (numpy only), the one place the
rule is defined, rather than a copy here that could drift.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from featscope.training.detections import FIXED, LOWEST, MISSED_SCORE, NTH

REPRODUCED, NOT_REPRODUCED, NOT_MEASURED = "reproduced", "not reproduced", "not measured"
HIGH_IOU = ("0.7", "0.8", "0.9")
MIN_BIN_OBJECTS = 5  # Table 3: occluded test objects a bin needs before its missed-object rate is compared
# Table 3 / Fig. 8: the usual score threshold; a detector with fewer than N boxes that high is judged at its N-th
# best score (its lowest when it has fewer than N boxes) instead (featscope.training.errors.operating_score)
SCORE_RULE = (f"IoU 0.5; score {MISSED_SCORE:g}, or, for a detector with fewer than N boxes scoring {MISSED_SCORE:g} "
              f"(N = the test set's objects), its N-th best score (its lowest, when it has fewer than N boxes); a "
              f"detector that stays at {MISSED_SCORE:g} may keep more than N boxes")
LOW_IOU = ("0.1", "0.2", "0.3", "0.4", "0.5")


@dataclass(frozen=True)
class Finding:
    """One of the study's findings beside the demo's measurement."""

    key: str  # fig1, table5, ...
    title: str
    claim: str  # the study's direction, in words
    study: str  # the study's own numbers
    measured: str  # the demo's numbers, in words ("" when not measured)
    verdict: str  # REPRODUCED, NOT_REPRODUCED or NOT_MEASURED
    rule: str  # the comparison the verdict is computed by
    link: str  # the dashboard page that shows it in full
    values: dict[str, Any] = field(default_factory=dict)  # the numbers behind the verdict


# key -> (title, claim, the study's numbers, link)
STUDY: dict[str, tuple[str, str, str, str]] = {
    "fig1": ("Fig. 1: AP against the IoU threshold",
             "Detection pre-training helps detection fine-tuning most at high IoU (better localisation).",
             "VOC07 mAP, IMAGENET-CLS vs OPENIMAGES: 84.6 vs 86.8 at IoU 0.5 (+2.2), 76.3 vs 81.1 at 0.7 (+4.8)",
             "/runs"),
    "table1": ("Table 1: detection fine-tuning",
               "A detection-pretrained backbone fine-tunes to a better detector at IoU 0.5 and 0.7.",
               "mAP@0.5/0.7: IMAGENET-CLS 84.6/76.3; IMAGENET-LOC 86.5/80.0; COCO 86.8/80.7; OPENIMAGES 86.8/81.1",
               "/runs"),
    "fig3": ("Fig. 3: nearest-neighbour pairs",
             "The classification space pairs images of the same class; the detection space pairs images by "
             "layout and instances, so its closest pairs share a class less often.",
             "qualitative (pictures of the closest pairs in each space and of pairs close in one, distant in the other)",
             "/pairs"),
    "fig4": ("Fig. 4: activation maps",
             "Detection features cover the whole extent of each object; classification features a discriminative part.",
             "qualitative (Conv5 maps of camels, people, several objects)", "/image"),
    "fig5": ("Fig. 5: mask-out maps",
             "Masking a discriminative part collapses the classifier's probability; the detector's (with a linear "
             "head) barely moves.",
             "qualitative (60 x 60 mask over a camel: the classifier's probability falls at the head)", "/image"),
    "fig6": ("Fig. 6: K-means co-membership",
             "Same cluster in the detection space implies same cluster in the classification space far more often "
             "than the converse.",
             "P(same in CLS | same in DET) well above P(same in DET | same in CLS) for K from 2 to 1000",
             "/comembership"),
    "fig7": ("Fig. 7: t-SNE of Conv5",
             "Classification features form tight per-class clusters; detection features are fragmented.",
             "qualitative (t-SNE of ImageNet validation images coloured by class)", "/projections"),
    "table5": ("Table 5: probes on the detection head",
               "Keeping spatial layout hurts a linear classifier (ConvProj pooled beats ConvProj full), and accuracy "
               "falls from Conv5 towards the detection output (Conv5 > FC1 > FC2).",
               "CALTECH-256 top-1: Conv5 76.7; ConvProj full 69.7, 4x4 72.4, 2x2 73.3, 1x1 74.1; FC1 71.6; FC2 70.0",
               "/probes"),
    "table6": ("Table 6: linear probe on avg-pooled Conv5",
               "Classification features are more linearly separable by class than detection features.",
               "top-1, IMAGENET-CLS vs OPENIMAGES: CALTECH-256 84.7 vs 76.7; SUN-397 57.3 vs 51.1; FLOWERS 87.4 vs 83.1",
               "/probes"),
    "table7": ("Table 7: identical pre-training images",
               "With the same pre-training images, the detector's backbone fine-tunes to better detection and the "
               "classifier's to better classification.",
               "IMAGENET-LOC as classifier vs as detector: VOC mAP@0.5/0.7 84.5/76.6 vs 86.5/80.0; CALTECH-256 85.8 vs 82.3",
               "/runs"),
    "table8": ("Table 8: classification fine-tuning",
               "Fine-tuned for classification, the classification-pretrained backbone stays ahead.",
               "top-1 CALTECH-256 / SUN-397 / FLOWERS: IMAGENET-CLS 86.3/61.5/95.0; OPENIMAGES 82.2/59.5/92.6; "
               "COCO 79.8/57.8/91.4", "/runs"),
}
STUDY.update({
    "table2": ("Table 2: held-out categories",
               "A detector pre-trained without some categories, fine-tuned on data that has them, localises them "
               "better than one fine-tuned from a classifier that saw them: detection pre-training improves "
               "localization in general, not only for the classes it saw.",
               "VOC mAP@0.7 on the held-out group: IMAGENET-LOC (Cls) vehicle 84.52 / animal 82.98; detector "
               "pre-trained without the group 86.83 / 83.95; with it 87.20 / 84.83", "/runs"),
    "table3": ("Table 3: missed objects by occlusion",
               "The detector fine-tuned from the detection-pretrained backbone misses fewer objects at low and at "
               "medium occlusion.",
               "VOC07 test, missed at low / medium occlusion: IMAGENET-CLS 14.7% / 15.7%; OPENIMAGES 10.1% / 10.8%",
               "/detections"),
    "fig8": ("Fig. 8: both detectors' boxes on the same images",
             "On the same test images, the detection-pretrained detector finds occluded objects that the "
             "classification-pretrained one misses.",
             "qualitative (VOC07 test images: occluded objects found only by the detection-pretrained model)",
             "/detections"),
    "table4": ("Table 4: semantic segmentation",
               "Fine-tuned for semantic segmentation, the detection-pretrained backbone gives the higher mIoU.",
               "VOC 2012 mIoU (DeepLab): IMAGENET-CLS 75.7; IMAGENET-LOC 78.3; OPENIMAGES 78.6", "/runs"),
    "fig2": ("Fig. 2: trimap and anti-trimap accuracy",
             "The segmentation gain holds over the whole extent of objects, away from their boundaries too, not "
             "only within a band around them.",
             "accuracy within x px of object boundaries (trimap) and farther than x (anti-trimap), x over a range: "
             "OPENIMAGES above IMAGENET-CLS in both", "/runs"),
})
PAIR_PAGES = ("/pairs", "/comembership", "/projections")
ORDER = ("fig1", "table1", "table2", "table3", "fig8", "table4", "fig2", "fig3", "fig4", "fig5", "fig6", "fig7",
         "table5", "table6", "table7", "table8")
OCCLUSION_LEVELS = ("low", "medium")  # the bins the study's Table 3 reports


def _finding(key: str, measured: str, verdict: str, rule: str, values: dict[str, Any] | None = None,
             link: str | None = None) -> Finding:
    title, claim, study, default_link = STUDY[key]
    return Finding(key, title, claim, study, measured, verdict, rule, link or default_link, dict(values or {}))


def _missing(key: str, rule: str, what: str) -> Finding:
    return _finding(key, f"not measured yet: {what}", NOT_MEASURED, rule)


def _ok(condition: bool) -> str:
    return REPRODUCED if condition else NOT_REPRODUCED


def _pct(x: float) -> str:
    return f"{100 * x:.1f}"


def _mean(xs: Sequence[float]) -> float:
    return sum(xs) / len(xs)


def _ap_pair(ap_cls: Mapping[str, float] | None, ap_det: Mapping[str, float] | None,
             thresholds: Sequence[str]) -> bool:
    return bool(ap_cls) and bool(ap_det) and all(t in ap_cls and t in ap_det and ap_cls[t] is not None
                                                  and ap_det[t] is not None for t in thresholds)


# --------------------------------------------------------------------------------------------- judges
def fig1(ap_cls: Mapping[str, float] | None, ap_det: Mapping[str, float] | None) -> Finding:
    """AP by IoU threshold after detection fine-tuning from each backbone (keys "0.1" ... "0.9")."""
    rule = ("mean AP gain (det - cls) over IoU 0.7-0.9 is positive and larger than over IoU 0.1-0.5")
    if not _ap_pair(ap_cls, ap_det, (*LOW_IOU, *HIGH_IOU)):
        return _missing("fig1", rule, "the two detection fine-tuning runs")
    low = _mean([ap_det[t] - ap_cls[t] for t in LOW_IOU])
    high = _mean([ap_det[t] - ap_cls[t] for t in HIGH_IOU])
    measured = (f"AP@0.5 {_pct(ap_cls['0.5'])} vs {_pct(ap_det['0.5'])}, AP@0.7 {_pct(ap_cls['0.7'])} vs "
                f"{_pct(ap_det['0.7'])} (from cls vs from det); mean gain {low * 100:+.1f} at IoU 0.1-0.5, "
                f"{high * 100:+.1f} at 0.7-0.9")
    return _finding("fig1", measured, _ok(high > 0 and high > low), rule, {"gain_low": low, "gain_high": high})


def table1(ap_cls: Mapping[str, float] | None, ap_det: Mapping[str, float] | None) -> Finding:
    rule = "AP from the detection backbone above AP from the classification backbone at IoU 0.5 and at 0.7"
    if not _ap_pair(ap_cls, ap_det, ("0.5", "0.7")):
        return _missing("table1", rule, "the two detection fine-tuning runs")
    measured = (f"AP@0.5/0.7 from cls {_pct(ap_cls['0.5'])}/{_pct(ap_cls['0.7'])}, from det "
                f"{_pct(ap_det['0.5'])}/{_pct(ap_det['0.7'])}")
    ok = ap_det["0.5"] > ap_cls["0.5"] and ap_det["0.7"] > ap_cls["0.7"]
    return _finding("table1", measured, _ok(ok), rule, {"cls": dict(ap_cls), "det": dict(ap_det)})


def fig3(same_class_cls: float | None, same_class_det: float | None, n_pairs: int = 0) -> Finding:
    """Share of the ``n_pairs`` closest pairs of each space whose two images have the same class."""
    rule = "the closest pairs of the classification space share a class more often than the detection space's"
    if same_class_cls is None or same_class_det is None:
        return _missing("fig3", rule, "the closest-pairs analysis")
    measured = (f"same-class share of the {n_pairs} closest pairs: {_pct(same_class_cls)}% (cls) vs "
                f"{_pct(same_class_det)}% (det)")
    return _finding("fig3", measured, _ok(same_class_cls > same_class_det), rule,
                    {"cls": same_class_cls, "det": same_class_det, "n_pairs": n_pairs})


def fig4(coverage_cls: Sequence[float] | None, coverage_det: Sequence[float] | None,
         link: str | None = None) -> Finding:
    """Per image: the share of the objects' box area where the Conv5 map is at least half its maximum."""
    rule = "mean share of the object boxes covered by the map (>= half its maximum): det above cls"
    if not coverage_cls or not coverage_det:
        return _missing("fig4", rule, "the activation maps of the chosen images")
    c, d = _mean(coverage_cls), _mean(coverage_det)
    measured = (f"object area covered, mean over {len(coverage_cls)} images: {_pct(c)}% (cls) vs {_pct(d)}% (det)")
    return _finding("fig4", measured, _ok(d > c), rule, {"cls": list(coverage_cls), "det": list(coverage_det)}, link)


def fig5(drop_cls: Sequence[float] | None, drop_det: Sequence[float] | None, link: str | None = None) -> Finding:
    """Per image: the largest relative fall of the correct class's probability, 1 - min(p) / p(unmasked)."""
    rule = "mean largest relative fall of p(correct class) under the mask: cls above det"
    if not drop_cls or not drop_det:
        return _missing("fig5", rule, "the mask-out maps of the chosen images")
    c, d = _mean(drop_cls), _mean(drop_det)
    measured = f"largest fall of p(class), mean over {len(drop_cls)} images: {_pct(c)}% (cls) vs {_pct(d)}% (det)"
    return _finding("fig5", measured, _ok(c > d), rule, {"cls": list(drop_cls), "det": list(drop_det)}, link)


def fig6(ks: Sequence[int] | None, det_to_cls: Sequence[float | None] | None,
         cls_to_det: Sequence[float | None] | None) -> Finding:
    """``det_to_cls[i]``: P(same cluster in cls | same in det) at K = ``ks[i]`` (mean over seeds); the converse."""
    rule = "P(same in cls | same in det) above P(same in det | same in cls) on average and at most K"
    if not ks or not det_to_cls or not cls_to_det:
        return _missing("fig6", rule, "the co-membership curve")
    both = [(k, x, y) for k, x, y in zip(ks, det_to_cls, cls_to_det) if x is not None and y is not None]
    if not both:
        return _missing("fig6", rule, "a K at which both probabilities are defined")
    wins = sum(1 for _, x, y in both if x > y)
    gap = _mean([x - y for _, x, y in both])
    measured = (f"P(cls | det) > P(det | cls) at {wins} of {len(both)} K values (K {both[0][0]}-{both[-1][0]}); "
                f"mean {_mean([x for _, x, _ in both]):.3f} vs {_mean([y for _, _, y in both]):.3f}")
    return _finding("fig6", measured, _ok(gap > 0 and wins > len(both) / 2), rule,
                    {"wins": wins, "n_k": len(both), "mean_gap": gap})


def fig7(purity_cls: float | None, purity_det: float | None, k: int = 10) -> Finding:
    """Share of each point's ``k`` nearest neighbours in the 2-D t-SNE map that have its class."""
    rule = f"{k}-NN class purity of the t-SNE map: cls above det"
    if purity_cls is None or purity_det is None:
        return _missing("fig7", rule, "the t-SNE projection")
    measured = f"{k}-NN class purity in the t-SNE maps: {_pct(purity_cls)}% (cls) vs {_pct(purity_det)}% (det)"
    return _finding("fig7", measured, _ok(purity_cls > purity_det), rule, {"cls": purity_cls, "det": purity_det, "k": k})


def table5(acc: Mapping[str, float] | None) -> Finding:
    """``acc``: top-1 of the detection backbone's probes, keyed ``conv5/avg``, ``convproj/none``, ``convproj/grid4``,
    ``convproj/grid2``, ``convproj/avg``, ``fc1/avg``, ``fc2/avg``."""
    rule = "ConvProj avg-pooled above ConvProj full map, and Conv5 > FC1 > FC2"
    need = ("conv5/avg", "convproj/none", "convproj/avg", "fc1/avg", "fc2/avg")
    if not acc or any(acc.get(k) is None for k in need):
        return _missing("table5", rule, "the probes on the detection head's taps")
    order = [k for k in ("conv5/avg", "convproj/none", "convproj/grid4", "convproj/grid2", "convproj/avg", "fc1/avg",
                         "fc2/avg") if acc.get(k) is not None]
    measured = ", ".join(f"{k} {_pct(acc[k])}" for k in order)
    spatial = acc["convproj/avg"] > acc["convproj/none"]
    depth = acc["conv5/avg"] > acc["fc1/avg"] > acc["fc2/avg"]
    return _finding("table5", measured, _ok(spatial and depth), rule,
                    {"spatial": spatial, "depth": depth, **{k: acc[k] for k in order}})


def table6(probes: Mapping[str, tuple[float, float, float, float, float, float]] | None) -> Finding:
    """``probes[test set]`` = (cls top-1, cls ci_low, cls ci_high, det top-1, det ci_low, det ci_high)."""
    rule = "cls top-1 above det top-1 on every probe set"
    if not probes:
        return _missing("table6", rule, "the linear probes")
    parts, ok = [], True
    for name, (c, cl, ch, d, dl, dh) in probes.items():
        apart = cl > dh or dl > ch
        parts.append(f"{name} {_pct(c)} vs {_pct(d)}{'' if apart else ' (95% intervals overlap)'}")
        ok = ok and c > d
    return _finding("table6", "; ".join(parts) + " (cls vs det)", _ok(ok), rule, {"probes": dict(probes)})


def table7(ap_cls: Mapping[str, float] | None, ap_det: Mapping[str, float] | None, top1_cls: float | None,
           top1_det: float | None) -> Finding:
    rule = ("with the same pre-training images (the demo's detector continues from its classifier, as the study's "
            "detectors do), det ahead on detection (AP@0.7) and cls ahead on classification fine-tuning")
    if not _ap_pair(ap_cls, ap_det, ("0.5", "0.7")) or top1_cls is None or top1_det is None:
        return _missing("table7", rule, "the detection and classification fine-tuning runs")
    measured = (f"AP@0.5/0.7 {_pct(ap_cls['0.5'])}/{_pct(ap_cls['0.7'])} (cls) vs {_pct(ap_det['0.5'])}/"
                f"{_pct(ap_det['0.7'])} (det); fine-tuned top-1 {_pct(top1_cls)} (cls) vs {_pct(top1_det)} (det)")
    ok = ap_det["0.7"] > ap_cls["0.7"] and top1_cls > top1_det
    return _finding("table7", measured, _ok(ok), rule)


def table8(top1_cls: float | None, top1_det: float | None, interval_cls: tuple[float, float] | None = None,
           interval_det: tuple[float, float] | None = None) -> Finding:
    rule = "top-1 after classification fine-tuning: from cls above from det"
    if top1_cls is None or top1_det is None:
        return _missing("table8", rule, "the two classification fine-tuning runs")
    measured = f"top-1 {_pct(top1_cls)} (from cls) vs {_pct(top1_det)} (from det)"
    if interval_cls and interval_det and not (interval_cls[0] > interval_det[1] or interval_det[0] > interval_cls[1]):
        measured += " (95% intervals overlap)"
    return _finding("table8", measured, _ok(top1_cls > top1_det), rule, {"cls": top1_cls, "det": top1_det})


def table2(held_cls: float | None, held_without: float | None, held_with: float | None = None,
           classes: Sequence[str] = ()) -> Finding:
    """AP@0.7 on the held-out ``classes`` after detection fine-tuning from: the classifier (pre-trained on every
    class), the detector pre-trained without those classes, and (for context, not judged) the detector that saw
    them. The demo's detector without them starts from the classifier's seeded random start, not from the
    classifier, which saw those classes."""
    rule = ("AP@0.7 on the held-out classes after fine-tuning: from the detector pre-trained without them above "
            "from the classifier (a tie is no direction)")
    if held_cls is None or held_without is None:
        return _missing("table2", rule, "the held-out pre-training and its fine-tuning runs (off on the cpu "
                                        "profile: featscope demo --heldout star,cross)")
    names = ", ".join(classes) or "the held-out classes"
    measured = (f"AP@0.7 on {names}: {_pct(held_cls)} from cls vs {_pct(held_without)} from det pre-trained "
                f"without them")
    if held_with is not None:
        measured += f" ({_pct(held_with)} from det with them)"
    measured += ("; the det without them starts from cls's seeded random start, not from cls, which saw those "
                 "classes")
    return _finding("table2", measured, _ok(held_without > held_cls), rule,
                    {"cls": held_cls, "without": held_without, "with": held_with, "classes": list(classes)})


def _thresholds(scores: Mapping[str, float | None] | None, n_objects: int | None = None,
                rules: Mapping[str, str | None] | None = None) -> str:
    """The score thresholds actually used, in words: "score 0.19 (cls) / 0.24 (det), each one's N-th best,
    N = 186 test objects"; "" when not known. ``rules``: per detector, how its threshold was chosen
    (:func:`featscope.training.detections.threshold_rule`); without it a threshold below 0.5 is called "N-th
    best (or lowest)", as the two cannot be told apart."""
    known = {r: s for r, s in (scores or {}).items() if r in ("cls", "det") and s is not None}
    if not known:
        return ""
    rules = rules or {}
    text = "score " + " / ".join(f"{known[r]:.3g} ({r})" for r in ("cls", "det") if r in known)
    fixed = [r for r in known if rules.get(r) == FIXED]
    kinds: dict[str, list[str]] = {}
    for r in ("cls", "det"):
        if r in known and r not in fixed and known[r] < MISSED_SCORE:
            kind = {NTH: "N-th best", LOWEST: "lowest, with fewer than N boxes in all"}.get(
                rules.get(r) or "", "N-th best (or lowest, with fewer than N boxes)")
            kinds.setdefault(kind, []).append(r)
    for kind, who in kinds.items():
        text += f", {'each one' if len(who) == len(known) else who[0]}'s {kind}"
    if kinds:
        text += ", N = " + (f"{n_objects} test objects" if n_objects is not None else "the test set's objects")
    for r in fixed:
        text += f"; {r}: fixed score {known[r]:.3g} (recorded before per-detector thresholds)"
    return text


def table3(missed_cls: Mapping[str, float | None] | None, missed_det: Mapping[str, float | None] | None,
           objects: Mapping[str, int] | None = None, scores: Mapping[str, float | None] | None = None,
           n_objects: int | None = None, rules: Mapping[str, str | None] | None = None) -> Finding:
    """Missed-object rate per occlusion bin (``none``, ``low``, ``medium``, ``high``) of the detectors fine-tuned
    from each backbone, at IoU 0.5 and each detector's operating score (``scores``: ``{"cls", "det"}``; 0.5, or,
    with fewer than N boxes that high, N = ``n_objects``, the test set's objects, its N-th best score or its
    lowest; ``rules``: which, per detector, as :func:`featscope.training.detections.threshold_rule` says, "fixed"
    for rates stored before per-detector thresholds); ``objects``: how many test objects each bin holds."""
    rule = f"missed-object rate ({SCORE_RULE}) from det below that from cls at low and at medium occlusion"
    levels = OCCLUSION_LEVELS
    if not missed_cls or not missed_det or any(missed_cls.get(b) is None or missed_det.get(b) is None
                                               for b in levels):
        return _missing("table3", rule, "missed objects at low and medium occlusion from both detection "
                                        "fine-tuning runs")
    few = [b for b in levels if objects and (objects.get(b) or 0) < MIN_BIN_OBJECTS]
    if few:  # a rate over a handful of objects moves by 20 points with one object: no direction to read
        return _finding("table3", f"too few test objects to compare: {', '.join(f'{objects.get(b) or 0} at {b}' for b in few)} "
                        f"occlusion (at least {MIN_BIN_OBJECTS} each); a larger target set has more (the cuda profile)",
                        NOT_MEASURED, rule, {"objects": dict(objects or {})})
    counts = f" (of {' / '.join(str((objects or {}).get(b, '?')) for b in levels)} objects)" if objects else ""
    at = _thresholds(scores, n_objects, rules)
    measured = (f"missed at low / medium occlusion: {' / '.join(_pct(missed_cls[b]) + '%' for b in levels)} from cls "
                f"vs {' / '.join(_pct(missed_det[b]) + '%' for b in levels)} from det{counts}"
                f"{f'; at {at}' if at else ''}")
    ok = all(missed_det[b] < missed_cls[b] for b in levels)
    return _finding("table3", measured, _ok(ok), rule,
                    {"cls": {b: missed_cls[b] for b in levels}, "det": {b: missed_det[b] for b in levels},
                     "score": dict(scores or {}), "rule": dict(rules or {})})


def fig8(only_det: int | None, only_cls: int | None, n_images: int = 0, link: str | None = None,
         scores: Mapping[str, float | None] | None = None, n_objects: int | None = None,
         rules: Mapping[str, str | None] | None = None) -> Finding:
    """Test images where only the detector fine-tuned from det finds an occluded object, and where only the one
    fine-tuned from cls does, out of ``n_images`` common test images; each detector at IoU 0.5 and its own
    operating score (``scores`` and ``rules``, as in :func:`table3`)."""
    rule = (f"test images where only the detector from det finds an occluded object ({SCORE_RULE}) "
            "outnumber those where only the detector from cls does")
    if only_det is None or only_cls is None:
        return _missing("fig8", rule, "the test-set boxes of both detection fine-tuning runs")
    at = _thresholds(scores, n_objects, rules)
    measured = (f"of {n_images} test images, {only_det} with an occluded object only the detector from det finds, "
                f"{only_cls} with one only the detector from cls finds{f'; at {at}' if at else ''}")
    return _finding("fig8", measured, _ok(only_det > only_cls), rule,
                    {"only_det": only_det, "only_cls": only_cls, "images": n_images, "score": dict(scores or {})},
                    link)


def table4(miou_cls: float | None, miou_det: float | None) -> Finding:
    """mIoU after segmentation fine-tuning (DeepLabV3 head) from each backbone."""
    rule = "mIoU after segmentation fine-tuning: from det above from cls"
    if miou_cls is None or miou_det is None:
        return _missing("table4", rule, "the two segmentation fine-tuning runs")
    measured = f"mIoU {_pct(miou_cls)} (from cls) vs {_pct(miou_det)} (from det)"
    return _finding("table4", measured, _ok(miou_det > miou_cls), rule, {"cls": miou_cls, "det": miou_det})


def _band_gains(cls: Mapping[float, float | None] | None, det: Mapping[float, float | None] | None
                ) -> list[tuple[float, float]]:
    """(width, det - cls) at each band width where both accuracies are known, narrowest first."""
    c = {float(w): a for w, a in (cls or {}).items() if a is not None}
    d = {float(w): a for w, a in (det or {}).items() if a is not None}
    return [(w, d[w] - c[w]) for w in sorted(c.keys() & d.keys())]


def fig2(trimap_cls: Mapping[float, float | None] | None, trimap_det: Mapping[float, float | None] | None,
         anti_cls: Mapping[float, float | None] | None, anti_det: Mapping[float, float | None] | None) -> Finding:
    """Accuracy by band width (pixels -> accuracy, None where the band holds no pixel) within the band around
    object boundaries (trimap) and outside it (anti-trimap), after segmentation fine-tuning from each backbone."""
    rule = ("anti-trimap accuracy gain (det - cls) at the widest band width is positive: the gain reaches the "
            "pixels far from every boundary, not only the band around them")
    near, far = _band_gains(trimap_cls, trimap_det), _band_gains(anti_cls, anti_det)
    if not far:
        return _missing("fig2", rule, "the trimap / anti-trimap accuracy of both segmentation fine-tuning runs")
    width, gain = far[-1]
    measured = f"anti-trimap gain det - cls at {width:g} px: {gain * 100:+.1f}"
    if near:
        measured += (f"; trimap gain {near[0][1] * 100:+.1f} at {near[0][0]:g} px, {near[-1][1] * 100:+.1f} at "
                     f"{near[-1][0]:g} px")
    return _finding("fig2", measured, _ok(gain > 0), rule,
                    {"trimap_gain": dict(near), "anti_trimap_gain": dict(far)})


def judge(m: Mapping[str, Any]) -> list[Finding]:
    """Every finding, in the study's order, from a measurements dict (see ``featscope.demo.study.measure``)."""
    ft = m.get("finetune_det") or {}
    ftc = m.get("finetune_cls") or {}
    top1 = {k: (v or {}).get("top1") for k, v in ftc.items()}
    held = m.get("heldout") or {}
    occ = m.get("missed_by_occlusion") or {}
    f8 = m.get("fig8") or {}
    seg = m.get("segmentation") or {}
    seg_cls, seg_det = seg.get("cls") or {}, seg.get("det") or {}
    out = [
        fig1(ft.get("cls"), ft.get("det")),
        table1(ft.get("cls"), ft.get("det")),
        table2(held.get("cls"), held.get("without"), held.get("with"), held.get("classes") or ()),
        table3(occ.get("cls"), occ.get("det"), occ.get("objects"), occ.get("score"), occ.get("n_objects"),
               occ.get("rule")),
        fig8(f8.get("only_det"), f8.get("only_cls"), f8.get("images", 0), f8.get("link"), f8.get("score"),
             occ.get("n_objects"), f8.get("rule")),
        table4(seg_cls.get("miou"), seg_det.get("miou")),
        fig2(seg_cls.get("trimap"), seg_det.get("trimap"), seg_cls.get("anti_trimap"), seg_det.get("anti_trimap")),
        fig3(*(m.get("same_class") or (None, None, 0))),
        fig4(*(m.get("coverage") or (None, None)), link=m.get("maps_link")),
        fig5(*(m.get("maskout_drop") or (None, None)), link=m.get("maps_link")),
        fig6(*(m.get("comembership") or (None, None, None))),
        fig7(*(m.get("tsne_purity") or (None, None))),
        table5(m.get("head_probes")),
        table6(m.get("probes")),
        table7(ft.get("cls"), ft.get("det"), top1.get("cls"), top1.get("det")),
        table8(top1.get("cls"), top1.get("det"), (ftc.get("cls") or {}).get("interval"),
               (ftc.get("det") or {}).get("interval")),
    ]
    query = m.get("pair_query") or ""  # the pages that compare a pair open on the measured one
    return [replace(f, link=f.link + query) if f.link in PAIR_PAGES else f for f in out]
