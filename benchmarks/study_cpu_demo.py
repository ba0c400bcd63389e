"""The study on synthetic data with the ``cpu-demo`` preset, end to end, with its acceptance figures.

Generates the study sets, pre-trains a classifier and a detector from the same seeded ResNet-18 on the
same scenes, then measures what the study measures:

- pre-training time of each run (target: <= 5 minutes each on a 2-core CPU) and the machine's load;
- the detector's mAP@0.5 on held-out pre-training scenes (target >= 0.5);
- linear probes (avg-pooled Conv5) of both backbones on single objects (classifier target >= 80%),
  several instances and small objects (the study: classification features ahead, most on the last two);
- detection fine-tuning from both backbones on the target set: AP at IoU 0.1..0.9 side by side (Fig. 1);
- Table 5: probes on the detection run's layer4 / ConvProj (none, grid4, grid2, avg) / FC1 / FC2.

    PYTHONPATH=src python benchmarks/study_cpu_demo.py --out /tmp/featscope-study [--set lr=0.05 ...]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from featscope.config import Settings
from featscope.workspace import Workspace


def _load() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.1f} (1 min), {five:.1f} (5 min) on {os.cpu_count()} cores"


def _sets(items: list[str] | None) -> dict[str, str]:
    return dict(s.split("=", 1) for s in items or [])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("/tmp/featscope-study"))
    ap.add_argument("--n-pretrain", type=int, default=4800)
    ap.add_argument("--n-probe", type=int, default=100, help="images per class in each probe set")
    ap.add_argument("--cls-set", action="append", help="KEY=VALUE over the cls preset")
    ap.add_argument("--det-set", action="append", help="KEY=VALUE over the det preset")
    ap.add_argument("--ft-set", action="append", help="KEY=VALUE over the finetune-det preset")
    ap.add_argument("--det-init", choices=("random", "cls"), default="cls",
                    help="the detector's start: the same seeded random trunk as the classifier (the study's Table 7), "
                         "or the trained classifier (the study's detectors start from its classification network)")
    ap.add_argument("--skip-finetune", action="store_true")
    args = ap.parse_args()
    ws = Workspace(Settings(data_dir=args.out / "data"))
    t = time.perf_counter()
    ws.study_datasets(args.out / "images", n_pretrain=args.n_pretrain, n_probe=args.n_probe)
    print(f"study sets ready in {time.perf_counter() - t:.0f} s; {_load()}")

    report: dict = {"load_before": _load(), "det_init": args.det_init}
    runs = {}
    for task, extra in (("cls", args.cls_set), ("det", args.det_set)):
        t = time.perf_counter()
        init = runs["cls"].name if task == "det" and args.det_init == "cls" else None
        run = ws.train(task, "study-pretrain", val_dataset="study-pretrain-val", init=init, on_message=print,
                       **_sets(extra))
        seconds = run.result.get("seconds", time.perf_counter() - t)
        runs[task] = run
        ev = run.result["eval"]
        figure = ev["top1"] if task == "cls" else ev["map_50"]
        print(f"{task} pre-training: {seconds:.0f} s ({'cached' if run.cached else 'trained'}), "
              f"{run.result['images_per_second']:.1f} img/s, held-out {'top-1' if task == 'cls' else 'mAP@0.5'} "
              f"{figure:.3f}; {_load()}")
        report[task] = {"seconds": seconds, "held_out": figure, "run": run.id, "load_after": _load()}

    cls_bb, det_bb = runs["cls"].name, runs["det"].name
    probes = {}
    for part in ("single", "several", "small"):
        for bb in (cls_bb, det_bb):
            ws.extract(bb, f"study-{part}", taps=["conv5"], poolings=["avg"])
        rows = ws.probe_table([cls_bb, det_bb], f"study-{part}", taps=["conv5"], poolings=["avg"])
        probes[part] = {r["backbone"]: (r["accuracy"], r["ci_low"], r["ci_high"]) for r in rows}
    print("\nlinear probe, avg-pooled Conv5 (top-1, 95% Wilson interval):")
    print(f"{'test set':10s} {'classification':>24s} {'detection':>24s}")
    for part, row in probes.items():
        c, d = row[cls_bb], row[det_bb]
        print(f"{part:10s} {c[0]:7.3f} [{c[1]:.3f}, {c[2]:.3f}]  {d[0]:7.3f} [{d[1]:.3f}, {d[2]:.3f}]")
    report["probes"] = probes

    ws.extract(det_bb, "study-single", taps=["conv5"], poolings=["avg"])
    ws.extract(det_bb, "study-single", taps=["convproj"], poolings=["none", "grid4", "grid2", "avg"])
    ws.extract(det_bb, "study-single", taps=["fc1", "fc2"], poolings=["avg"])
    table5 = ws.probe_table([det_bb], "study-single")
    print("\nTable 5 (detection run, single objects):")
    for r in table5:
        print(f"  {r['tap']:9s} {r['pooling']:6s} dim {r['dim']:6d}  top-1 {r['accuracy']:.3f} "
              f"[{r['ci_low']:.3f}, {r['ci_high']:.3f}]")
    report["table5"] = [{k: r[k] for k in ("tap", "pooling", "dim", "accuracy", "ci_low", "ci_high")} for r in table5]

    if not args.skip_finetune:
        ft = {}
        for label, bb in (("classification", cls_bb), ("detection", det_bb)):
            run = ws.finetune("det", bb, "study-target-train", test_dataset="study-target-test", on_message=print,
                              **_sets(args.ft_set))
            ft[label] = run.result["eval"]["ap"]
            print(f"fine-tuning from {label} backbone: {run.result['seconds']:.0f} s")
        print("\ndetection fine-tuning on the target set, AP by IoU threshold (Fig. 1):")
        print(f"{'IoU':>5s} {'from cls':>9s} {'from det':>9s} {'det - cls':>10s}")
        for t_ in ft["classification"]:
            a, b = ft["classification"][t_], ft["detection"][t_]
            print(f"{t_:>5s} {a:9.3f} {b:9.3f} {b - a:+10.3f}")
        report["finetune_ap"] = ft
    (args.out / "report.json").write_text(json.dumps(report, indent=1))
    print(f"\nreport: {args.out / 'report.json'}")


if __name__ == "__main__":
    main()
