"""The study's findings as verdicts on hand-made numbers: each rule, its ties, its missing inputs; and the
measurements behind the qualitative figures against brute-force references."""

from __future__ import annotations

import numpy as np
import pytest

from featscope.analysis import findings as F
from featscope.analysis.study_measures import box_coverage, class_ap, knn_purity, largest_drop, same_class_share

IOUS = [f"{t / 10:g}" for t in range(1, 10)]


def ap(values):
    return dict(zip(IOUS, values))


# ------------------------------------------------------------------------------------------ verdict rules
def test_missing_inputs_are_not_measured_and_say_what_is_missing():
    for f in F.judge({}):
        assert f.verdict == F.NOT_MEASURED, f.key
        assert f.measured.startswith("not measured yet: ")
    assert [f.key for f in F.judge({})] == list(F.ORDER)


def test_fig1_needs_the_gain_to_grow_with_iou():
    cls = ap([0.9, 0.9, 0.85, 0.8, 0.75, 0.6, 0.45, 0.25, 0.05])
    grows = ap([0.9, 0.9, 0.86, 0.82, 0.77, 0.66, 0.55, 0.35, 0.1])  # +0.01 low, +0.083 high
    assert F.fig1(cls, grows).verdict == F.REPRODUCED
    assert F.fig1(cls, grows).values["gain_high"] == pytest.approx((0.1 + 0.1 + 0.05) / 3)
    shrinks = ap([0.95, 0.95, 0.9, 0.85, 0.8, 0.62, 0.46, 0.26, 0.06])  # +0.05 low, +0.01 high
    assert F.fig1(cls, shrinks).verdict == F.NOT_REPRODUCED
    assert F.fig1(cls, dict(cls)).verdict == F.NOT_REPRODUCED  # a tie is no direction
    worse = ap([v - 0.1 for v in cls.values()])
    assert F.fig1(cls, worse).verdict == F.NOT_REPRODUCED
    assert F.fig1(cls, {"0.5": 0.5}).verdict == F.NOT_MEASURED


def test_table1_needs_det_ahead_at_both_thresholds():
    cls = ap([0.5] * 9)
    assert F.table1(cls, ap([0.6] * 9)).verdict == F.REPRODUCED
    only_05 = ap([0.6, 0.6, 0.6, 0.6, 0.6, 0.6, 0.5, 0.5, 0.5])
    assert F.table1(cls, only_05).verdict == F.NOT_REPRODUCED
    assert "AP@0.5/0.7 from cls 50.0/50.0, from det 60.0/60.0" in F.table1(cls, ap([0.6] * 9)).measured


def test_figure_rules_follow_the_study_direction():
    assert F.fig3(0.9, 0.5, 20).verdict == F.REPRODUCED
    assert F.fig3(0.5, 0.5, 20).verdict == F.NOT_REPRODUCED
    assert F.fig4([0.2, 0.4], [0.5, 0.6]).verdict == F.REPRODUCED
    assert F.fig4([0.5, 0.6], [0.2, 0.4]).verdict == F.NOT_REPRODUCED
    assert F.fig5([0.9, 0.8], [0.1, 0.2]).verdict == F.REPRODUCED
    assert F.fig5([0.1], [0.2]).verdict == F.NOT_REPRODUCED
    assert F.fig7(0.9, 0.6).verdict == F.REPRODUCED
    assert F.fig7(0.6, 0.9).verdict == F.NOT_REPRODUCED
    assert F.fig4([], [0.2]).verdict == F.NOT_MEASURED


def test_fig6_needs_the_mean_gap_and_most_k():
    ks = [2, 4, 8, 16]
    assert F.fig6(ks, [0.9, 0.8, 0.7, 0.6], [0.5, 0.4, 0.3, 0.2]).verdict == F.REPRODUCED
    # mean gap positive (one large win) but only 1 of 4 K: not reproduced
    f = F.fig6(ks, [0.99, 0.3, 0.3, 0.3], [0.1, 0.31, 0.31, 0.31])
    assert f.verdict == F.NOT_REPRODUCED and f.values["wins"] == 1 and f.values["mean_gap"] > 0
    # undefined probabilities (None) are left out, not counted as losses
    f = F.fig6(ks, [None, 0.8, 0.7, None], [0.5, 0.4, 0.3, None])
    assert f.verdict == F.REPRODUCED and f.values["n_k"] == 2
    assert F.fig6(ks, [None] * 4, [None] * 4).verdict == F.NOT_MEASURED


