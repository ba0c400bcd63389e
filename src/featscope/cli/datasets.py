"""``featscope dataset``: register, list and generate image data sets."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from typing import Optional

import typer

from featscope.cli.common import app, count_progress, emit, out, run, ws

dataset_app = typer.Typer(help="Register, list and generate image data sets.", no_args_is_help=True)
app.add_typer(dataset_app, name="dataset")

@dataset_app.command("add")
def dataset_add(path: Path = typer.Argument(..., help="Folder, COCO JSON, VOC root or CSV manifest."),
                name: Optional[str] = typer.Option(None, help="Catalog name (default: the folder or file name)."),
                format: str = typer.Option("auto", "--format", help="auto, imagefolder, coco, voc, folder, csv."),
                images_root: Optional[Path] = typer.Option(None, help="COCO: folder the JSON's file_names are relative to."),
                split: Optional[str] = typer.Option(None, help="VOC: ImageSets/Main/<split>.txt to use."),
                verify: str = typer.Option("header", help="none, header (default) or full (decode every image)."),
                as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Register an image data set (images are never modified)."""
    progress, update = count_progress("scanning")
    with progress:
        info = run(ws().add_dataset, path, name=name, format=format, images_root=images_root, split=split,
                    verify=verify, progress=update)
    if as_json:
        emit([info], [], True, "")
        return
    verb = "registered" if info.created else "already registered, unchanged:"
    out.print(f"{verb} [bold]{info.name}[/bold] v{info.version} (id {info.id}, {info.format}): {info.summary}")


@dataset_app.command("list")
def dataset_list(all_versions: bool = typer.Option(False, "--all", help="Every version, not just the newest."),
                 as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """List registered data sets."""
    rows = run(ws().datasets, all_versions)
    emit(rows, ["id", "name", "version", "format", "n_images", "n_skipped", "classes", "fingerprint"], as_json,
          "data sets")


@dataset_app.command("images")
def dataset_images(dataset: str = typer.Argument(..., help="Data set name, name@version or id."),
                   limit: int = typer.Option(20, help="How many rows (0: all)."),
                   offset: int = typer.Option(0, help="Skip this many rows first."),
                   skipped: bool = typer.Option(False, "--skipped", help="List the unreadable files and why instead."),
                   as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """List a data set's images with their catalog ids (or the files that were skipped)."""
    rows = run(ws().images, dataset, limit=limit or None, offset=offset, skipped=skipped)
    columns = ["id", "relpath", "error"] if skipped else ["id", "relpath", "label", "width", "height", "n_boxes"]
    emit(rows, columns, as_json, "skipped files" if skipped else "images")


@dataset_app.command("show")
def dataset_show(dataset: str = typer.Argument(..., help="Data set name, name@version or id."),
                 as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """One data set: where it was read from, its classes, and whether it has segmentation masks."""
    from featscope.workspace.datasets import DatasetInfo, get_dataset, segmentation_coverage

    w = ws()
    row = run(get_dataset, w.ctx, dataset)
    info, masks = DatasetInfo.of(row), run(segmentation_coverage, w.ctx, row)
    if as_json:
        sys.stdout.write(json.dumps({**dataclasses.asdict(info), "source_path": row.source_path,
                                     "segmentation": masks}, indent=2) + "\n")
        return
    out.print(f"[bold]{info.name}[/bold] v{info.version} (id {info.id}, {info.format}): {info.summary}", highlight=False)
    out.print(f"read from {row.source_path}; images under {info.root}", highlight=False)
    out.print(f"classes: {', '.join(info.classes) or 'none'}", highlight=False)
    if masks["images"]:
        out.print(f"segmentation masks: {masks['images']} of {masks['of']} images, {len(masks['classes'])} classes "
                  f"with background, read from {masks['source']}", highlight=False)
    else:
        out.print(f"segmentation masks: none ({masks.get('reason', 'no readable image has one')})", highlight=False)


@dataset_app.command("synth")
def dataset_synth(out_dir: Path = typer.Argument(..., help="Folder to write the generated images into."),
                  name: str = typer.Option("synth", help="Registered as NAME-scenes (COCO) and NAME-objects."),
                  scenes: int = typer.Option(200, help="Multi-object scenes (for detection)."),
                  per_class: int = typer.Option(30, help="Single-object images per class (for classification)."),
                  size: int = typer.Option(128, help="Image side in pixels."),
                  seed: int = typer.Option(0, help="Same seed, same bytes.")) -> None:
    """Generate the deterministic synthetic shapes data set and register it."""
    infos = run(ws().synth_dataset, out_dir, name=name, n_scenes=scenes, n_per_class=per_class, size=size, seed=seed)
    for info in infos:
        out.print(f"[bold]{info.name}[/bold] (id {info.id}, {info.format}): {info.summary}")


@dataset_app.command("study")
def dataset_study(out_dir: Path = typer.Argument(..., help="Folder to write the generated images into."),
                  name: str = typer.Option("study", help="Registered as NAME-pretrain, NAME-pretrain-val, "
                                                         "NAME-target-train, NAME-target-test, NAME-single, "
                                                         "NAME-several, NAME-small."),
                  pretrain: int = typer.Option(4800, help="Pre-training scenes (one class each, 1-4 instances; the cpu-demo preset is tuned on 4,800)."),
                  pretrain_val: int = typer.Option(150, help="Held-out pre-training scenes."),
                  target_train: int = typer.Option(300, help="Target-set training scenes (other shapes)."),
                  target_test: int = typer.Option(150, help="Target-set test scenes."),
                  probe: int = typer.Option(40, help="Images per class in each probe set (single, several, small)."),
                  size: int = typer.Option(128, help="Image side in pixels."),
                  seed: int = typer.Option(0, help="Same seed, same bytes.")) -> None:
    """Generate and register the study's synthetic sets (pre-training, target, probe test sets)."""
    infos = run(ws().study_datasets, out_dir, name=name, n_pretrain=pretrain, n_pretrain_val=pretrain_val,
                n_target_train=target_train, n_target_test=target_test, n_probe=probe, size=size, seed=seed)
    for info in infos:
        out.print(f"[bold]{info.name}[/bold] (id {info.id}, {info.format}): {info.summary}")
