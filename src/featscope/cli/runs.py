"""``featscope runs``: list, show, compare, metrics, export and cancel training runs; list the parameters."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer

from featscope.cli.common import app, csv_text, emit, err, out, run, write_output, ws

runs_app = typer.Typer(help="Training runs: list, show, compare, metrics, export, cancel.", no_args_is_help=True)
app.add_typer(runs_app, name="runs")


@runs_app.command("list")
def runs_list(task: Optional[str] = typer.Option(None, help="Only cls, det, finetune-cls, finetune-det or finetune-seg."),
              as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Training runs, newest first."""
    infos = run(ws().runs, task)
    rows = [{**_summary(r), "progress": f"{r.iteration}/{r.total_iterations}"} for r in infos]
    if as_json:
        from featscope.workspace.detection_errors import recounted_run

        emit([recounted_run(r) for r in infos], [], True, "")
        return
    emit(rows, ["id", "name", "task", "state", "progress", "preset", "arch", "result", "message"], False, "runs")


def _summary(r) -> dict:
    ev = (r.result or {}).get("eval") or {}
    if "top1" in ev:
        result = f"top-1 {ev['top1']:.3f}"
    elif "ap" in ev:
        result = f"AP50 {ev['ap'].get('0.5', 0):.3f} AP70 {ev['ap'].get('0.7', 0):.3f}"
    elif "miou" in ev:
        result = f"mIoU {ev['miou']:.3f}"
    else:
        result = ""
    return {"id": r.id, "name": r.name, "task": r.task, "state": r.state, "preset": r.preset,
            "arch": r.config.get("arch"), "result": result, "message": r.message}


@runs_app.command("show")
def runs_show(run_ref: str = typer.Argument(..., metavar="RUN", help="Run id or name."),
              as_json: bool = typer.Option(False, "--json", help="Print JSON (with the metrics log).")) -> None:
    """A run: configuration, state, result, and its last metrics."""
    from featscope.workspace.detection_errors import recounted_run

    info = run(ws().run, run_ref)
    metrics = run(ws().run_metrics, run_ref)
    if as_json:  # Table 3 recounted from detections.json, as the dashboard and the REST API give it
        import dataclasses

        sys.stdout.write(json.dumps({**dataclasses.asdict(recounted_run(info)), "metrics": metrics}, indent=2,
                                    default=str) + "\n")
        return
    out.print(f"run [bold]{info.id}[/bold] {info.name}: {info.task}, {info.state} ({info.iteration}/"
              f"{info.total_iterations} iterations); {info.message}", highlight=False)
    out.print(f"  from {info.init}; classes: {', '.join(info.classes)}; files: {info.dir}", highlight=False)
    if info.config.get("holdout_classes"):
        out.print(f"  held out of pre-training: {', '.join(info.config['holdout_classes'])}", highlight=False)
    if info.error:
        out.print(f"  [red]error:[/red] {info.error}", highlight=False)
    cfg = info.config
    out.print("  " + ", ".join(f"{k}={cfg[k]}" for k in ("arch", "image_size", "epochs", "batch_size", "lr",
                                                          "schedule", "precision", "seed") if k in cfg))
    train_rows = [m for m in metrics if m.get("kind") == "train"]
    if train_rows:
        last = train_rows[-1]
        out.print(f"  last logged: iteration {last['iteration']}, loss {last['loss']:.4f}, lr {last['lr']:.5f}, "
                  f"{last['images_per_second']:.1f} img/s")
    ev = (info.result or {}).get("eval") or {}
    if "top1" in ev:
        out.print(f"  top-1 {ev['top1']:.4f} [95% CI {ev['ci_low']:.4f}, {ev['ci_high']:.4f}] on {ev['n']} images")
    if "ap" in ev:
        emit([{"IoU": t, "AP": v} for t, v in ev["ap"].items()], ["IoU", "AP"], False, "AP by IoU threshold")
    missed = _missed_by_occlusion(info)
    if missed:
        _print_missed(missed)
    if "miou" in ev:
        _print_segmentation(ev)


def _missed_by_occlusion(info) -> dict | None:
    """Table 3 of a detection run at its operating score (recomputed from its kept boxes when it has them)."""
    from featscope.workspace.detection_errors import run_missed_by_occlusion

    return run_missed_by_occlusion(info) if info.task == "finetune-det" else None


def _print_missed(m: dict) -> None:
    """The missed-object rates per occlusion bin (the study's Table 3)."""
    from featscope.workspace.detection_errors import threshold_words

    rows = [{"occlusion": b["name"], "range": f"{b['low']:g}-{b['high']:g}", "objects": b["objects"],
             "missed": b["missed"], "rate": b["rate"]} for b in m["bins"]]
    emit(rows, ["occlusion", "range", "objects", "missed", "rate"], False,
         f"missed objects by occlusion (IoU >= {m['iou']:g}; {threshold_words(m)})")


def _print_segmentation(ev: dict) -> None:
    """mIoU, pixel accuracy, per-class IoU and the trimap / anti-trimap curves (the study's Table 4, Fig. 2)."""
    out.print(f"  mIoU {ev['miou']:.4f}, pixel accuracy {ev['pixel_accuracy']:.4f} on {ev.get('n', '?')} images "
              f"(output stride {ev.get('output_stride', '?')})", highlight=False)
    emit([{"class": c, "IoU": v if v is not None else "absent"} for c, v in ev["per_class_iou"].items()],
         ["class", "IoU"], False, "IoU per class")
    anti = {r["width"]: r for r in ev.get("anti_trimap", [])}
    rows = [{"band (px)": r["width"], "trimap accuracy": r["accuracy"], "trimap pixels": r["pixels"],
             "anti-trimap accuracy": anti.get(r["width"], {}).get("accuracy"),
             "anti-trimap pixels": anti.get(r["width"], {}).get("pixels")} for r in ev.get("trimap", [])]
    emit(rows, ["band (px)", "trimap accuracy", "trimap pixels", "anti-trimap accuracy", "anti-trimap pixels"], False,
         "accuracy near object boundaries (trimap) and away from them (anti-trimap)")