def test_table5_checks_spatial_pooling_and_depth():
    good = {"conv5/avg": 0.8, "convproj/none": 0.6, "convproj/grid4": 0.65, "convproj/grid2": 0.7,
            "convproj/avg": 0.75, "fc1/avg": 0.7, "fc2/avg": 0.65}
    f = F.table5(good)
    assert f.verdict == F.REPRODUCED and f.values["spatial"] and f.values["depth"]
    assert F.table5({**good, "fc2/avg": 0.71}).verdict == F.NOT_REPRODUCED  # FC2 above FC1
    assert F.table5({**good, "convproj/none": 0.8}).verdict == F.NOT_REPRODUCED  # the full map wins
    no_grid = {k: v for k, v in good.items() if "grid" not in k}
    assert F.table5(no_grid).verdict == F.REPRODUCED  # grids are shown when there, not required
    assert F.table5({"conv5/avg": 0.8}).verdict == F.NOT_MEASURED


def test_table6_every_set_and_interval_overlap():
    apart = {"single": (0.9, 0.85, 0.95, 0.6, 0.55, 0.65)}
    f = F.table6(apart)
    assert f.verdict == F.REPRODUCED and "overlap" not in f.measured
    close = {"single": (0.9, 0.8, 0.95, 0.88, 0.8, 0.94), "small": (0.5, 0.4, 0.6, 0.55, 0.45, 0.65)}
    f = F.table6(close)
    assert f.verdict == F.NOT_REPRODUCED and f.measured.count("intervals overlap") == 2


def test_table7_and_table8():
    cls, det = ap([0.5] * 9), ap([0.6] * 9)
    assert F.table7(cls, det, 0.9, 0.8).verdict == F.REPRODUCED
    assert F.table7(cls, det, 0.8, 0.9).verdict == F.NOT_REPRODUCED
    assert F.table7(det, cls, 0.9, 0.8).verdict == F.NOT_REPRODUCED
    assert F.table7(cls, det, None, 0.8).verdict == F.NOT_MEASURED
    assert F.table8(0.9, 0.8).verdict == F.REPRODUCED
    assert F.table8(0.8, 0.8).verdict == F.NOT_REPRODUCED
    assert "overlap" in F.table8(0.9, 0.8, (0.8, 0.95), (0.7, 0.85)).measured


def test_judge_reads_a_measurements_dict():
    m = {"finetune_det": {"cls": ap([0.5] * 9), "det": ap([0.5, 0.5, 0.5, 0.5, 0.5, 0.6, 0.7, 0.7, 0.7])},
         "finetune_cls": {"cls": {"top1": 0.9, "interval": (0.85, 0.95)}, "det": {"top1": 0.7, "interval": (0.6, 0.8)}},
         "same_class": (0.8, 0.4, 50), "comembership": ([2, 4], [0.9, 0.8], [0.5, 0.4]), "tsne_purity": (0.9, 0.5)}
    got = {f.key: f.verdict for f in F.judge(m)}
    assert got["fig1"] == got["table7"] == got["table8"] == got["fig3"] == got["fig6"] == got["fig7"] == F.REPRODUCED
    assert got["table1"] == F.NOT_REPRODUCED  # equal at 0.5
    assert got["fig4"] == got["fig5"] == got["table5"] == got["table6"] == F.NOT_MEASURED


def test_table2_needs_the_detector_without_the_classes_strictly_ahead_of_the_classifier():
    f = F.table2(0.40, 0.45, 0.50, ["star", "cross"])
    assert f.verdict == F.REPRODUCED and "star, cross" in f.measured and "50.0 from det with them" in f.measured
    assert "not from cls, which saw those classes" in f.measured  # how the demo's third backbone started
    assert F.table2(0.45, 0.40).verdict == F.NOT_REPRODUCED
    assert F.table2(0.45, 0.45).verdict == F.NOT_REPRODUCED  # a tie is no direction
    assert F.table2(0.45, 0.45, 0.9).verdict == F.NOT_REPRODUCED  # the detector that saw them is context only
    missing = F.table2(None, 0.45)
    assert missing.verdict == F.NOT_MEASURED and "--heldout star,cross" in missing.measured


