"""featscope ``maskout_map`` against Captum's ``Occlusion``, side by side in one run.

ResNet-50 (random init, BN statistics recalibrated on generated images as in ``bench_extract.py``, and
the classifier scaled so its logits have the spread of a trained net's: the target probability moves
when the mask covers the object), one 224x224 crop, 60x60 blank mask (0 in normalised space, Captum's
baseline 0), stride 8. Captum runs the plain fp32 model (as a user would: NCHW, ``torch.no_grad``)
with ``forward_func`` = softmax probabilities and each ``perturbations_per_eval`` in {16, 64, 256};
its best is reported. Captum runs under the allocator setting featscope uses (glibc keeps freed
activation buffers instead of unmapping them; ``featscope.extractors.extract._keep_freed_memory``):
without it the same Captum call took 34-37 s instead of 24-26 s here. Both compute 22x22 = 484 positions: Captum steps to ceil((224 - 60) / 8) * 8 = 168
and clips its last mask at the border (56 px); featscope's last mask is a full 60 px at 224 - 60 = 164.

Accuracy: the fp32 naive loop (one full forward pass per position, whole image masked) is run on
``--naive-positions`` positions and compared with the exact fp32 map; that map, once verified, is the
reference for bf16. Captum's output is an attribution (p0 minus the mean over the windows covering a
pixel), so it is compared with the attribution the reference map implies, on the pixels (rows and
columns < 168) that only the 21x21 positions both grids share cover.

"mixed": ``precision="mixed"``, the first layers (to stride 8: stem, layer1, layer2) and the head in fp32, the
rest in bf16; compared with the exact map on every position, as bf16 is (both run their head in fp32).

"bf16 approx": bf16 with ``approx_margin`` (``--approx-margin``, default 2): the mask's effect beyond that
many cells of its footprint is dropped at every layer (Krypton's truncated projective fields), compared
with the exact map on every position.

Sensitivity: the same naive positions with +-0.5 grey level of uniform input noise. A random BN ResNet is
chaotic: that noise, and so any rounding (bf16, or fp32 sums in another order), moves its probabilities
about 100x more than a stable net's. ``--residual-scale 0.5`` damps its residual branches (a stand-in for
a trained net's stability, not a trained net); ``--weights`` takes trained weights where a file exists.

    .venv/bin/python benchmarks/bench_maskout.py [--device cpu|cuda] [--repeat 2] [--naive-positions 8|all]
        [--residual-scale 0.5] [--weights resnet50.pth] [--study-scene 64 [--scenes-accuracy 2]]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torchvision
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_extract import make_images, make_model  # noqa: E402

from featscope.extractors.extract import _keep_freed_memory  # noqa: E402
from featscope.extractors.maskout import maskout_map  # noqa: E402
from featscope.extractors.types import Preprocess  # noqa: E402

# A featscope-trained ResNet-50 (benchmarks/train_resnet50.py), used by default when present.
TRAINED = Path(__file__).resolve().parent / ".weights" / "resnet50-featscope.pth"

PRE = Preprocess(resize=256, crop=224)
# name, precision, reuse, channels_last (None: featscope's default, NCHW in fp32, channels_last in bf16), approx
VARIANTS = (("featscope fp32 exact", "fp32", "auto", None, False),
            ("featscope fp32 no reuse", "fp32", False, None, False),
            ("featscope fp32 channels_last", "fp32", "auto", True, False),
            ("featscope bf16", "bf16", "auto", None, False),
            ("featscope mixed", "mixed", "auto", None, False),
            ("featscope bf16 approx", "bf16", "auto", None, True))


def sharpen(model: torch.nn.Module, x: torch.Tensor, spread: float = 4.0) -> int:
    """Scale the classifier so the logits of ``x`` have standard deviation ``spread``; returns the top class."""
    with torch.no_grad():
        logits = model(x)
        factor = spread / float(logits.std())
        model.fc.weight.mul_(factor)
        model.fc.bias.mul_(factor)
        return int(model(x).argmax())


def damp_residuals(model: torch.nn.Module, scale: float) -> None:
    """Scale every bottleneck's last BN (weight and bias) by ``scale``: residual branches damped as SkipInit /
    Fixup initialise them. A random BN ResNet is chaotic (its output swings with sub-grey-level input noise,
    printed below as "input noise sensitivity"); damping its branches gives a net as stable as a trained one
    is expected to be, on which rounding errors (bf16, summation order) are not amplified ~100x."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torchvision.models.resnet.Bottleneck):
                m.bn3.weight.mul_(scale)
                m.bn3.bias.mul_(scale)