@runs_app.command("compare")
def runs_compare(runs: list[str] = typer.Argument(..., help="Two or more run ids or names (same kind of result)."),
                 as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Results side by side: AP at each IoU threshold (the study's Fig. 1), top-1, or mIoU and the trimap /
    anti-trimap accuracies (Table 4, Fig. 2)."""
    infos = [run(ws().run, r) for r in runs]
    evals = [(i.result or {}).get("eval") or {} for i in infos]
    if any(not e for e in evals):
        missing = [i.name for i, e in zip(infos, evals) if not e]
        err.print(f"[red]error:[/red] no evaluation yet for {', '.join(missing)}; compare finished fine-tuning runs "
                  f"or pre-training runs with a --val-dataset")
        raise typer.Exit(2)
    if all("ap" in e for e in evals):
        rows = [{"IoU": t, **{i.name: e["ap"][t] for i, e in zip(infos, evals)}} for t in evals[0]["ap"]]
        if len(infos) == 2:
            for r in rows:
                r[f"{infos[1].name} - {infos[0].name}"] = r[infos[1].name] - r[infos[0].name]
    elif all("miou" in e for e in evals):
        rows = _segmentation_rows(infos, evals)
    elif all("top1" in e for e in evals):
        rows = [{"run": i.name, "top1": e["top1"], "ci_low": e["ci_low"], "ci_high": e["ci_high"], "n": e["n"]}
                for i, e in zip(infos, evals)]
    else:
        err.print("[red]error:[/red] these runs measure different things (AP, top-1 or mIoU); compare like with like")
        raise typer.Exit(2)
    title = "AP by IoU threshold" if "IoU" in rows[0] else "segmentation" if "metric" in rows[0] else "top-1"
    emit(rows, list(rows[0]), as_json, title)


def _segmentation_rows(infos, evals) -> list[dict]:
    """mIoU, pixel accuracy, then trimap and anti-trimap accuracy per band width, one column per run (Fig. 2)."""
    def value(e, key, width=None):
        if width is None:
            return e.get(key)
        return next((r["accuracy"] for r in e.get(key, []) if r["width"] == width), None)

    widths = [r["width"] for r in evals[0].get("trimap", [])]
    keys = [("mIoU", "miou", None), ("pixel accuracy", "pixel_accuracy", None)]
    keys += [(f"trimap {w} px", "trimap", w) for w in widths] + [(f"anti-trimap {w} px", "anti_trimap", w)
                                                                 for w in widths]
    return [{"metric": label, **{i.name: value(e, key, w) for i, e in zip(infos, evals)}} for label, key, w in keys]


@runs_app.command("metrics")
def runs_metrics(run_ref: str = typer.Argument(..., metavar="RUN", help="Run id or name."),
                 kind: Optional[str] = typer.Option(None, help="train or eval rows only."),
                 fmt: str = typer.Option("csv", "--format", "-f", help="csv or json."),
                 out_file: Optional[Path] = typer.Option(None, "--out", "-o", help="Write to this file.")) -> None:
    """The run's metrics log (one row per logged iteration and per evaluation), for curves."""
    rows = run(ws().run_metrics, run_ref, kind)
    if fmt not in ("csv", "json"):
        err.print(f"[red]error:[/red] --format must be csv or json, not {fmt!r}")
        raise typer.Exit(2)
    flat = [{k: (json.dumps(v) if isinstance(v, (dict, list)) else v) for k, v in r.items()} for r in rows]
    write_output(json.dumps(rows, indent=1) + "\n" if fmt == "json" else csv_text(flat), out_file)


@runs_app.command("export")
def runs_export(run_ref: str = typer.Argument(..., metavar="RUN", help="Run id or name."),
                out_file: Path = typer.Option(..., "--out", "-o", help="File to write."),
                fmt: str = typer.Option("torchvision", "--format", "-f",
                                        help="torchvision (a plain ResNet state dict) or featscope (the run's file).")) -> None:
    """Write a finished run's weights for other tools."""
    path = run(ws().export_run, run_ref, out_file, format=fmt)
    out.print(f"wrote {path}", highlight=False)


@runs_app.command("cancel")
def runs_cancel(run_ref: str = typer.Argument(..., metavar="RUN", help="Run id or name.")) -> None:
    """Stop a running run (within seconds); it keeps its last checkpoint."""
    info = run(ws().cancel_run, run_ref)
    if info.job_id:
        from featscope.worker.jobs import cancel_job

        run(cancel_job, ws().ctx, info.job_id)
    out.print(f"run {info.id} {info.name}: {info.state}; {info.message}", highlight=False)


@runs_app.command("params")
def runs_params(task: str = typer.Option("det", help="cls, det, finetune-cls, finetune-det or finetune-seg."),
                preset: str = typer.Option("cpu-demo", help="Preset whose values to show."),
                as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Every training parameter with its value under a preset (change any with --set KEY=VALUE)."""
    from featscope.training.presets import resolve_config

    cfg = run(resolve_config, task, preset)
    emit([{"parameter": k, "value": v} for k, v in cfg.to_dict().items()], ["parameter", "value"], as_json,
         f"{task} under {preset}")