def test_table3_needs_fewer_misses_at_low_and_at_medium_occlusion():
    cls = {"none": 0.1, "low": 0.30, "medium": 0.50, "high": 0.9}
    det = {"none": 0.2, "low": 0.20, "medium": 0.40, "high": 0.95}  # worse without and at high occlusion: not judged
    f = F.table3(cls, det, {"none": 9, "low": 10, "medium": 5, "high": 2})
    assert f.verdict == F.REPRODUCED
    assert f.measured == "missed at low / medium occlusion: 30.0% / 50.0% from cls vs 20.0% / 40.0% from det (of 10 / 5 objects)"
    assert F.table3(cls, {**det, "medium": 0.5}).verdict == F.NOT_REPRODUCED  # equal at medium
    assert F.table3(cls, {**det, "low": 0.35}).verdict == F.NOT_REPRODUCED
    assert F.table3(cls, {**det, "medium": None}).verdict == F.NOT_MEASURED  # no medium object in the test set
    assert F.table3(None, det).verdict == F.NOT_MEASURED
    few = F.table3(cls, det, {"none": 90, "low": 12, "medium": 4})
    assert few.verdict == F.NOT_MEASURED and few.measured.startswith("too few test objects to compare: 4 at medium")
    # the rule names the thresholds, and that a detector left at 0.5 may keep more than N boxes; the measurement
    # the ones each detector was judged at (3 significant figures) and how each was chosen
    assert ("IoU 0.5; score 0.5, or, for a detector with fewer than N boxes scoring 0.5 (N = the test set's "
            "objects), its N-th best score (its lowest, when it has fewer than N boxes); a detector that stays at "
            "0.5 may keep more than N boxes") in f.rule
    weak = F.table3(cls, det, {"none": 9, "low": 10, "medium": 5, "high": 2}, {"cls": 0.1902, "det": 0.2429}, 186,
                    {"cls": "nth", "det": "nth"})
    assert weak.measured.endswith("(of 10 / 5 objects); at score 0.19 (cls) / 0.243 (det), each one's N-th best, "
                                  "N = 186 test objects")
    assert weak.values["score"] == {"cls": 0.1902, "det": 0.2429} and weak.verdict == F.REPRODUCED
    assert weak.values["rule"] == {"cls": "nth", "det": "nth"}
    one = F.table3(cls, det, None, {"cls": 0.5, "det": 0.31}, rules={"cls": "ceiling", "det": "nth"})
    assert one.measured.endswith("from det; at score 0.5 (cls) / 0.31 (det), det's N-th best, N = the test "
                                 "set's objects")
    assert F.table3(cls, det, None, {"cls": 0.5, "det": 0.5}).measured.endswith("from det; at score 0.5 (cls) / "
                                                                                 "0.5 (det)")
    # a detector with fewer than N boxes in all is judged at its lowest score: not called its N-th best
    low = F.table3(cls, det, None, {"cls": 0.0612, "det": 0.2429}, 40, {"cls": "lowest", "det": "nth"})
    assert low.measured.endswith("at score 0.0612 (cls) / 0.243 (det), cls's lowest, with fewer than N boxes in "
                                 "all, det's N-th best, N = 40 test objects")
    # rates a run stored before per-detector thresholds (no detections.json to recount): said so, no "N-th best"
    old = F.table3(cls, det, None, {"cls": 0.5, "det": 0.2429}, 40, {"cls": "fixed", "det": "nth"})
    assert old.measured.endswith("at score 0.5 (cls) / 0.243 (det), det's N-th best, N = 40 test objects; cls: "
                                 "fixed score 0.5 (recorded before per-detector thresholds)")
    both_old = F.table3(cls, det, None, {"cls": 0.5, "det": 0.5}, 40, {"cls": "fixed", "det": "fixed"})
    assert "N-th" not in both_old.measured and both_old.measured.endswith(
        "; cls: fixed score 0.5 (recorded before per-detector thresholds); det: fixed score 0.5 (recorded before "
        "per-detector thresholds)")
    # without the rules, a lowered threshold cannot be told N-th best from lowest, and the text says both
    assert F.table3(cls, det, None, {"cls": 0.5, "det": 0.31}).measured.endswith(
        "det's N-th best (or lowest, with fewer than N boxes), N = the test set's objects")


