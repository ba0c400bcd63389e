"""Taps and pooling: errors first, then every pooling against a hand computation, then tap models."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from featscope.extractors.taps import POOLINGS, pool, pooled_dim, tap_model
from featscope.extractors.types import Backbone, Preprocess


def _backbone(model: nn.Module, taps: dict[str, str], aliases: dict[str, str] | None = None) -> Backbone:
    return Backbone(spec="test:net", source="checkpoint", arch="net", model=model, preprocess=Preprocess(),
                    fingerprint="0" * 64, taps=taps, aliases=aliases or {})


class _Net(nn.Module):
    """Two conv stages; ``branchy`` adds data-dependent control flow that FX cannot trace."""

    def __init__(self, branchy: bool = False) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.stage1 = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU())
        self.stage2 = nn.Sequential(nn.Conv2d(4, 6, 3, stride=2, padding=1), nn.BatchNorm2d(6))
        self.branchy = branchy

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stage1(x)
        if self.branchy and bool(x.sum() > 0):
            x = x * 1.0
        return self.stage2(x).mean(dim=(2, 3))


def _arange(b: int = 2, c: int = 3, h: int = 4, w: int = 4) -> torch.Tensor:
    return torch.arange(b * c * h * w, dtype=torch.float64).reshape(b, c, h, w)


# --- errors -----------------------------------------------------------------------------------

def test_pool_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match=r"\(B, C, H, W\) activation, got shape \(2, 3\)"):
        pool(torch.zeros(2, 3), "avg")
    with pytest.raises(ValueError, match="unknown pooling 'mean'; choose one of avg, max, grid2, grid4, none"):
        pool(torch.zeros(1, 1, 2, 2), "mean")
    with pytest.raises(ValueError, match="unknown pooling"):
        pooled_dim(1, 2, 2, "sum")


def test_tap_model_rejects_bad_taps() -> None:
    b = _backbone(_Net(), {"stage1": "stage1", "stage2": "stage2"}, {"conv5": "stage2"})
    with pytest.raises(ValueError, match="at least one tap.*featscope backbone layers NAME"):
        tap_model(b, [])
    with pytest.raises(ValueError, match=r"no tap 'layer9'.*stage1, stage2, conv5 \(=stage2\)"
                                         r".*featscope backbone layers"):
        tap_model(b, ["layer9"])
    with pytest.raises(ValueError, match="name the same layer more than once"):
        tap_model(b, ["stage2", "conv5"])


# --- pooling against hand computations ---------------------------------------------------------

def test_avg_and_max() -> None:
    x = _arange()
    # channel c of image b holds 16*(3b + c) + 0..15: mean = base + 7.5, max = base + 15
    base = torch.tensor([[16.0 * (3 * b + c) for c in range(3)] for b in range(2)], dtype=torch.float64)
    assert torch.equal(pool(x, "avg"), base + 7.5)
    assert torch.equal(pool(x, "max"), base + 15)


def test_grid2_is_channel_major_block_means() -> None:
    x = _arange()
    want = torch.empty(2, 3 * 4, dtype=torch.float64)
    for b in range(2):
        for c in range(3):
            for i in range(2):
                for j in range(2):
                    block = [float(x[b, c, r, k]) for r in (2 * i, 2 * i + 1) for k in (2 * j, 2 * j + 1)]
                    want[b, c * 4 + i * 2 + j] = sum(block) / 4
    assert torch.equal(pool(x, "grid2"), want)


def test_grid4_of_a_4x4_map_is_the_map_and_none_is_flatten() -> None:
    x = _arange()
    assert torch.equal(pool(x, "grid4"), x.reshape(2, 48))
    assert torch.equal(pool(x, "none"), x.reshape(2, 48))


def test_grid2_on_odd_sizes_uses_overlapping_adaptive_bins() -> None:
    x = _arange(1, 1, 5, 3)
    want = []
    for i in range(2):
        r0, r1 = math.floor(i * 5 / 2), math.ceil((i + 1) * 5 / 2)
        for j in range(2):
            c0, c1 = math.floor(j * 3 / 2), math.ceil((j + 1) * 3 / 2)
            cells = [float(x[0, 0, r, c]) for r in range(r0, r1) for c in range(c0, c1)]
            want.append(sum(cells) / len(cells))
    assert torch.allclose(pool(x, "grid2"), torch.tensor([want], dtype=torch.float64), rtol=0, atol=1e-12)


@pytest.mark.parametrize("pooling", POOLINGS)
def test_pooled_dim_matches_pool(pooling: str) -> None:
    x = torch.randn(2, 5, 7, 6)
    assert pool(x, pooling).shape == (2, pooled_dim(5, 7, 6, pooling))


# --- tap models ---------------------------------------------------------------------------------

@pytest.mark.parametrize("branchy", [False, True], ids=["fx", "hooks"])
def test_tap_model_outputs_match_the_network(branchy: bool) -> None:
    net = _Net(branchy).eval()
    b = _backbone(net, {"stage1": "stage1", "stage2": "stage2"}, {"conv5": "stage2"})
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        out = tap_model(b, ["stage1", "conv5"])(x)
        s1 = net.stage1(x)
        s2 = net.stage2(s1)
    assert list(out) == ["stage1", "conv5"]
    assert torch.equal(out["stage1"], s1) and torch.equal(out["conv5"], s2)
    assert isinstance(tap_model(b, ["stage1"]), torch.fx.GraphModule) is not branchy  # hooks when FX fails


def test_tap_model_keeps_an_eval_model_in_eval() -> None:
    net = _Net().eval()
    tap_model(_backbone(net, {"stage1": "stage1"}), ["stage1"])
    assert not any(m.training for m in net.modules())


def test_tap_model_restores_train_mode() -> None:
    net = _Net().train()
    tap = tap_model(_backbone(net, {"stage1": "stage1"}), ["stage1"])
    assert not tap.training
    assert all(m.training for m in net.modules())


def test_hook_fallback_is_not_altered_by_later_inplace_ops() -> None:
    class InplaceAfterTap(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stage1 = nn.Identity()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if x.sum() > -1e30:  # data-dependent control flow: FX cannot trace this, so hooks are used
                y = self.stage1(x)
                return y.mul_(0.0)
            return x

    x = torch.arange(16.0).view(1, 1, 4, 4)
    tap = tap_model(_backbone(InplaceAfterTap(), {"stage1": "stage1"}), ["stage1"])
    assert torch.equal(tap(x.clone())["stage1"], x)
