"""The ``featscope`` command: the same verbs as the Python API (:class:`featscope.Workspace`)."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

app = typer.Typer(help="featscope: compare the feature spaces of CNN backbones over the same images.",
                  no_args_is_help=True, pretty_exceptions_enable=False)
dataset_app = typer.Typer(help="Register, list and generate image data sets.", no_args_is_help=True)
backbone_app = typer.Typer(help="Register backbones and list their layer taps.", no_args_is_help=True)
embeddings_app = typer.Typer(help="List cached embedding sets.", no_args_is_help=True)
app.add_typer(dataset_app, name="dataset")
app.add_typer(backbone_app, name="backbone")
app.add_typer(embeddings_app, name="embeddings")

# Piped output (logs, CI) gets a wide fixed width instead of Rich's 80-column fallback.
out = Console(width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True, width=None if sys.stderr.isatty() else 160)
_state: dict[str, Any] = {}

# Errors a user can fix: printed as one line with the fix, exit code 2, no traceback.
_USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, LookupError, FileNotFoundError, PermissionError)


@app.callback()
def _main(data_dir: Optional[Path] = typer.Option(None, "--data-dir", envvar="FEATSCOPE_DATA_DIR",
                                                     help="Where the catalog and artifacts live (default ./featscope-data).")) -> None:
    _state["data_dir"] = data_dir


def _ws():
    if "ws" not in _state:
        from featscope.config import Settings
        from featscope.workspace import Workspace

        settings = Settings() if _state.get("data_dir") is None else Settings(data_dir=_state["data_dir"])
        _state["ws"] = Workspace(settings)
    return _state["ws"]


def _run(fn, *args, **kwargs):
    try:
        return fn(*args, **kwargs)
    except _USER_ERRORS as e:
        err.print(f"[red]error:[/red] {e}", highlight=False)
        raise typer.Exit(2) from None


def _emit(rows: list, columns: list[str], as_json: bool, title: str) -> None:
    dicts = [dataclasses.asdict(r) if dataclasses.is_dataclass(r) else dict(r) for r in rows]
    if as_json:
        sys.stdout.write(json.dumps(dicts, indent=2, default=str) + "\n")
        return
    if not dicts:
        out.print(f"no {title} yet")
        return
    table = Table(title=title)
    for c in columns:
        table.add_column(c)
    for d in dicts:
        table.add_row(*[_fmt(d.get(c)) for c in columns])
    out.print(table)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4f}"
    if isinstance(v, list):
        return ", ".join(map(str, v[:12])) + (" ..." if len(v) > 12 else "")
    if isinstance(v, str) and len(v) == 64 and all(c in "0123456789abcdef" for c in v):
        return v[:12]
    return "" if v is None else str(v)


def _count_progress(label: str):
    progress = Progress(TextColumn(label), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), console=err,
                        transient=True)
    task = progress.add_task(label, total=None)

    def update(done: int, total: int) -> None:
        progress.update(task, completed=done, total=total)

    return progress, update


# ---------------------------------------------------------------- data sets
@dataset_app.command("add")
def dataset_add(path: Path = typer.Argument(..., help="Folder, COCO JSON, VOC root or CSV manifest."),
                name: Optional[str] = typer.Option(None, help="Catalog name (default: the folder or file name)."),
                format: str = typer.Option("auto", "--format", help="auto, imagefolder, coco, voc, folder, csv."),
                images_root: Optional[Path] = typer.Option(None, help="COCO: folder the JSON's file_names are relative to."),
                split: Optional[str] = typer.Option(None, help="VOC: ImageSets/Main/<split>.txt to use."),
                verify: str = typer.Option("header", help="none, header (default) or full (decode every image)."),
                as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Register an image data set (images are never modified)."""
    progress, update = _count_progress("scanning")
    with progress:
        info = _run(_ws().add_dataset, path, name=name, format=format, images_root=images_root, split=split,
                    verify=verify, progress=update)
    if as_json:
        _emit([info], [], True, "")
        return
    verb = "registered" if info.created else "already registered, unchanged:"
    out.print(f"{verb} [bold]{info.name}[/bold] v{info.version} (id {info.id}, {info.format}): {info.summary}")