def naive(model: torch.nn.Module, x: torch.Tensor, target: int, tops: list[tuple[int, int]], size: int,
          noise: float = 0.0, std: tuple[float, ...] = PRE.std) -> np.ndarray:
    """One full forward pass per position; ``noise``: add uniform input noise of +-noise grey levels."""
    out = []
    g = torch.Generator().manual_seed(1)
    std = torch.tensor(std, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    with torch.no_grad():
        for y, z in tops:
            m = x.clone()
            m[:, :, y:y + size, z:z + size] = 0.0
            if noise:
                m += (torch.rand(m.shape, generator=g) * 2 - 1).to(m.device) * noise / 255 / std
            out.append(float(torch.softmax(model(m), 1)[0, target]))
    return np.array(out)


def captum(model: torch.nn.Module, x: torch.Tensor, target: int, size: int, stride: int, ppe: int) -> np.ndarray:
    from captum.attr import Occlusion

    occ = Occlusion(lambda inp: torch.softmax(model(inp), 1))
    with torch.no_grad(), _keep_freed_memory():  # the allocator setting featscope runs under (fair to Captum)
        return occ.attribute(x, sliding_window_shapes=(3, size, size), strides=(3, stride, stride), target=target,
                             baselines=0.0, perturbations_per_eval=ppe)[0, 0].cpu().numpy()


def implied_attribution(probs: np.ndarray, unmasked: float, tops: np.ndarray, size: int, n: int) -> np.ndarray:
    total, count = np.zeros((n, n)), np.zeros((n, n))
    for i, y in enumerate(tops):
        for j, z in enumerate(tops):
            total[y:y + size, z:z + size] += unmasked - probs[i, j]
            count[y:y + size, z:z + size] += 1
    return total / np.maximum(count, 1)


def timed(fn):
    t, c = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - t, time.process_time() - c


def scenes_accuracy(model: torch.nn.Module, weights: Path, px: int, per_class: int, size: int, stride: int,
                    batch_size: int, dev: torch.device) -> None:
    """bf16 against fp32 exact on every probe scene (single, several, small) of ``per_class`` per class: one row
    per scene with the target's unmasked p, the map's range, max |dp| over every position and the sensitivity
    of p to +-0.5 grey level of input noise (8 positions), then the worst of each column."""
    from featscope.datasets.study import study_datasets

    pre = Preprocess(resize=px, crop=px)
    model = model.to(dev)
    load0 = os.getloadavg()
    print(f"{os.cpu_count()} CPUs, torch {torch.__version__}, {torch.get_num_threads()} threads, device {dev}; "
          f"load average at start {load0[0]:.2f}; weights {weights}; mask {size} px, stride {stride}")
    rows = []
    with tempfile.TemporaryDirectory(prefix="featscope-bench-") as tmp:
        sets = study_datasets(Path(tmp) / "study", n_pretrain=1, n_pretrain_val=1, n_target_train=1,
                              n_target_test=1, n_probe=per_class, size=px)
        for part in ("single", "several", "small"):
            for path in sorted(sets.folders[part].rglob("*.png")):
                image = pre.to_uint8(Image.open(path).convert("RGB"))
                x = pre.normalize(image[None])
                with torch.no_grad():
                    target = int(model(x.to(dev)).argmax())
                exact = maskout_map(model, image, target, preprocess=pre, size=size, stride=stride,
                                    precision="fp32", device=dev, batch_size=batch_size)
                bf16 = maskout_map(model, image, target, preprocess=pre, size=size, stride=stride,
                                   precision="bf16", device=dev, batch_size=batch_size)
                mixed = maskout_map(model, image, target, preprocess=pre, size=size, stride=stride,
                                    precision="mixed", device=dev, batch_size=batch_size)
                rng = np.random.default_rng(0)
                cells = rng.choice(exact.probs.size, min(8, exact.probs.size), replace=False)
                tops = [(int(exact.tops_y[c // len(exact.tops_x)]), int(exact.tops_x[c % len(exact.tops_x)]))
                        for c in cells]
                ref = naive(model, x.to(dev), target, tops, size)
                noisy = naive(model, x.to(dev), target, tops, size, noise=0.5, std=pre.std)
                row = (f"{part}/{path.parent.name}/{path.name}", exact.unmasked, float(exact.probs.min()),
                       float(exact.probs.max()), float(np.abs(bf16.probs - exact.probs).max()),
                       float(np.abs(noisy - ref).max()), float(np.abs(mixed.probs - exact.probs).max()),
                       exact.seconds, bf16.seconds, mixed.seconds)
                rows.append(row)
                print(f"  {row[0]:40s} p {row[1]:.3f}  map {row[2]:.3f}..{row[3]:.3f}  max |dp| bf16 {row[4]:.4f} "
                      f"mixed {row[6]:.4f}  noise {row[5]:.4f}  s fp32/bf16/mixed {row[7]:.1f}/{row[8]:.1f}/{row[9]:.1f}",
                      flush=True)
    if not rows:
        raise SystemExit("no probe scenes were generated; pass --scenes-accuracy N with N >= 1")
    print(f"engine (mixed): {mixed.engine}")
    for part in ("single", "several", "small"):
        sub = [r for r in rows if r[0].startswith(part + "/")]
        print(f"{part}: {len(sub)} scenes, max |dp| to fp32 exact: bf16 worst {max(r[4] for r in sub):.4f} median "
              f"{float(np.median([r[4] for r in sub])):.4f}, mixed worst {max(r[6] for r in sub):.4f} median "
              f"{float(np.median([r[6] for r in sub])):.4f}; noise worst {max(r[5] for r in sub):.4f}")
    for name, col in (("bf16", 4), ("mixed", 6)):
        worst = max(rows, key=lambda r: r[col])
        print(f"all {len(rows)} scenes: {name} vs fp32 exact max |dp| = {worst[col]:.4f} ({worst[0]}), "
              f"{sum(r[col] <= 0.02 for r in rows)}/{len(rows)} scenes <= 0.02; target <= 0.02 "
              f"{'met' if worst[col] <= 0.02 else 'missed'}")
    print("seconds per map, summed over the scenes: " + ", ".join(
        f"{name} {sum(r[col] for r in rows):.1f}" for name, col in (("fp32", 7), ("bf16", 8), ("mixed", 9))))
    print(f"load average at end {os.getloadavg()[0]:.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cpu", help="cpu or cuda (both sides run there)")
    ap.add_argument("--size", type=int, default=60)
    ap.add_argument("--stride", type=int, default=8)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--repeat", type=int, default=2, help="rounds; each side's best round is reported")
    ap.add_argument("--ppe", type=int, nargs="+", default=[16, 64, 256], help="Captum perturbations_per_eval to try")
    ap.add_argument("--approx-margin", type=int, default=2,
                    help="approx_margin of the 'bf16 approx' variant (cells kept around the mask at every layer)")
    ap.add_argument("--naive-positions", default="8", help="positions the naive loop checks (corners included), or 'all'")
    ap.add_argument("--residual-scale", type=float, default=1.0,
                    help="damp the random net's residual branches by this factor (e.g. 0.5) for a stand-in that is "
                         "not chaotic; 1 (default) leaves the random init as it is")
    ap.add_argument("--weights", type=Path, default=None,
                    help="a trained torchvision ResNet-50 state dict instead of random init; the bf16 target "
                         "(max |dp| <= 0.02) is meant for trained weights: bf16 rounding alone moves this random "
                         "net's features by ~0.3%% (bench_extract.py), which a logit spread of 4 turns into ~0.15")
    ap.add_argument("--study-scene", type=int, default=None, metavar="PX",
                    help="with trained weights: mask out a single-object scene of the study's generator (the "
                         "network's own distribution) at PX pixels, the size train_resnet50.py trained at; of 12 such "
                         "scenes the one whose top-class probability is nearest 0.7, so masking can move it. Default: "
                         "a generated 300-500 px image at 224 px, where a net trained on 64-px scenes may sit at p = 1 "
                         "everywhere and |dp| would say nothing")
    ap.add_argument("--scenes-accuracy", type=int, default=None, metavar="N",
                    help="with --study-scene: skip the timings and compare bf16 and mixed with fp32 exact on N probe scenes per "
                         "class of each of the single-object, several-instance and small-object sets (every "
                         "position of each), with the input-noise sensitivity of each scene; prints one row per scene")
    args = ap.parse_args()
    if args.weights is None and TRAINED.exists():  # made by benchmarks/train_resnet50.py
        args.weights = TRAINED
    dev = torch.device(args.device)
    load0 = os.getloadavg()

    pre = PRE if args.study_scene is None else Preprocess(resize=args.study_scene, crop=args.study_scene)
    if args.study_scene is not None and args.weights is None:
        ap.error("--study-scene needs trained weights (run benchmarks/train_resnet50.py, or pass --weights)")
    if args.weights is not None:
        state = torch.load(args.weights, map_location="cpu", weights_only=True)
        model = torchvision.models.resnet50(weights=None, num_classes=state["fc.weight"].shape[0])
        model.load_state_dict(state)
        model.eval()
    if args.scenes_accuracy is not None:
        if args.study_scene is None:
            ap.error("--scenes-accuracy needs --study-scene PX")
        if args.scenes_accuracy < 1:
            ap.error(f"--scenes-accuracy takes a number of scenes per class >= 1, got {args.scenes_accuracy}")
        scenes_accuracy(model, args.weights, args.study_scene, args.scenes_accuracy, args.size, args.stride,
                        args.batch_size, dev)
        return
    with tempfile.TemporaryDirectory(prefix="featscope-bench-") as tmp:
        if args.study_scene is not None:
            from featscope.datasets.study import study_datasets

            sets = study_datasets(Path(tmp) / "study", n_pretrain=1, n_pretrain_val=1, n_target_train=1,
                                  n_target_test=1, n_probe=2, size=args.study_scene)
            paths = sorted(sets.folders["single"].rglob("*.png"))
            images = [pre.to_uint8(Image.open(q).convert("RGB")) for q in paths]
            with torch.no_grad():
                probs = torch.softmax(model(torch.cat([pre.normalize(im[None]) for im in images])), 1)
            top = probs.max(1).values
            pick = int((top - 0.7).abs().argmin())
            image, scene = images[pick], f"{paths[pick].parent.name}/{paths[pick].name}"
            print(f"study scenes at {args.study_scene} px: top-class p of the 12 single-object scenes "
                  f"{', '.join(f'{v:.3f}' for v in top.tolist())}; masking {scene}")
        else:
            paths = make_images(Path(tmp), 65)
            image = pre.to_uint8(Image.open(paths[0]).convert("RGB"))
            if args.weights is None:
                model = make_model(paths[1:])
    x = pre.normalize(image[None])
    if args.weights is not None:
        with torch.no_grad():
            target = int(model(x).argmax())
        weights_note = f"weights: {args.weights}; target = top class {target}"
    else:
        if args.residual_scale != 1.0:
            damp_residuals(model, args.residual_scale)
        target = sharpen(model, x)
        weights_note = ("weights: random init, BN recalibrated on generated images, "
                        + (f"residual branches damped x{args.residual_scale}, " if args.residual_scale != 1.0 else "")
                        + f"classifier scaled to logit std 4; target = top class {target}")
    model = model.to(dev)
    x = x.to(dev)
    n, size, stride = x.shape[2], args.size, args.stride
    print(f"{os.cpu_count()} CPUs, torch {torch.__version__}, {torch.get_num_threads()} threads, device {dev}; "
          f"load average at start {load0[0]:.2f} (the machine may be shared: best of {args.repeat} rounds)")
    print(weights_note)

    def ours(precision: str, reuse: bool | str = "auto", channels_last: bool | None = None, approx: bool = False):
        return maskout_map(model, image, target, preprocess=pre, size=size, stride=stride, precision=precision,
                           reuse=reuse, channels_last=channels_last, device=dev, batch_size=args.batch_size,
                           approx_margin=args.approx_margin if approx else None)

    best: dict[str, tuple[float, float]] = {}
    results: dict[str, object] = {}
    ppes = list(args.ppe)
    for round_ in range(args.repeat):
        times = {}
        for ppe in ppes:
            key = f"captum ppe={ppe}"
            results[key], *spent = timed(lambda: captum(model, x, target, size, stride, ppe))
            times[key] = tuple(spent)
            print(f"  {key}: {spent[0]:.1f}s", flush=True)
        for name, precision, reuse, cl, approx in VARIANTS:
            results[name], *spent = timed(lambda: ours(precision, reuse, cl, approx))
            times[name] = tuple(spent)
            print(f"  {name}: {spent[0]:.1f}s", flush=True)
        print(f"round {round_ + 1}: " + ", ".join(f"{k} {w:.1f}s (cpu {c:.1f}s)" for k, (w, c) in times.items()),
              flush=True)
        best = {k: min(v, best.get(k, (np.inf, np.inf))) for k, v in times.items()}
        if round_ == 0 and len(ppes) > 1:  # later rounds only repeat Captum's best setting
            ppes = [min(ppes, key=lambda p: times[f"captum ppe={p}"][0])]
            best = {k: v for k, v in best.items() if not k.startswith("captum") or k == f"captum ppe={ppes[0]}"}

    exact, bf16, mixed = results["featscope fp32 exact"], results["featscope bf16"], results["featscope mixed"]
    cap_name = f"captum ppe={ppes[0]}"
    cap_s = best[cap_name][0]
    captum_side = -(-(n - size) // stride) + 1
    print(f"positions: featscope {exact.probs.size} ({len(exact.tops_y)}x{len(exact.tops_x)}, last at {n - size}), "
          f"Captum {captum_side ** 2} (last at {(captum_side - 1) * stride}, clipped)")
    print(f"engine: {exact.engine}")
    print(f"engine (mixed): {mixed.engine}")
    print(f"engine (bf16 approx): {results['featscope bf16 approx'].engine}")
    print(f"{cap_name:26s} {cap_s:7.2f} s")
    for name, *_ in VARIANTS:
        print(f"{name:26s} {best[name][0]:7.2f} s   ratio {cap_s / best[name][0]:5.2f}x faster than Captum")

    rng = np.random.default_rng(0)
    picks = {(0, 0), (len(exact.tops_y) - 1, len(exact.tops_x) - 1)}
    wanted = exact.probs.size if args.naive_positions == "all" else min(int(args.naive_positions), exact.probs.size)
    while len(picks) < wanted:
        picks.add(tuple(int(v) for v in rng.integers(0, len(exact.tops_y), 2)))
    picks = sorted(picks)
    pick_tops = [(int(exact.tops_y[i]), int(exact.tops_x[j])) for i, j in picks]
    ref = naive(model, x, target, pick_tops, size)
    noisy = naive(model, x, target, pick_tops[:8], size, noise=0.5)
    print(f"unmasked p = {exact.unmasked:.4f}; map range {exact.probs.min():.4f} .. {exact.probs.max():.4f}")
    print(f"fp32 exact vs fp32 naive loop ({len(picks)} positions incl. corners): max |dp| = "
          f"{np.abs(exact.probs[tuple(np.array(picks).T)] - ref).max():.2e}")
    print(f"input noise sensitivity: +-0.5 grey level of uniform noise on the input moves p by up to "
          f"{np.abs(noisy - ref[:8]).max():.4f} ({min(8, len(picks))} positions; bf16 rounds the input by about as much)")
    print(f"fp32 no reuse vs fp32 exact (all positions): max |dp| = "
          f"{np.abs(results['featscope fp32 no reuse'].probs - exact.probs).max():.2e}")
    cl = results["featscope fp32 channels_last"]
    print(f"fp32 channels_last vs fp32 naive loop ({len(picks)} positions): max |dp| = "
          f"{np.abs(cl.probs[tuple(np.array(picks).T)] - ref).max():.2e}")
    print(f"bf16 vs fp32 exact (= naive, all {exact.probs.size} positions): max |dp| = "
          f"{np.abs(bf16.probs - exact.probs).max():.4f}")
    print(f"mixed vs fp32 exact (all positions): max |dp| = {np.abs(mixed.probs - exact.probs).max():.4f}")
    print(f"bf16 approx (margin {args.approx_margin}) vs fp32 exact (all positions): max |dp| = "
          f"{np.abs(results['featscope bf16 approx'].probs - exact.probs).max():.4f}")
    k = len(range(0, n - size + 1, stride))
    implied = implied_attribution(exact.probs[:k, :k], exact.unmasked, exact.tops_y[:k], size, n)
    print(f"Captum attribution vs the one implied by fp32 exact ({k}x{k} shared positions, pixels < {k * stride}): "
          f"max |d| = {np.abs(results[cap_name] - implied)[:k * stride, :k * stride].max():.2e}")
    print(f"load average at end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
