"""A segmentation run's mask reader: test masks mapped onto the training classes by name; clear refusals."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from featscope.workspace.segmentation_runs import MaskReader, _lookup


class _Masks:
    def fingerprint(self, relpaths):
        return "fake:" + ",".join(relpaths)

    def load(self, relpath):
        return np.array([[0, 1, 2, 255]], np.uint8)


def test_test_masks_are_mapped_onto_the_training_classes():
    train = ["background", "a", "b"]
    assert _lookup(train, train, "test", "train") is None
    lut = _lookup(["background", "b", "a"], train, "test", "train")
    reader = MaskReader()
    reader.add(Path("/data/train"), ["x.png"], _Masks(), None)
    reader.add(Path("/data/test"), ["x.png"], _Masks(), lut)
    assert reader(Path("/data/train/x.png")).tolist() == [[0, 1, 2, 255]]
    assert reader(Path("/data/test/x.png")).tolist() == [[0, 2, 1, 255]]  # b and a swap, void stays void
    assert _lookup(["background", "a"], train, "test", "train").tolist()[:3] == [0, 1, 255]  # a subset is fine
    with pytest.raises(ValueError, match="the masks of test data set 'test' have class\\(es\\) 'c' that 'train' has not"):
        _lookup(["background", "c"], train, "test", "train")
    with pytest.raises(ValueError, match="has no segmentation mask in this run's data sets"):
        reader(Path("/data/train/y.png"))