def test_fig8_counts_images_only_one_detector_gets_right():
    f = F.fig8(5, 2, 40, link="/detections?a=1&b=2&show=only-b")
    assert f.verdict == F.REPRODUCED and f.link == "/detections?a=1&b=2&show=only-b"
    assert f.measured.startswith("of 40 test images, 5 with an occluded object only the detector from det finds, 2")
    assert F.fig8(2, 2, 40).verdict == F.NOT_REPRODUCED
    assert F.fig8(1, 3, 40).verdict == F.NOT_REPRODUCED
    assert F.fig8(None, None).verdict == F.NOT_MEASURED and F.fig8(None, None).link == "/detections"
    assert "its N-th best score (its lowest, when it has fewer than N boxes)" in f.rule and "IoU 0.5" in f.rule
    assert "a detector that stays at 0.5 may keep more than N boxes" in f.rule
    weak = F.fig8(5, 2, 40, scores={"cls": 0.1902, "det": 0.2429}, n_objects=186, rules={"cls": "nth", "det": "nth"})
    assert weak.measured == ("of 40 test images, 5 with an occluded object only the detector from det finds, 2 with "
                             "one only the detector from cls finds; at score 0.19 (cls) / 0.243 (det), each one's "
                             "N-th best, N = 186 test objects")


def test_table4_and_fig2():
    assert F.table4(0.60, 0.65).verdict == F.REPRODUCED
    assert F.table4(0.65, 0.65).verdict == F.NOT_REPRODUCED
    assert F.table4(None, 0.65).verdict == F.NOT_MEASURED
    tri_c, tri_d = {1: 0.50, 2: 0.60, 4: 0.70}, {1: 0.55, 2: 0.66, 4: 0.71}
    anti_c, anti_d = {1: 0.80, 2: 0.85, 4: 0.90, 8: None}, {1: 0.82, 2: 0.86, 4: 0.93, 8: 0.99}
    f = F.fig2(tri_c, tri_d, anti_c, anti_d)
    # judged at the widest band both runs have pixels in (8 px has none in cls's): 4 px, +3.0
    assert f.verdict == F.REPRODUCED and f.measured.startswith("anti-trimap gain det - cls at 4 px: +3.0")
    assert "trimap gain +5.0 at 1 px, +1.0 at 4 px" in f.measured
    assert f.values["anti_trimap_gain"] == pytest.approx({1.0: 0.02, 2.0: 0.01, 4.0: 0.03})
    # a gain only near the boundaries does not reproduce the study's point
    assert F.fig2(tri_c, tri_d, anti_c, {**anti_d, 4: 0.90}).verdict == F.NOT_REPRODUCED
    assert F.fig2(tri_c, tri_d, None, anti_d).verdict == F.NOT_MEASURED
    assert F.fig2(None, None, anti_c, anti_d).verdict == F.REPRODUCED  # the trimap is context only


def test_judge_reads_the_new_measurements():
    m = {"heldout": {"classes": ["star"], "cls": 0.3, "without": 0.4, "with": 0.5},
         "missed_by_occlusion": {"cls": {"low": 0.3, "medium": 0.4}, "det": {"low": 0.35, "medium": 0.3},
                                 "objects": {"low": 8, "medium": 6}, "score": {"cls": 0.2, "det": 0.5},
                                 "n_objects": 30, "rule": {"cls": "lowest", "det": "ceiling"}},
         "fig8": {"only_det": 3, "only_cls": 1, "images": 8, "link": "/detections?a=5&b=6&show=only-b",
                  "score": {"cls": 0.2, "det": 0.5}, "rule": {"cls": "nth", "det": "ceiling"}},
         "segmentation": {"cls": {"miou": 0.5, "trimap": {1: 0.5}, "anti_trimap": {1: 0.8, 4: 0.9}},
                          "det": {"miou": 0.4, "trimap": {1: 0.6}, "anti_trimap": {1: 0.85, 4: 0.95}}}}
    got = {f.key: f for f in F.judge(m)}
    assert got["table2"].verdict == got["fig8"].verdict == got["fig2"].verdict == F.REPRODUCED
    assert got["table3"].verdict == got["table4"].verdict == F.NOT_REPRODUCED
    assert got["fig8"].link == "/detections?a=5&b=6&show=only-b"
    assert got["table3"].measured.endswith("at score 0.2 (cls) / 0.5 (det), cls's lowest, with fewer than N boxes "
                                           "in all, N = 30 test objects")
    assert got["fig8"].measured.endswith("at score 0.2 (cls) / 0.5 (det), cls's N-th best, N = 30 test objects")
    assert [f.key for f in F.judge(m)] == list(F.ORDER) and len(F.ORDER) == 16


