import numpy as np
import pytest

from featscope.analysis.arrays import as_embeddings


@pytest.mark.parametrize("bad, message", [
    (np.zeros(5), "2-D"), (np.zeros((0, 3)), "empty"), (np.zeros((3, 0)), "empty"),
    (np.array([["a", "b"]]), "real numbers"), (np.ones((2, 2), dtype=complex), "real numbers"),
    (np.array([[1.0, np.nan]]), "NaN or inf"), (np.array([[1e39, 0.0]]), "NaN or inf"),
])
def test_bad_embeddings_are_refused_with_the_fix(bad, message):
    with pytest.raises(ValueError, match=message):
        as_embeddings(bad, "x_a")


def test_returns_c_contiguous_float32_with_the_same_values():
    x = np.arange(12, dtype=np.float64).reshape(3, 4)[:, ::2]
    out = as_embeddings(x)
    assert out.dtype == np.float32 and out.flags.c_contiguous
    np.testing.assert_array_equal(out, x.astype(np.float32))
