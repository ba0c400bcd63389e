"""The study's findings as verdicts on hand-made numbers: each rule, its ties, its missing inputs; and the
measurements behind the qualitative figures against brute-force references."""

from __future__ import annotations

import numpy as np
import pytest

from featscope.analysis import findings as F
from featscope.analysis.study_measures import box_coverage, knn_purity, largest_drop, same_class_share

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


# ------------------------------------------------------------------------------------------ measurements
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
