"""Train a ResNet-50 classifier with featscope on the study's synthetic scenes (a short schedule) and export
it as a plain torchvision state dict, for the accuracy checks of ``bench_extract.py`` (bf16 extraction
cosine to fp32) and ``bench_maskout.py`` (bf16 mask-out |dp| to fp32), which pick it up when present.

The file is kept out of the repository (``benchmarks/.weights/`` is ignored).

    PYTHONPATH=src python benchmarks/train_resnet50.py [--epochs 3] [--size 96] [--scenes 600] [--lr 0.001]
        [--crop-scale 1.0]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

DEFAULT_OUT = Path(__file__).resolve().parent / ".weights" / "resnet50-featscope.pth"


def main() -> None:
    from featscope.config import Settings
    from featscope.workspace import Workspace

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--size", type=int, default=96)
    ap.add_argument("--scenes", type=int, default=600)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--lr", type=float, default=0.001, help="AdamW's peak learning rate (cosine schedule)")
    ap.add_argument("--crop-scale", type=float, default=1.0,
                    help="random-resized crop's smallest area fraction (1.0: flips only)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="featscope-r50-") as tmp:
        ws = Workspace(Settings(data_dir=Path(tmp) / "data"))
        ws.study_datasets(Path(tmp) / "sets", n_pretrain=args.scenes, n_pretrain_val=60, n_target_train=1,
                          n_target_test=1, n_probe=1, size=args.size)
        t = time.perf_counter()
        run = ws.train("cls", "study-pretrain", val_dataset="study-pretrain-val", arch="resnet50",
                       image_size=args.size, epochs=args.epochs, batch_size=32, lr=args.lr, crop_scale=args.crop_scale,
                       warmup_iters=20, threads=args.threads, on_message=print)  # the preset's AdamW
        ev = run.result["eval"]
        print(f"trained in {time.perf_counter() - t:.0f} s; held-out top-1 {ev['top1']:.3f} on {ev['n']} scenes")
        path = ws.export_run(run.id, args.out, format="torchvision")
    print(f"wrote {path} (a torchvision resnet50 state dict, fc of {len(run.classes)} classes)")


if __name__ == "__main__":
    main()
