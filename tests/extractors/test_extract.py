"""Batched extraction: argument errors first, then features against a hand-run reference, failures,
bf16, and resumption (deleted, truncated and interrupted shards; a work dir of another run)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from featscope.datasets.images import load_rgb
from featscope.extractors.extract import ExtractionResult, ExtractProgress, extract
from featscope.extractors.types import Backbone, Preprocess

N_GOOD = 19
BAD = (5, 12)  # positions of files that cannot be decoded


@pytest.fixture(scope="module")
def paths(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """21 images of varied size and format, two of them undecodable (a text file, a truncated JPEG)."""
    root = tmp_path_factory.mktemp("imgs")
    rng = np.random.default_rng(0)
    out = []
    for i in range(N_GOOD + len(BAD)):
        if i == BAD[0]:
            p = root / f"{i:02d}.jpg"
            p.write_text("not an image")
        elif i == BAD[1]:
            p = root / f"{i:02d}.jpg"
            Image.fromarray(rng.integers(0, 255, (80, 80, 3), dtype=np.uint8)).save(p)
            p.write_bytes(p.read_bytes()[:200])
        else:
            h, w = rng.integers(64, 110, size=2)
            pix = np.clip(rng.normal(120, 60, (h, w, 3)) + np.linspace(0, 80, w)[None, :, None], 0, 255)
            p = root / f"{i:02d}.{'png' if i % 2 else 'jpg'}"
            Image.fromarray(pix.astype(np.uint8)).save(p)
        out.append(p)
    return out


@pytest.fixture(scope="module")
def backbone(tiny) -> Backbone:
    """ResNet-18 with random weights and randomised BN (so conv-BN folding is exercised), 64x64 crops."""
    m = tiny.make_resnet("resnet18", seed=3)
    return Backbone(spec="torchvision:resnet18", source="torchvision", arch="resnet18", model=m,
                    preprocess=Preprocess(resize=72, crop=64), fingerprint="test",
                    taps={f"layer{i}": f"layer{i}" for i in range(1, 5)},
                    aliases={f"conv{i + 1}": f"layer{i}" for i in range(1, 5)}, classifier=m.fc)


def _reference(backbone: Backbone, paths: list[Path]) -> dict[str, torch.Tensor]:
    """layer2/layer4 of the plain model, run by hand on the same uint8 crops, unfused, NCHW, fp32."""
    pre, m = backbone.preprocess, backbone.model
    x = pre.normalize(torch.stack([pre.to_uint8(load_rgb(p)) for p in paths]))
    with torch.no_grad():
        l2 = m.layer2(m.layer1(m.maxpool(m.relu(m.bn1(m.conv1(x))))))
        return {"layer2": l2, "layer4": m.layer4(m.layer3(l2))}


def _run(backbone: Backbone, paths: list[Path], work: Path, **kw) -> ExtractionResult:
    args = {"taps": ("layer2", "conv5"), "poolings": ("avg", "max"), "batch_size": 4, "shard_size": 6,
            "num_workers": 0, "device": "cpu"} | kw
    return extract(backbone, paths, work_dir=work, **args)


def _assert_same(a: ExtractionResult, b: ExtractionResult) -> None:
    assert a.features.keys() == b.features.keys()
    for k in a.features:
        assert a.features[k].tobytes() == b.features[k].tobytes(), k
    np.testing.assert_array_equal(a.ok, b.ok)
    assert a.failures == b.failures


# -- errors ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("kw,match", [
    ({"taps": ("layer9",)}, "no tap 'layer9'.*layer4"),
    ({"taps": ()}, "at least one tap"),
    ({"poolings": ("mean",)}, "unknown pooling"),
    ({"poolings": ("avg", "avg")}, "without repeats"),
    ({"precision": "int8"}, "precision must be one of fp32, bf16, fp16"),
    ({"batch_size": 0}, "batch_size"),
    ({"num_workers": -1}, "num_workers"),
    ({"threads": 0}, "threads"),
])
def test_bad_arguments_are_rejected(backbone, paths, tmp_path, kw, match):
    with pytest.raises(ValueError, match=match):
        _run(backbone, paths, tmp_path, **kw)
    assert not any(tmp_path.iterdir())


def test_no_paths_is_an_error(backbone, tmp_path):
    with pytest.raises(ValueError, match="no image paths"):
        extract(backbone, [], work_dir=tmp_path)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_gpu_is_an_error(backbone, paths, tmp_path):
    with pytest.raises(ValueError, match="no CUDA GPU"):
        _run(backbone, paths, tmp_path, device="cuda")


# -- features --------------------------------------------------------------------------------------

def test_fp32_matches_reference_and_skips_failures(backbone, paths, tmp_path):
    state = {k: v.clone() for k, v in backbone.model.state_dict().items()}
    seen: list[ExtractProgress] = []
    res = _run(backbone, paths, tmp_path / "w0", progress=seen.append)

    good = [i for i in range(len(paths)) if i not in BAD]
    assert res.ok.dtype == np.int64 and res.ok.tolist() == good
    assert sorted(res.failures) == list(BAD)
    assert all("ImageDecodeError" in msg for msg in res.failures.values())
    assert "not an image" in res.failures[BAD[0]] and "truncated" in res.failures[BAD[1]]
    assert res.device == "cpu" and res.precision == "fp32" and res.resumed_shards == 0
    assert res.shards == 3 and res.images_per_second > 0  # shard_size 6 -> 8 (two batches of 4)

    ref = _reference(backbone, [paths[i] for i in good])
    expected = {("layer2", "avg"): ref["layer2"].mean((2, 3)), ("layer2", "max"): ref["layer2"].amax((2, 3)),
                ("conv5", "avg"): ref["layer4"].mean((2, 3)), ("conv5", "max"): ref["layer4"].amax((2, 3))}
    assert res.features.keys() == expected.keys()
    for key, want in expected.items():
        got = res.features[key]
        assert got.dtype == np.float32 and got.shape == tuple(want.shape)
        np.testing.assert_allclose(got, want.numpy(), rtol=1e-4, atol=1e-4 * float(want.abs().max()))

    assert [p.done for p in seen] == [4, 8, 12, 16, 20, 21] and seen[-1].total == 21
    assert [p.shard for p in seen] == [0, 0, 1, 1, 2, 2] and {p.shards for p in seen} == {3}
    # the caller's backbone is left exactly as it was
    assert not backbone.model.training and backbone.model.conv1.weight.is_contiguous()
    assert all(torch.equal(state[k], v) for k, v in backbone.model.state_dict().items())
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in backbone.model.modules()) == 20


def test_workers_and_memory_format_do_not_change_features(backbone, paths, tmp_path):
    plain = _run(backbone, paths, tmp_path / "a")
    workers = _run(backbone, paths, tmp_path / "b", num_workers=2)
    _assert_same(plain, workers)
    nchw = _run(backbone, paths, tmp_path / "c", channels_last=False, poolings=("grid2",))
    ref = _reference(backbone, [paths[i] for i in plain.ok])["layer4"]
    want = torch.nn.functional.adaptive_avg_pool2d(ref, 2).flatten(1).numpy()
    np.testing.assert_allclose(nchw.features[("conv5", "grid2")], want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


def test_unfoldable_norm_layers_run_as_they_are(backbone, paths, tmp_path, tiny):
    """FrozenBatchNorm2d (detection backbones) is not folded; the convs then run channels_last on a copy."""
    frozen = tiny.frozen_copy(backbone.model)
    fb = Backbone(spec="test:frozen", source="test", arch="resnet18", model=frozen, preprocess=backbone.preprocess,
                  fingerprint="frozen", taps=backbone.taps, aliases=backbone.aliases)
    res = _run(fb, paths, tmp_path, taps=("layer4",), poolings=("avg",))
    want = _reference(backbone, [paths[i] for i in res.ok])["layer4"].mean((2, 3)).numpy()
    np.testing.assert_allclose(res.features[("layer4", "avg")], want, rtol=1e-4, atol=1e-4 * np.abs(want).max())
    assert all(p.is_contiguous() for p in frozen.parameters()) and all(b.is_contiguous() for b in frozen.buffers())


def test_bf16_is_close_to_fp32(backbone, paths, tmp_path):
    fp32 = _run(backbone, paths, tmp_path / "a", taps=("layer4",), poolings=("avg",))
    bf16 = _run(backbone, paths, tmp_path / "b", taps=("layer4",), poolings=("avg",), precision="bf16")
    a, b = fp32.features[("layer4", "avg")], bf16.features[("layer4", "avg")]
    assert b.dtype == np.float32 and bf16.precision == "bf16" and not np.array_equal(a, b)
    cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert cos.min() > 0.99


# -- resumption ------------------------------------------------------------------------------------

def test_resume_after_deleted_and_truncated_shards_is_bitwise_equal(backbone, paths, tmp_path):
    full = _run(backbone, paths, tmp_path / "full")
    work = tmp_path / "resume"
    _run(backbone, paths, work)
    (work / "shard-00002.npz").unlink()
    shard1 = work / "shard-00001.npz"
    shard1.write_bytes(shard1.read_bytes()[:100])
    again = _run(backbone, paths, work)
    assert again.resumed_shards == 1
    _assert_same(full, again)
    cached = _run(backbone, paths, work)
    assert cached.resumed_shards == 3 and cached.images_per_second == 0.0
    _assert_same(full, cached)


def test_resume_after_interruption_is_bitwise_equal(backbone, paths, tmp_path):
    full = _run(backbone, paths, tmp_path / "full", num_workers=2)
    work = tmp_path / "resume"

    def interrupt(p: ExtractProgress) -> None:
        if p.done >= 12:
            raise KeyboardInterrupt("stop")

    with pytest.raises(KeyboardInterrupt):
        _run(backbone, paths, work, num_workers=2, progress=interrupt)
    assert sorted(p.name for p in work.glob("shard-*")) == ["shard-00000.npz"]
    again = _run(backbone, paths, work, num_workers=2)
    assert again.resumed_shards == 1
    _assert_same(full, again)


def test_work_dir_of_another_run_starts_fresh(backbone, paths, tmp_path):
    work = tmp_path / "w"
    _run(backbone, paths, work, poolings=("avg",))
    run = json.loads((work / "run.json").read_text())
    assert run["n_paths"] == 21 and run["shard_size"] == 8 and run["fingerprint"] == "test"
    messages: list[str] = []
    res = _run(backbone, paths, work, poolings=("max",), progress=lambda p: p.message and messages.append(p.message))
    assert res.resumed_shards == 0 and len(messages) == 1 and "poolings" in messages[0]
    assert res.notes == messages and list(res.features) == [("layer2", "max"), ("conv5", "max")]
    other_paths = _run(backbone, paths[:-1], work, poolings=("max",))
    assert other_paths.resumed_shards == 0 and "paths_sha256" in other_paths.notes[0]
    assert other_paths.ok.tolist() == res.ok.tolist()[:-1]


# -- one extraction shared by several workers --------------------------------------------------------

def test_shard_ranges_hold_whole_batches_and_cover_every_image():
    from featscope.extractors.extract import shard_ranges

    assert shard_ranges(21, 4, 6) == [range(0, 8), range(8, 16), range(16, 21)]  # 6 rounds up to 2 batches
    assert shard_ranges(8, 4, 8) == [range(0, 8)] and shard_ranges(0, 4, 8) == []
    with pytest.raises(ValueError, match="batch_size"):
        shard_ranges(10, 0, 8)


def test_shards_computed_apart_assemble_to_the_uninterrupted_run_bitwise(backbone, paths, tmp_path):
    """Two 'workers' each compute some shards of one work dir; the whole read back equals a single run."""
    from featscope.extractors.extract import prepare_shards

    whole = _run(backbone, paths, tmp_path / "one")
    work = tmp_path / "shared"
    args = {"taps": ("layer2", "conv5"), "poolings": ("avg", "max"), "batch_size": 4, "shard_size": 6}
    assert prepare_shards(backbone, paths, work_dir=work, **args) == []
    seen: list[ExtractProgress] = []
    part = _run(backbone, paths, work, shards=[2, 0], progress=seen.append)
    assert part.ok.tolist() == [i for i in [*range(0, 8), *range(16, 21)] if i not in BAD]
    assert seen[-1].done == seen[-1].total == 13  # progress counts this run's shards only
    assert prepare_shards(backbone, paths, work_dir=work, **args) == [0, 2]  # the record matched: kept
    other = _run(backbone, paths, work, shards=[1])
    assert other.resumed_shards == 0 and other.ok.tolist() == [i for i in range(8, 16) if i not in BAD]
    assembled = _run(backbone, paths, work)
    assert assembled.resumed_shards == 3 and assembled.images_per_second == 0.0
    _assert_same(assembled, whole)
    with pytest.raises(ValueError, match=r"shard indices in \[0, 3\)"):
        _run(backbone, paths, work, shards=[3])
    with pytest.raises(ValueError, match="shard indices"):
        _run(backbone, paths, work, shards=[])


def test_without_keeping_features_the_result_streams_them_shard_by_shard(backbone, paths, tmp_path):
    whole = _run(backbone, paths, tmp_path / "one")
    lean = _run(backbone, paths, tmp_path / "lean", keep_features=False)
    assert lean.features == {} and len(lean.shard_files) == 3
    np.testing.assert_array_equal(lean.ok, whole.ok)
    assert lean.failures == whole.failures
    for key, feats in whole.features.items():
        blocks = list(lean.stream(key))
        assert len(blocks) == 3 and np.concatenate(blocks).tobytes() == feats.tobytes()
    again = _run(backbone, paths, tmp_path / "lean", keep_features=False)  # resumed: shards are read, not kept
    assert again.resumed_shards == 3 and again.features == {}
