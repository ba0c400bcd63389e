"""Linear and k-NN probes: error cases first, then hand-computed and brute-force references."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from featscope.analysis.probes import Splits, knn_accuracy, linear_probe, make_splits, wilson_interval


def _blobs(n_per: int = 60, n_cls: int = 3, d: int = 8, sep: float = 10.0, seed: int = 0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_cls, d)) * sep
    x = np.concatenate([c + rng.normal(size=(n_per, d)) for c in centres]).astype(np.float32)
    labels = np.repeat([f"class{c}" for c in range(n_cls)], n_per)
    return x, labels


# ---- error cases -------------------------------------------------------------------------------

def test_unlabelled_rows_rejected():
    x, labels = _blobs()
    labels = labels.astype(object)
    labels[5] = None
    with pytest.raises(ValueError, match="drop unlabelled"):
        make_splits(labels)
    with pytest.raises(ValueError, match="labelled data set"):
        linear_probe(x, labels)


def test_bad_fractions_and_shapes():
    x, labels = _blobs()
    with pytest.raises(ValueError, match="test_fraction"):
        make_splits(labels, val_fraction=0.5, test_fraction=0.5)
    with pytest.raises(ValueError, match="one label per row"):
        linear_probe(x[:-1], labels, make_splits(labels))
    with pytest.raises(ValueError, match="2-D"):
        linear_probe(x[:, 0], labels)
    with pytest.raises(ValueError, match="c_grid"):
        linear_probe(x, labels, c_grid=[0.0, 1.0])
    with pytest.raises(ValueError, match="validation part"):
        linear_probe(x, labels, make_splits(labels, val_fraction=0.0), c_grid=[0.1, 1.0])
    sp = make_splits(labels)
    with pytest.raises(ValueError, match="overlap"):
        linear_probe(x, labels, Splits(sp.train, sp.train[:3], sp.test))
    with pytest.raises(ValueError, match="k must be"):
        knn_accuracy(x, labels, sp, k=10_000)


def test_wilson_rejects_bad_counts():
    with pytest.raises(ValueError):
        wilson_interval(5, 0)
    with pytest.raises(ValueError):
        wilson_interval(6, 5)


# ---- Wilson interval ---------------------------------------------------------------------------

def test_wilson_hand_computed():
    # 8/10, z=1.96: centre (0.8 + 0.19208)/1.38416, half 1.96*sqrt(0.016 + 0.009604)/1.38416
    low, high = wilson_interval(8, 10, z=1.96)
    centre, half = (0.8 + 0.19208) / 1.38416, 1.96 * math.sqrt(0.016 + 0.009604) / 1.38416
    assert low == pytest.approx(centre - half, abs=1e-12) and high == pytest.approx(centre + half, abs=1e-12)
    assert (low, high) == pytest.approx((0.4902, 0.9433), abs=1e-4)
    low, high = wilson_interval(10, 10, z=1.96)  # 100%: upper bound 1, lower n/(n+z^2)
    assert high == pytest.approx(1.0) and low == pytest.approx(10 / (10 + 1.96**2), abs=1e-12)
    assert wilson_interval(0, 10)[0] == 0.0


# ---- splits ------------------------------------------------------------------------------------

def test_splits_deterministic_and_stratified():
    labels = np.repeat([0, 1, 2, 3], [100, 60, 40, 20])
    a, b = make_splits(labels, seed=3), make_splits(labels, seed=3)
    for part in ("train", "val", "test"):
        np.testing.assert_array_equal(getattr(a, part), getattr(b, part))
    assert not np.array_equal(a.test, make_splits(labels, seed=4).test)
    all_idx = np.concatenate([a.train, a.val, a.test])
    assert sorted(all_idx.tolist()) == list(range(len(labels)))
    assert a.stratified
    overall = np.bincount(labels) / len(labels)
    for part in (a.train, a.val, a.test):
        np.testing.assert_allclose(np.bincount(labels[part], minlength=4) / len(part), overall, atol=0.03)
    assert len(a.test) == pytest.approx(0.2 * len(labels), abs=1)
    json.dumps(a.to_dict())


def test_splits_fall_back_when_class_too_small():
    labels = ["a"] * 30 + ["b"] * 30 + ["c"]
    with pytest.warns(UserWarning, match="unstratified"):
        sp = make_splits(labels)
    assert not sp.stratified
    assert len(sp.train) + len(sp.val) + len(sp.test) == 61


# ---- linear probe ------------------------------------------------------------------------------

def test_probe_separable_blobs():
    x, labels = _blobs()
    res = linear_probe(x, labels, c_grid=[0.01, 1.0])
    assert res.accuracy >= 0.99
    assert res.ci_low <= res.accuracy <= res.ci_high
    assert res.coef.shape == (3, 8) and res.intercept.shape == (3,)
    assert res.classes.tolist() == ["class0", "class1", "class2"]
    assert (res.predict(x) == labels).mean() >= 0.99
    json.dumps(res.to_dict(weights=True))


def test_predict_proba_matches_sklearn():
    x, labels = _blobs(sep=1.0, seed=1)
    sp = make_splits(labels, seed=1)
    res = linear_probe(x, labels, sp, c_grid=[0.3])
    rows = np.concatenate([sp.train, sp.val])
    scaler = StandardScaler().fit(x[rows])
    y = np.unique(labels, return_inverse=True)[1]
    model = LogisticRegression(C=0.3, max_iter=1000, random_state=0).fit(scaler.transform(x[rows]), y[rows])
    np.testing.assert_allclose(res.predict_proba(x), model.predict_proba(scaler.transform(x)), atol=1e-6)


def test_predict_proba_binary_int_labels():
    x, labels = _blobs(n_cls=2, sep=1.0, seed=2)
    ints = np.unique(labels, return_inverse=True)[1] + 7
    sp = make_splits(ints, seed=0)
    res = linear_probe(x, ints, sp, c_grid=[1.0])
    assert res.coef.shape == (2, 8) and res.classes.tolist() == ["7", "8"]
    rows = np.concatenate([sp.train, sp.val])
    scaler = StandardScaler().fit(x[rows])
    model = LogisticRegression(C=1.0, max_iter=1000).fit(scaler.transform(x[rows]), ints[rows])
    np.testing.assert_allclose(res.predict_proba(x), model.predict_proba(scaler.transform(x)), atol=1e-6)


def test_c_selection_picks_best_validation_c():
    # Training labels carry 30% noise; a weak C underfits a 2-feature signal buried among many
    # noise features, a huge C overfits them. The chosen C must be the grid argmax on val.
    rng = np.random.default_rng(0)
    n, d = 400, 60
    x = rng.normal(size=(n, d))
    y = (x[:, 0] + x[:, 1] > 0).astype(int)
    sp = make_splits(y, seed=0)
    noisy = y.copy()
    flip = rng.random(n) < 0.3
    noisy[sp.train[flip[sp.train]]] ^= 1  # noise only in train, so val measures generalisation
    grid = [1e-5, 1e-2, 1e3]
    res = linear_probe(x, noisy, sp, c_grid=grid)
    best = int(np.argmax(res.val_accuracy))
    assert res.best_c == grid[best]
    assert res.val_accuracy[best] > res.val_accuracy.min()
    # hand reference for val accuracies
    for c, acc in zip(grid, res.val_accuracy):
        sc = StandardScaler().fit(x[sp.train])
        m = LogisticRegression(C=c, max_iter=1000, random_state=0)
        m.fit(sc.transform(x[sp.train]), noisy[sp.train])
        assert acc == pytest.approx(np.mean(m.predict(sc.transform(x[sp.val])) == noisy[sp.val]))


# ---- k-NN --------------------------------------------------------------------------------------

def _brute_knn(x, codes, sp, k):
    db = np.concatenate([sp.train, sp.val])
    u = x.astype(np.float64) / np.linalg.norm(x, axis=1, keepdims=True)
    s = u[sp.test] @ u[db].T
    correct = 0
    for qi, q in enumerate(sp.test):
        nb = np.argsort(-s[qi], kind="stable")[:k]
        votes, wsum = {}, {}
        for j in nb:
            c = codes[db[j]]
            votes[c] = votes.get(c, 0) + 1
            wsum[c] = wsum.get(c, 0.0) + s[qi, j]
        pred = max(votes, key=lambda c: (votes[c], wsum[c], -c))
        correct += pred == codes[q]
    return correct / len(sp.test)


@pytest.mark.parametrize("k", [1, 4, 20])
def test_knn_matches_brute_force(k):
    x, labels = _blobs(n_per=50, n_cls=4, d=6, sep=0.7, seed=5)
    sp = make_splits(labels, seed=0)
    codes = np.unique(labels, return_inverse=True)[1]
    res = knn_accuracy(x, labels, sp, k=k)
    assert res.accuracy == pytest.approx(_brute_knn(x, codes, sp, k))
    assert res.ci_low <= res.accuracy <= res.ci_high and res.k == k
    json.dumps(res.to_dict())


def test_knn_separable_blobs_perfect():
    x, labels = _blobs()
    res = knn_accuracy(x, labels, make_splits(labels), k=5)
    assert res.accuracy == 1.0


# ---- features too large to copy into memory ------------------------------------------------------

def test_features_too_large_for_memory_get_the_same_probe_by_streamed_lbfgs(monkeypatch, tmp_path):
    """The streamed L-BFGS-B fit (float32 working copy, row blocks) minimises scikit-learn's objective: same C
    chosen, same validation and test accuracy, same predictions and coefficients to the solvers' tolerance;
    the k-NN probe through a tuned IVF index agrees too."""
    import featscope.analysis.arrays as arrays

    x, y = _blobs(n_per=150, n_cls=4, d=12, sep=0.4, seed=3)  # overlapping: val accuracy peaks at C = 0.01
    labels = np.array([f"c{v}" for v in y])
    splits = make_splits(labels, seed=1)
    grid = [0.001, 0.01, 1.0]
    want = linear_probe(x, labels, splits, c_grid=grid, max_iter=2000)
    assert want.best_c == 0.01 and len(set(want.val_accuracy)) == 3
    np.save(tmp_path / "x.npy", x.astype(np.float32))
    mapped = np.load(tmp_path / "x.npy", mmap_mode="r")
    monkeypatch.setattr(arrays, "IN_MEMORY_MAX", 1000)
    monkeypatch.setattr(arrays, "CHUNK", 128)  # several row blocks per pass
    got = linear_probe(mapped, labels, splits, c_grid=grid, max_iter=2000)
    assert got.best_c == want.best_c and got.converged
    assert got.accuracy == pytest.approx(want.accuracy, abs=1 / got.n_test)
    np.testing.assert_allclose(got.val_accuracy, want.val_accuracy, atol=1 / len(splits.val))
    assert np.array_equal(got.classes, want.classes)
    np.testing.assert_allclose(got.scaler_mean, want.scaler_mean, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(got.predict_proba(x), want.predict_proba(x), atol=2e-3)
    np.testing.assert_allclose(got.coef, want.coef, atol=2e-3 * np.abs(want.coef).max())
    x = _blobs(n_per=150, n_cls=4, d=12, sep=2.0, seed=3)[0]  # separated: IVF neighbours vote as exact ones
    monkeypatch.setattr(arrays, "IN_MEMORY_MAX", 1 << 30)
    knn_want = knn_accuracy(x, labels, splits, k=7)
    np.save(tmp_path / "x_knn.npy", x)
    monkeypatch.setattr(arrays, "IN_MEMORY_MAX", 1000)
    knn_got = knn_accuracy(np.load(tmp_path / "x_knn.npy", mmap_mode="r"), labels, splits, k=7)
    assert not knn_got.info["exact"] and abs(knn_got.accuracy - knn_want.accuracy) <= 2 / knn_got.n_test


def test_streamed_probe_gives_the_same_result_with_or_without_a_working_copy(monkeypatch, tmp_path):
    """A working copy too large for the memory budget falls back to re-reading the row blocks on every
    evaluation: the same standardised blocks, so the same probe, bit for bit."""
    import featscope.analysis.arrays as arrays
    from featscope.analysis import probes_stream as ps
    from featscope.analysis.probes import _encode_labels, _streamed_linear_probe

    x, labels = _blobs(n_per=80, n_cls=3, d=10, sep=1.5, seed=4)
    np.save(tmp_path / "x.npy", x.astype(np.float16))
    mapped = np.load(tmp_path / "x.npy", mmap_mode="r")
    monkeypatch.setattr(arrays, "CHUNK", 50)
    splits = make_splits(labels, seed=2)
    codes, classes = _encode_labels(labels)
    held = ps.Standardised(mapped, splits.train, *ps.scaler(mapped, splits.train), budget=10**9)
    read = ps.Standardised(mapped, splits.train, *ps.scaler(mapped, splits.train), budget=held.nbytes - 1)
    assert held.copy is not None and read.copy is None
    for (s1, b1), (s2, b2) in zip(held.blocks(), read.blocks(), strict=True):
        assert s1 == s2 and np.array_equal(b1, b2)
    grid = np.array([0.01, 0.1, 10.0])
    runs = [_streamed_linear_probe(mapped, codes, classes, splits, grid, 500, budget=b) for b in (10**9, 0)]
    for name in ("coef", "intercept", "val_accuracy", "scaler_mean", "scaler_scale"):
        np.testing.assert_array_equal(getattr(runs[0], name), getattr(runs[1], name), err_msg=name)
    assert runs[0].accuracy == runs[1].accuracy and runs[0].best_c == runs[1].best_c


def test_streamed_cross_entropy_matches_a_float64_reference():
    """The blockwise float32 loss and gradient equal a direct float64 softmax cross-entropy."""
    from scipy.special import log_softmax, softmax

    from featscope.analysis import probes_stream as ps

    rng = np.random.default_rng(0)
    x, y, k = rng.normal(size=(300, 7)) * 3 + 1, rng.integers(0, 4, 300), 4
    rows = np.arange(300)
    mean, scale = ps.scaler(x, rows)
    term = ps.CrossEntropy(ps.Standardised(x, rows, mean, scale, chunk=64, budget=0), y, k)
    w, b = rng.normal(size=(k, 7)), rng.normal(size=k)
    loss, grad = term(np.concatenate([w.ravel(), b]))
    xs = (x - mean) / scale
    z = xs @ w.T + b
    assert loss == pytest.approx(-log_softmax(z, axis=1)[rows, y].mean(), rel=1e-6)
    delta = (softmax(z, axis=1) - np.eye(k)[y]) / len(y)
    np.testing.assert_allclose(grad, np.concatenate([(delta.T @ xs).ravel(), delta.sum(0)]), rtol=1e-5, atol=1e-7)
    assert term.evaluations == 1 and term(np.concatenate([w.ravel(), b]))[0] == loss and term.evaluations == 1


@pytest.mark.parametrize("limit, usage, want", [("max", "100", None), ("1000", "400", 600), ("1000", "1500", 0)])
def test_the_working_copy_budget_respects_a_containers_memory_limit(tmp_path, monkeypatch, limit, usage, want):
    from featscope.analysis import arrays

    (tmp_path / "memory.max").write_text(limit + "\n")
    (tmp_path / "memory.current").write_text(usage + "\n")
    assert arrays._cgroup_available(str(tmp_path)) == want
    monkeypatch.setattr(arrays, "_cgroup_available", lambda: want)
    monkeypatch.setattr(arrays, "_system_available", lambda: 10_000)
    assert arrays.working_copy_budget() == (10_000 if want is None else min(want, 10_000)) // 2
