"""``featscope train cls|det`` and ``featscope finetune det|cls|seg``: training runs, here or as worker jobs.

``--devices N`` starts the same command under ``torchrun --nproc_per_node N`` (DistributedDataParallel:
NCCL on GPUs, gloo on CPU); ``--background`` queues it as a worker job instead of running it here.
"""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any, Optional

import typer
from rich.progress import BarColumn, Progress, TextColumn

from featscope.cli.common import app, emit, err, out, run, say, ws

train_app = typer.Typer(help="Pre-train a backbone for classification or detection (same images, same start).",
                        no_args_is_help=True)
finetune_app = typer.Typer(help="Fine-tune a backbone for detection (AP per IoU), classification (top-1) or "
                                "segmentation (mIoU, trimap).",
                           no_args_is_help=True)
app.add_typer(train_app, name="train")
app.add_typer(finetune_app, name="finetune")

_PRESET = typer.Option("cpu-demo", "--preset", help="cpu-demo (minutes on a CPU) or paper (the study's setup, GPUs).")
_SET = typer.Option(None, "--set", help="Any training parameter as KEY=VALUE (repeatable), e.g. --set lr=0.05 "
                                        "--set lr_steps=5,7; `featscope runs params` lists them.")
_CLASSES = typer.Option(None, "--class", help="Train on these classes only (repeatable; default: all).")


def _knobs(arch, epochs, batch_size, lr, image_size, seed, device, precision, workers, checkpoint_every,
           sets: list[str] | None) -> dict[str, Any]:
    params = {k: v for k, v in dict(arch=arch, epochs=epochs, batch_size=batch_size, lr=lr, image_size=image_size,
                                    seed=seed, device=device, precision=precision, num_workers=workers,
                                    checkpoint_every=checkpoint_every).items() if v is not None}
    for item in sets or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            err.print(f"[red]error:[/red] --set takes KEY=VALUE, got {item!r}")
            raise typer.Exit(2)
        params[key.strip()] = value.strip()
    return params


def _torchrun(devices: int) -> None:
    """Run this very command again under torchrun with ``devices`` processes, then exit with its status."""
    argv, skip = [], False
    for a in sys.argv[1:]:
        if skip:
            skip = False
            continue
        if a == "--devices":
            skip = True
            continue
        if a.startswith("--devices="):
            continue
        argv.append(a)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={devices}",
           "-m", "featscope", *argv]
    say(f"starting {devices} processes: torchrun --nproc_per_node {devices} -m featscope {' '.join(argv)}")
    raise typer.Exit(subprocess.call(cmd, env={**os.environ, "PYTHONUNBUFFERED": "1"}))


def _start(kind: str, call, job_params: dict[str, Any], devices: int, background: bool, as_json: bool) -> None:
    if devices < 1:
        err.print("[red]error:[/red] --devices must be >= 1")
        raise typer.Exit(2)
    if devices > 1 and "WORLD_SIZE" not in os.environ:
        if background:
            err.print("[red]error:[/red] --devices runs here under torchrun; drop --background (a worker job uses "
                      "one process; start more workers to train several runs at once)")
            raise typer.Exit(2)
        _torchrun(devices)
    if background:
        from featscope.worker.jobs import submit

        job = run(submit, ws().ctx, kind, job_params)
        emit([job], ["id", "kind", "state", "message"], as_json, "jobs")
        return
    rank0 = os.environ.get("RANK", "0") == "0"
    progress = Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[line]}"),
                        console=err, transient=True, disable=not rank0)
    bar = progress.add_task("training", total=None, line="starting")

    def update(p) -> None:  # featscope.training.loop.TrainProgress
        progress.update(bar, completed=p.iteration, total=p.iterations, line=p.line())

    from featscope.training.runs import RunCancelled

    try:
        with progress:
            info = run(call, progress=update, on_message=(lambda m: err.print(m, highlight=False)) if rank0 else None)
    except (KeyboardInterrupt, RunCancelled) as e:
        what = "cancelled" if isinstance(e, RunCancelled) else "interrupted"
        err.print(f"{what}: the last checkpoint is kept; run the same command again to continue from it")
        raise typer.Exit(130) from None
    if rank0:
        _print_run(info, as_json)


