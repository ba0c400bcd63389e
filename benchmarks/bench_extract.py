"""featscope ``extract`` against the plain torchvision loop most scripts use, side by side.

ResNet-50 (random init, BN statistics recalibrated on the generated images so activations look like
a trained net's), 224x224 crops of a few hundred generated JPEG/PNG images of 300-500 px. The plain
loop: PIL open -> Resize(256)/CenterCrop(224)/ToTensor/Normalize -> stack -> model up to avgpool
under ``torch.no_grad``, fp32, decoding in the main process. Both sides time the whole pass
(decode included) and use the same model object.

    .venv/bin/python benchmarks/bench_extract.py [--images 320] [--batch-size 32] [--workers 1] [--repeat 2]
"""

from __future__ import annotations

import argparse
import copy
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torchvision
from PIL import Image, ImageDraw, ImageFilter
from torch import nn
from torchvision import transforms

from featscope.extractors.extract import extract
from featscope.extractors.types import Backbone, Preprocess

# A featscope-trained ResNet-50 (benchmarks/train_resnet50.py), used by default when present.
TRAINED = Path(__file__).resolve().parent / ".weights" / "resnet50-featscope.pth"


def make_images(root: Path, n: int, seed: int = 0) -> list[Path]:
    """``n`` varied images (gradients, shapes, blur, noise), 300-500 px a side, 3/4 JPEG, 1/4 PNG."""
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        w, h = (int(v) for v in rng.integers(300, 501, size=2))
        yy, xx = np.mgrid[0:h, 0:w] / max(w, h)
        base = np.stack([np.sin(xx * rng.uniform(2, 12) + rng.uniform(0, 6)) * 60 + rng.uniform(60, 190)
                         + np.cos(yy * rng.uniform(2, 12)) * 40 for _ in range(3)], axis=-1)
        img = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8))
        draw = ImageDraw.Draw(img)
        for _ in range(int(rng.integers(3, 9))):
            x0, y0 = int(rng.integers(0, w - 40)), int(rng.integers(0, h - 40))
            box = (x0, y0, x0 + int(rng.integers(20, w // 2)), y0 + int(rng.integers(20, h // 2)))
            colour = tuple(int(c) for c in rng.integers(0, 256, 3))
            (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=colour)
        img = img.filter(ImageFilter.GaussianBlur(float(rng.uniform(0, 1.5))))
        noisy = np.asarray(img, dtype=np.int16) + rng.integers(-12, 13, size=(h, w, 3))
        img = Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))
        path = root / (f"{i:04d}.png" if i % 4 == 3 else f"{i:04d}.jpg")
        img.save(path, quality=90) if path.suffix == ".jpg" else img.save(path)
        paths.append(path)
    return paths


PLAIN_TRANSFORM = transforms.Compose([
    transforms.Resize(256), transforms.CenterCrop(224), transforms.ToTensor(),
    transforms.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
])


def make_model(paths: list[Path], batches: int = 4, batch_size: int = 16) -> nn.Module:
    """ResNet-50, random weights, BN running stats re-estimated on real (generated) images."""
    torch.manual_seed(0)
    model = torchvision.models.resnet50(weights=None)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the calibration batches
    model.train()
    with torch.no_grad():
        for b in range(batches):
            chunk = paths[b * batch_size:(b + 1) * batch_size]
            model(torch.stack([PLAIN_TRANSFORM(Image.open(p).convert("RGB")) for p in chunk]))
    return model.eval()


def plain_loop(model: nn.Module, paths: list[Path], batch_size: int) -> np.ndarray:
    """What a script without featscope does: decode serially, run the body up to avgpool in fp32."""
    body = nn.Sequential(*list(model.children())[:-1]).eval()
    out = []
    with torch.no_grad():
        for lo in range(0, len(paths), batch_size):
            x = torch.stack([PLAIN_TRANSFORM(Image.open(p).convert("RGB")) for p in paths[lo:lo + batch_size]])
            out.append(body(x).flatten(1).numpy())
    return np.concatenate(out)


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def time_sides(backbone: Backbone, paths: list[Path], root: Path, args: argparse.Namespace
               ) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """Images/s of each side (best of ``--repeat`` interleaved rounds: the machine may be shared)."""
    best: dict[str, float] = {}
    features: dict[str, np.ndarray] = {}
    for round_ in range(args.repeat):
        t = time.perf_counter()
        features["plain"] = plain_loop(backbone.model, paths, args.batch_size)
        rates = {"plain": len(paths) / (time.perf_counter() - t)}
        for precision in ("fp32", "bf16"):
            t = time.perf_counter()
            res = extract(backbone, paths, taps=("layer4",), poolings=("avg",),
                          work_dir=root / f"{precision}-{round_}", device="cpu", precision=precision,
                          batch_size=args.batch_size, num_workers=args.workers, threads=args.threads,
                          shard_size=10_000)
            rates[precision] = len(paths) / (time.perf_counter() - t)
            assert not res.failures, res.failures
            features[precision] = res.features[("layer4", "avg")]
        print(f"round {round_ + 1}: " + ", ".join(f"{k} {v:.2f} img/s" for k, v in rates.items()))
        best = {k: max(v, best.get(k, 0.0)) for k, v in rates.items()}
    return best, features


def print_accuracy(backbone: Backbone, paths: list[Path], features: dict[str, np.ndarray]) -> None:
    """bf16 vs fp32, featscope vs the plain loop, and featscope vs the plain model on the same crops
    (which separates numerics from preprocessing differences)."""
    pre, model = backbone.preprocess, backbone.model
    body = nn.Sequential(*list(model.children())[:-1]).eval()
    with torch.no_grad():
        same_crops = np.concatenate([
            body(pre.normalize(torch.stack([pre.to_uint8(Image.open(p).convert("RGB")) for p in paths[lo:lo + 32]])))
            .flatten(1).numpy() for lo in range(0, len(paths), 32)])
    fp32, bf16, plain = features["fp32"], features["bf16"], features["plain"]
    print(f"bf16 vs fp32 featscope: mean cosine {cosine(fp32, bf16).mean():.6f} (min {cosine(fp32, bf16).min():.6f})")
    print(f"fp32 featscope vs plain loop: max abs diff {np.abs(fp32 - plain).max():.3g} "
          f"(feature scale {np.abs(plain).max():.3g}), mean cosine {cosine(fp32, plain).mean():.6f}")
    print(f"fp32 featscope vs plain model on featscope's crops: max abs diff {np.abs(fp32 - same_crops).max():.3g}")
    print_bf16_floor(body, paths[:64], fp32[:64])


def print_bf16_floor(body: nn.Module, paths: list[Path], fp32: np.ndarray) -> None:
    """How far bf16 rounding alone moves this network's features, whatever the engine does: the
    fp32 network with only its input, or only its weights, rounded to bf16."""
    pre = Preprocess(resize=256, crop=224)
    x = pre.normalize(torch.stack([pre.to_uint8(Image.open(p).convert("RGB")) for p in paths]))
    rounded = copy.deepcopy(body)
    with torch.no_grad():
        for param in rounded.parameters():
            param.copy_(param.to(torch.bfloat16).float())
        only_input = body(x.to(torch.bfloat16).float()).flatten(1).numpy()
        only_weights = rounded(x).flatten(1).numpy()
    print(f"bf16 floor of this network ({len(paths)} images, fp32 maths): input rounded to bf16 -> mean cosine "
          f"{cosine(fp32, only_input).mean():.6f}; weights rounded to bf16 -> {cosine(fp32, only_weights).mean():.6f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=320)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--workers", type=int, default=1, help="featscope decode workers (plain loop: 0)")
    ap.add_argument("--threads", type=int, default=None, help="featscope intra-op threads (default: torch's)")
    ap.add_argument("--repeat", type=int, default=2, help="rounds; each side's best round is reported")
    ap.add_argument("--weights", type=Path, default=None,
                    help="a trained torchvision ResNet-50 state dict (e.g. resnet50-11ad3fa6.pth) instead of random "
                         "init; the bf16 accuracy target is meant for trained weights")
    args = ap.parse_args()
    if args.weights is None and TRAINED.exists():  # made by benchmarks/train_resnet50.py
        args.weights = TRAINED

    with tempfile.TemporaryDirectory(prefix="featscope-bench-") as tmp:
        root = Path(tmp)
        (root / "images").mkdir()
        t = time.perf_counter()
        paths = make_images(root / "images", args.images)
        print(f"generated {len(paths)} images in {time.perf_counter() - t:.1f}s; "
              f"{os.cpu_count()} CPUs, torch {torch.__version__}, {torch.get_num_threads()} threads")
        if args.weights is not None:
            state = torch.load(args.weights, map_location="cpu", weights_only=True)
            model = torchvision.models.resnet50(weights=None, num_classes=state["fc.weight"].shape[0])
            model.load_state_dict(state)
            model.eval()
            print(f"weights: {args.weights}")
        else:
            model = make_model(paths)
            print("weights: random init, BN statistics recalibrated on the generated images")
        backbone = Backbone(spec="torchvision:resnet50", source="torchvision", arch="resnet50", model=model,
                            preprocess=Preprocess(resize=256, crop=224), fingerprint="bench",
                            taps={"layer4": "layer4"}, classifier=model.fc)
        best, features = time_sides(backbone, paths, root, args)
        print(f"plain loop fp32          {best['plain']:7.2f} img/s")
        for precision in ("fp32", "bf16"):
            print(f"featscope {precision}           {best[precision]:7.2f} img/s   "
                  f"ratio {best[precision] / best['plain']:5.2f}x")
        print_accuracy(backbone, paths, features)


if __name__ == "__main__":
    main()