@dataset_app.command("list")
def dataset_list(all_versions: bool = typer.Option(False, "--all", help="Every version, not just the newest."),
                 as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """List registered data sets."""
    rows = _run(_ws().datasets, all_versions)
    _emit(rows, ["id", "name", "version", "format", "n_images", "n_skipped", "classes", "fingerprint"], as_json,
          "data sets")


@dataset_app.command("images")
def dataset_images(dataset: str = typer.Argument(..., help="Data set name, name@version or id."),
                   limit: int = typer.Option(20, help="How many rows (0: all)."),
                   offset: int = typer.Option(0, help="Skip this many rows first."),
                   skipped: bool = typer.Option(False, "--skipped", help="List the unreadable files and why instead."),
                   as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """List a data set's images with their catalog ids (or the files that were skipped)."""
    rows = _run(_ws().images, dataset, limit=limit or None, offset=offset, skipped=skipped)
    columns = ["id", "relpath", "error"] if skipped else ["id", "relpath", "label", "width", "height", "n_boxes"]
    _emit(rows, columns, as_json, "skipped files" if skipped else "images")


@dataset_app.command("synth")
def dataset_synth(out_dir: Path = typer.Argument(..., help="Folder to write the generated images into."),
                  name: str = typer.Option("synth", help="Registered as NAME-scenes (COCO) and NAME-objects."),
                  scenes: int = typer.Option(200, help="Multi-object scenes (for detection)."),
                  per_class: int = typer.Option(30, help="Single-object images per class (for classification)."),
                  size: int = typer.Option(128, help="Image side in pixels."),
                  seed: int = typer.Option(0, help="Same seed, same bytes.")) -> None:
    """Generate the deterministic synthetic shapes data set and register it."""
    infos = _run(_ws().synth_dataset, out_dir, name=name, n_scenes=scenes, n_per_class=per_class, size=size, seed=seed)
    for info in infos:
        out.print(f"[bold]{info.name}[/bold] (id {info.id}, {info.format}): {info.summary}")


# ---------------------------------------------------------------- backbones
@backbone_app.command("add")
def backbone_add(spec: str = typer.Argument(..., help="torchvision:NAME, torchvision-det:NAME, timm:NAME or checkpoint:PATH."),
                 name: Optional[str] = typer.Option(None, help="Catalog name (default from the spec)."),
                 weights: Optional[Path] = typer.Option(None, help="Local weights file for the architecture."),
                 weights_format: str = typer.Option("auto", help="auto, torchvision, featscope, timm, torchvision-det, mmdet, detectron2."),
                 arch: Optional[str] = typer.Option(None, help="Architecture, when it cannot be inferred (e.g. resnet50)."),
                 random_init: bool = typer.Option(False, help="Untrained network with --seed (for tests and baselines)."),
                 seed: int = typer.Option(0, help="Seed for --random-init."),
                 resize: Optional[int] = typer.Option(None, help="Override preprocessing: short side resized to this."),
                 crop: Optional[int] = typer.Option(None, help="Override preprocessing: centre crop size."),
                 as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Register a backbone; the weights are loaded and checked now."""
    preprocess = None
    if resize is not None or crop is not None:
        from featscope.extractors.types import Preprocess

        crop = crop or (resize * 7 // 8 if resize else 224)
        preprocess = _run(Preprocess, resize=resize or max(crop, round(crop * 8 / 7)), crop=crop)
    info = _run(_ws().add_backbone, spec, name=name, weights=weights, weights_format=weights_format, arch=arch,
                random_init=random_init, seed=seed, preprocess=preprocess)
    if as_json:
        _emit([info], [], True, "")
        return
    verb = "registered" if info.created else "already registered:"
    out.print(f"{verb} [bold]{info.name}[/bold] (id {info.id}, {info.arch}, fingerprint {info.fingerprint[:12]}); "
              f"taps: {', '.join(info.taps)}")


@backbone_app.command("list")
def backbone_list(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """List registered backbones."""
    _emit(_run(_ws().backbones), ["id", "name", "spec", "arch", "random_init", "has_classifier", "fingerprint"],
          as_json, "backbones")


@backbone_app.command("layers")
def backbone_layers(name: str = typer.Argument(..., help="Registered backbone name or id."),
                    input_size: Optional[int] = typer.Option(None, help="Input side (default: the backbone's crop)."),
                    as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """List the taps a backbone offers, with shapes and pooled vector lengths."""
    taps = _run(_ws().backbone_layers, name, input_size)
    rows = [{**dataclasses.asdict(t), "shape": f"{t.channels}x{t.height}x{t.width}",
             "pooled": ", ".join(f"{k}={v}" for k, v in t.dims.items())} for t in taps]
    _emit(rows, ["name", "aliases", "shape", "pooled"], as_json, f"taps of {name}")


# ---------------------------------------------------------------- extraction
@app.command("extract")
def extract(backbone: str = typer.Option(..., "--backbone", "-b", help="Registered backbone name or id."),
            dataset: str = typer.Option(..., "--dataset", "-d", help="Registered data set name, name@version or id."),
            tap: list[str] = typer.Option(["conv5"], "--tap", "-t", help="Tap (repeatable): layer1..layer4 or conv2..conv5."),
            pooling: list[str] = typer.Option(["avg"], "--pooling", "-p", help="Pooling (repeatable): avg, max, grid2, grid4, none."),
            precision: Optional[str] = typer.Option(None, help="fp32, bf16 or fp16 (default from settings)."),
            device: Optional[str] = typer.Option(None, help="auto, cpu, cuda, cuda:N."),
            batch_size: Optional[int] = typer.Option(None, help="Images per forward pass."),
            workers: Optional[int] = typer.Option(None, help="Decoding worker processes."),
            float16: bool = typer.Option(False, "--float16", help="Store embeddings as float16 (half the disk)."),
            as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Embed a data set with a backbone; resumable, and a cache hit when nothing changed."""
    progress = Progress(TextColumn("extracting"), BarColumn(), MofNCompleteColumn(),
                        TextColumn("{task.fields[rate]}"), TimeRemainingColumn(), console=err, transient=True)
    task = progress.add_task("extract", total=None, rate="")

    def update(p) -> None:
        progress.update(task, completed=p.done, total=p.total, rate=f"{p.images_per_second:,.1f} img/s")

    try:
        with progress:
            infos = _run(_ws().extract, backbone, dataset, taps=tap, poolings=pooling, precision=precision,
                         device=device, batch_size=batch_size, num_workers=workers,
                         dtype="float16" if float16 else "float32", progress=update,
                         on_message=lambda m: err.print(m, highlight=False))
    except KeyboardInterrupt:
        err.print("interrupted: finished shards are kept; run the same command again to continue from them")
        raise typer.Exit(130) from None
    _emit(infos, ["id", "backbone", "dataset", "tap", "pooling", "precision", "n", "dim", "n_failed", "index_kind",
                  "cached"], as_json, "embedding sets")


@embeddings_app.command("list")
def embeddings_list(backbone: Optional[str] = typer.Option(None, "--backbone", "-b", help="Only this backbone."),
                    dataset: Optional[str] = typer.Option(None, "--dataset", "-d", help="Only this data set."),
                    as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """List cached embedding sets."""
    _emit(_run(_ws().embedding_sets, backbone, dataset),
          ["id", "backbone", "dataset", "tap", "pooling", "precision", "dtype", "n", "dim", "n_failed", "index_kind"],
          as_json, "embedding sets")


@app.command("neighbours")
def neighbours(embedding_set: int = typer.Argument(..., help="Embedding set id (`featscope embeddings list`)."),
               image: str = typer.Argument(..., help="Catalog image id, or path relative to the data set root."),
               k: int = typer.Option(10, "-k", help="How many neighbours."),
               as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """The k nearest images (cosine similarity) to an image in an embedding set."""
    query, hits = _run(_ws().neighbours, embedding_set, image, k)
    if as_json:
        sys.stdout.write(json.dumps({"query": dataclasses.asdict(query),
                                     "neighbours": [dataclasses.asdict(h) for h in hits]}, indent=2) + "\n")
        return
    out.print(f"query: image {query.image_id} {query.relpath} ({query.label})")
    _emit(hits, ["rank", "image_id", "relpath", "label", "score"], False, f"{k} nearest neighbours")


if __name__ == "__main__":  # pragma: no cover
    app()