def _print_run(info, as_json: bool) -> None:
    from featscope.workspace.detection_errors import recounted_run, threshold_words

    info = recounted_run(info)  # Table 3 from detections.json, as `runs show` and the REST API give it
    if as_json:
        emit([info], [], True, "")
        return
    verb = "already trained (cached)" if info.cached else info.state
    out.print(f"run [bold]{info.id}[/bold] {info.name}: {verb}", highlight=False)
    res = info.result or {}
    if res.get("seconds") is not None:
        out.print(f"  {res.get('iterations')} iterations in {res['seconds']:.0f} s "
                  f"({res.get('images_per_second', 0):.1f} img/s, {res.get('device')}, {res.get('precision')})")
    ev = res.get("eval") or {}
    if "top1" in ev:
        out.print(f"  top-1 {ev['top1']:.4f} [95% CI {ev['ci_low']:.4f}, {ev['ci_high']:.4f}] on {ev['n']} images")
    if "ap" in ev:
        out.print("  AP by IoU: " + "  ".join(f"{t}: {v:.3f}" for t, v in ev["ap"].items()))
    missed = ev.get("missed_by_occlusion")
    if missed:
        out.print(f"  missed objects by occlusion ({threshold_words(missed)}): " + "  ".join(
            f"{b['name']}: {b['rate']:.3f} ({b['missed']}/{b['objects']})" for b in missed["bins"]
            if b["rate"] is not None))
    if "miou" in ev:
        out.print(f"  mIoU {ev['miou']:.4f}, pixel accuracy {ev['pixel_accuracy']:.4f} on {ev['n']} images")
    if info.backbone_id:
        out.print(f"  registered as backbone {info.name!r} (run:{info.id}); try `featscope backbone layers {info.name}`")


def _train(task: str, dataset, val_dataset, preset, init, classes, name, restart, params, devices, background,
           as_json) -> None:
    job = {"task": task, "dataset": dataset, "val_dataset": val_dataset, "preset": preset, "init": init,
           "classes": classes or None, "name": name, "restart": restart, "params": params}
    _start("train", lambda **cb: ws().train(task, dataset, preset=preset, init=init, val_dataset=val_dataset,
                                            classes=classes or None, name=name, restart=restart, **cb, **params),
           job, devices, background, as_json)


def _finetune(task: str, backbone, dataset, test_dataset, preset, classes, name, restart, params, devices,
              background, as_json) -> None:
    job = {"task": task, "backbone": backbone, "dataset": dataset, "test_dataset": test_dataset, "preset": preset,
           "classes": classes or None, "name": name, "restart": restart, "params": params}
    _start("finetune", lambda **cb: ws().finetune(task, backbone, dataset, test_dataset=test_dataset, preset=preset,
                                                  classes=classes or None, name=name, restart=restart, **cb, **params),
           job, devices, background, as_json)


