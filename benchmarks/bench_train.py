"""featscope's training loop against a plain loop written as torchvision's detection reference does it.

Same model (the ``cpu-demo`` Faster R-CNN with the study's head, or ``--task cls``), same images, batch and
precision. The plain loop is ``references/detection/engine.py``'s ``train_one_epoch``: float images from
the loader, ``model(images, targets)``, summed loss, ``.item()`` and a finiteness check, ``zero_grad``,
backward, ``step``, a warmup ``LinearLR``. featscope's run adds what makes it resumable: atomic
checkpoints (``--checkpoint-every``), a JSON-lines metrics row per iteration, progress callbacks,
cancel checks. Both are timed per iteration after ``--warmup`` iterations, interleaved ``--repeat``
times in ABBA order; the ratio featscope / plain should be >= 1.0 (within noise).

    PYTHONPATH=src python benchmarks/bench_train.py [--iterations 40] [--batch-size 8] [--threads 1]
"""

from __future__ import annotations

import argparse
import math
import statistics
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset


def _study(root: Path, size: int):
    from featscope.datasets import read_dataset
    from featscope.datasets.study import study_datasets
    from featscope.training.data import Sample

    sets = study_datasets(root / "sets", n_pretrain=160, n_pretrain_val=1, n_target_train=1, n_target_test=1,
                          n_probe=1, size=size)
    scan = read_dataset(sets.coco["pretrain"])
    samples = [Sample(scan.image_path(r), r.label, tuple((b.label, b.x0, b.y0, b.x1, b.y1) for b in r.boxes))
               for r in scan.images]
    return scan.classes, samples


class _ReferenceData(Dataset):
    """What the reference's dataset yields: float images in [0, 1] (PILToTensor + ToDtype), targets, a flip."""

    def __init__(self, inner) -> None:
        self.inner = inner

    def __len__(self) -> int:
        return len(self.inner)

    def __getitem__(self, i: int):
        image, target = self.inner[(i, 0)]
        return image.float() / 255.0, target


def plain_loop(model, data, cfg, iterations: int, num_workers: int) -> list[float]:
    """torchvision's train_one_epoch, timed per iteration."""
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    # the same learning rate as featscope's side (warmup_iters=0): the reference's 1/1000 warmup would keep the
    # weights at their start, and a detector that does not move proposes other boxes (NMS, RoI sampling costs differ)
    warmup = torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=1.0, total_iters=1)
    sampler = torch.utils.data.RandomSampler(data, generator=torch.Generator().manual_seed(0))
    loader = DataLoader(data, batch_size=cfg.batch_size, sampler=sampler, num_workers=num_workers,
                        collate_fn=lambda b: tuple(zip(*b)), drop_last=True)
    model.train()
    stamps = [time.perf_counter()]
    while len(stamps) <= iterations:
        for images, targets in loader:
            images = [im for im in images]
            targets = [dict(t) for t in targets]
            loss_dict = model(images, targets)
            losses = sum(loss for loss in loss_dict.values())
            loss_value = losses.item()
            if not math.isfinite(loss_value):
                raise SystemExit(f"Loss is {loss_value}, stopping training")
            optimizer.zero_grad()
            losses.backward()
            optimizer.step()
            warmup.step()
            stamps.append(time.perf_counter())
            if len(stamps) > iterations:
                break
    return [b - a for a, b in zip(stamps, stamps[1:])]


def featscope_loop(task, cfg, iterations: int, run_dir: Path) -> list[float]:
    from featscope.training.loop import fit, read_metrics

    stamps = [time.time()]
    calls = {"n": 0}

    def progress(p) -> None:
        stamps.append(time.time())

    def check() -> None:
        calls["n"] += 1
        if calls["n"] > iterations:
            raise KeyboardInterrupt

    try:
        fit(task, cfg.loop(), run_dir, identity="bench", progress=progress, check=check)
    except KeyboardInterrupt:
        pass
    assert len(read_metrics(run_dir)) >= iterations  # the metrics log was written
    return [b - a for a, b in zip(stamps, stamps[1:])][:iterations]


def main() -> None:
    from featscope.training.models import initial_trunk
    from featscope.training.presets import resolve_config
    from featscope.training.tasks import make_task

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iterations", type=int, default=40)
    ap.add_argument("--warmup", type=int, default=8, help="iterations left out of the timing (allocator warm-up)")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--checkpoint-every", type=int, default=10)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        classes, samples = _study(Path(tmp), args.size)
        cfg = resolve_config("det", "cpu-demo", {"batch_size": args.batch_size, "epochs": 100, "warmup_iters": 0,
                                                 "num_workers": args.workers, "log_every": 1, "image_size": args.size,
                                                 "max_size": args.size, "checkpoint_every": args.checkpoint_every,
                                                 "precision": "fp32", "threads": args.threads,
                                                 "optimizer": "sgd"})  # the reference loop's optimiser, on both sides
        trunk = initial_trunk(cfg.arch, 0)
        rates: dict[str, list[float]] = {"featscope": [], "plain": []}
        medians: dict[str, list[float]] = {"featscope": [], "plain": []}
        for rep in range(args.repeat):
            # ABBA order: whichever side runs second in a repeat runs first in the next, so a drift of the
            # machine (allocator, caches, other load) does not favour one side
            for side in (("featscope", "plain") if rep % 2 == 0 else ("plain", "featscope")):
                task = make_task("det", cfg, classes, samples, trunk, "seed 0")
                if side == "featscope":
                    steps = featscope_loop(task, cfg, args.iterations, Path(tmp) / f"run{rep}")
                else:
                    torch.manual_seed(0)
                    model = task.build_model()
                    steps = plain_loop(model, _ReferenceData(task.train_data()), cfg, args.iterations, args.workers)
                timed = steps[args.warmup:]
                rate = args.batch_size * len(timed) / sum(timed)
                rates[side].append(rate)
                medians[side].append(statistics.median(timed))
                print(f"repeat {rep + 1} {side:9s}: {rate:6.2f} img/s (median step {statistics.median(timed):.3f} s)")
        f, p = statistics.median(rates["featscope"]), statistics.median(rates["plain"])
        print(f"\nFaster R-CNN (study head, {cfg.arch}, {args.size} px, batch {args.batch_size}, fp32, "
              f"{torch.get_num_threads()} threads), checkpoint every {args.checkpoint_every} iterations:")
        print(f"featscope {f:.2f} img/s   plain torchvision-reference loop {p:.2f} img/s   ratio {f / p:.3f}")
        mf, mp = statistics.median(medians["featscope"]), statistics.median(medians["plain"])
        print(f"median step (checkpoint steps aside): featscope {mf:.3f} s, plain {mp:.3f} s, speed ratio {mp / mf:.3f}")


if __name__ == "__main__":
    main()