# ------------------------------------------------------------------------------------------ measurements
def test_class_ap_means_the_named_classes_at_one_threshold():
    thresholds = IOUS
    per_class = {"star": [0.9] * 6 + [0.6, 0.3, 0.1], "cross": [0.8] * 6 + [0.2, 0.1, 0.0],
                 "circle": [-1.0] * 9, "square": [0.7] * 9}
    assert class_ap(per_class, ["star", "cross"], thresholds) == pytest.approx(0.4)
    assert class_ap(per_class, ["star", "cross"], thresholds, "0.8") == pytest.approx(0.2)
    # a class without ground truth (-1) or not evaluated at all is left out; none left: None
    assert class_ap(per_class, ["star", "circle", "hexagon"], thresholds) == pytest.approx(0.6)
    assert class_ap(per_class, ["circle"], thresholds) is None
    assert class_ap(per_class, ["square"], ["0.7", "0.1", "0.2", "0.3", "0.4", "0.5", "0.6", "0.8", "0.9"]) == 0.7
    with pytest.raises(ValueError, match="not one of the evaluated"):
        class_ap(per_class, ["star"], thresholds, "0.75")
    with pytest.raises(ValueError, match="has 2 AP values for 9"):
        class_ap({"star": [0.1, 0.2]}, ["star"], thresholds)


def test_same_class_share():
    labels = ["a", "a", "b", "b", None, None]
    assert same_class_share([0, 2, 0, 4], [1, 3, 2, 5], labels) == 0.5  # unlabelled pairs never count as same
    with pytest.raises(ValueError, match="same length"):
        same_class_share([0], [1, 2], labels)
    with pytest.raises(ValueError, match="no pairs"):
        same_class_share([], [], labels)


def test_knn_purity_against_brute_force():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(30, 2))
    labels = list(rng.choice(["p", "q", "r"], size=30))
    k = 4
    want = []
    for i in range(30):
        d = [(float(np.sum((x[i] - x[j]) ** 2)), j) for j in range(30) if j != i]
        nn = [j for _, j in sorted(d)[:k]]
        want.append(np.mean([labels[j] == labels[i] for j in nn]))
    assert knn_purity(x, labels, k) == pytest.approx(np.mean(want))
    two_blobs = np.r_[np.zeros((5, 2)), np.full((5, 2), 10.0)] + rng.normal(scale=0.01, size=(10, 2))
    assert knn_purity(two_blobs, ["a"] * 5 + ["b"] * 5, 4) == 1.0
    with pytest.raises(ValueError, match="k must be"):
        knn_purity(x, labels, 30)


def test_box_coverage_counts_pixels_inside_the_boxes():
    heat = np.zeros((10, 10))
    heat[0:5, 0:5] = 1.0  # the map's hot quarter
    assert box_coverage(heat, [[0, 0, 10, 10]]) == pytest.approx(0.25)
    assert box_coverage(heat, [[0, 0, 5, 5]]) == 1.0
    assert box_coverage(heat, [[0, 0, 5, 5], [5, 5, 10, 10]]) == pytest.approx(0.5)  # union of two boxes
    heat[:, 8:] = np.nan  # outside the network's crop: left out
    assert box_coverage(heat, [[5, 0, 10, 10]]) == pytest.approx(0.0)
    assert box_coverage(np.zeros((4, 4)), [[0, 0, 4, 4]]) == 0.0
    with pytest.raises(ValueError, match="no box pixel"):
        box_coverage(heat, [[8, 0, 10, 10]])


def test_largest_drop():
    assert largest_drop(0.2, 0.8) == pytest.approx(0.75)
    assert largest_drop(0.9, 0.8) == 0.0
    with pytest.raises(ValueError, match="unmasked"):
        largest_drop(0.1, 0.0)