def _make_train(task: str, doc: str):
    def command(dataset: str = typer.Option(..., "--dataset", "-d", help="Registered data set to train on."),
                val_dataset: Optional[str] = typer.Option(None, "--val-dataset", help="Held-out data set evaluated at the end."),
                preset: str = _PRESET,
                init: Optional[str] = typer.Option(None, "--init", help="Start from this registered backbone's trunk "
                                                                       "(default: a seeded random trunk)."),
                classes: Optional[list[str]] = _CLASSES,
                holdout: Optional[str] = typer.Option(None, "--holdout", help="Classes to leave out of pre-training, "
                                                      "comma-separated: their images are removed (study Table 2)."),
                name: Optional[str] = typer.Option(None, help="Run name (and registered backbone name)."),
                arch: Optional[str] = typer.Option(None, help="resnet18, resnet34, resnet50 or resnet101."),
                epochs: Optional[int] = typer.Option(None, help="Epochs."),
                batch_size: Optional[int] = typer.Option(None, help="Global batch size (all processes)."),
                lr: Optional[float] = typer.Option(None, help="Peak learning rate."),
                image_size: Optional[int] = typer.Option(None, help="Training crop (cls) or shorter side (det)."),
                seed: Optional[int] = typer.Option(None, help="Seed of the initial trunk, data order and augmentation."),
                device: Optional[str] = typer.Option(None, help="auto, cpu, cuda, cuda:N."),
                precision: Optional[str] = typer.Option(None, help="auto (bf16 on GPUs, fp32 on CPUs), fp32, bf16, fp16."),
                workers: Optional[int] = typer.Option(None, help="Image-decoding worker processes."),
                checkpoint_every: Optional[int] = typer.Option(None, help="Iterations between checkpoints."),
                sets: Optional[list[str]] = _SET,
                restart: bool = typer.Option(False, help="Start over instead of resuming an unfinished run."),
                devices: int = typer.Option(1, help="Processes under torchrun (DistributedDataParallel)."),
                background: bool = typer.Option(False, help="Queue as a worker job (`featscope jobs list`)."),
                as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
        params = _knobs(arch, epochs, batch_size, lr, image_size, seed, device, precision, workers,
                        checkpoint_every, sets)
        if holdout is not None:
            params["holdout_classes"] = holdout
        _train(task, dataset, val_dataset, preset, init, classes, name, restart, params, devices, background, as_json)

    command.__doc__ = doc
    return command


def _make_finetune(task: str, doc: str):
    def command(backbone: str = typer.Option(..., "--backbone", "-b", help="Registered backbone to start from."),
                dataset: str = typer.Option(..., "--dataset", "-d", help="Registered data set to fine-tune on."),
                test_dataset: Optional[str] = typer.Option(None, "--test-dataset", help="Test data set (default: a "
                                                                                        "deterministic split of --dataset)."),
                preset: str = _PRESET, classes: Optional[list[str]] = _CLASSES,
                name: Optional[str] = typer.Option(None, help="Run name."),
                epochs: Optional[int] = typer.Option(None, help="Epochs."),
                batch_size: Optional[int] = typer.Option(None, help="Global batch size (all processes)."),
                lr: Optional[float] = typer.Option(None, help="Peak learning rate."),
                image_size: Optional[int] = typer.Option(None, help="Training crop (cls) or shorter side (det)."),
                seed: Optional[int] = typer.Option(None, help="Seed of the new heads, data order and the split."),
                device: Optional[str] = typer.Option(None, help="auto, cpu, cuda, cuda:N."),
                precision: Optional[str] = typer.Option(None, help="auto, fp32, bf16, fp16."),
                workers: Optional[int] = typer.Option(None, help="Image-decoding worker processes."),
                checkpoint_every: Optional[int] = typer.Option(None, help="Iterations between checkpoints."),
                sets: Optional[list[str]] = _SET,
                restart: bool = typer.Option(False, help="Start over instead of resuming an unfinished run."),
                devices: int = typer.Option(1, help="Processes under torchrun (DistributedDataParallel)."),
                background: bool = typer.Option(False, help="Queue as a worker job (`featscope jobs list`)."),
                as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
        params = _knobs(None, epochs, batch_size, lr, image_size, seed, device, precision, workers,
                        checkpoint_every, sets)
        _finetune(task, backbone, dataset, test_dataset, preset, classes, name, restart, params, devices, background,
                  as_json)

    command.__doc__ = doc
    return command


train_app.command("cls")(_make_train("cls", "Pre-train a ResNet + linear classifier on image labels."))
train_app.command("det")(_make_train("det", "Pre-train a Faster R-CNN (the study's ConvProj/FC1/FC2 head) on boxes."))
finetune_app.command("det")(_make_finetune("det", "Fine-tune for detection: new heads; AP at IoU 0.1..0.9 (Fig. 1)."))
finetune_app.command("cls")(_make_finetune("cls", "Fine-tune the whole network for classification: top-1 (Table 8)."))
finetune_app.command("seg")(_make_finetune("seg", "Fine-tune for semantic segmentation (torchvision's DeepLabV3 head): "
                                                  "mIoU, trimap / anti-trimap accuracy (Table 4, Fig. 2)."))
