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
analyze_app = typer.Typer(help="Analyses of cached embedding sets (cached too): co-membership, pairs, maps, probes, CKA.",
                          no_args_is_help=True)
app.add_typer(dataset_app, name="dataset")
app.add_typer(backbone_app, name="backbone")
app.add_typer(embeddings_app, name="embeddings")
app.add_typer(analyze_app, name="analyze")

from featscope.worker.cli import jobs_app, worker_command  # noqa: E402 - light: huey and typer only

app.add_typer(jobs_app, name="jobs")
app.command("worker")(worker_command)

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


# ---------------------------------------------------------------- maps
def _write_maps(results: list, out_dir: Path, stem: str, as_json: bool) -> None:
    from featscope.workspace.maps import compare_panel

    written = []
    for i, res in enumerate(results):
        suffix = "" if len(results) == 1 else f"-{res.backbone}"
        written += res.save(out_dir, f"{stem}{suffix}")
    if len(results) == 2:
        panel = out_dir / f"{stem}-compare.png"
        compare_panel(*results).save(panel)
        written.append(panel)
    if as_json:
        sys.stdout.write(json.dumps([{"backbone": r.backbone, "image": r.image, "params": r.params, **r.data,
                                      "cached": r.cached} for r in results] + [{"files": [str(p) for p in written]}],
                                    indent=2, default=str) + "\n")
        return
    for r in results:
        state = "cached" if r.cached else "computed"
        detail = (f"unmasked p({r.data['class_name']}) = {r.data['unmasked_probability']:.4f}, "
                  f"min over positions {r.data['min_probability']:.4f}, {r.data['positions']} positions"
                  if r.kind == "maskout" else
                  f"{r.params['method']} at {r.params['tap']}" + (f" for {r.data.get('class_name')}"
                                                                 if r.data.get("class_name") else ""))
        out.print(f"{r.backbone}: {detail} ({state})", highlight=False)
    for p in written:
        out.print(f"wrote {p}", highlight=False)


def _map_stem(image: str, kind: str) -> str:
    base = Path(image).stem if not image.isdigit() else f"image{image}"
    return f"{base}-{kind}"


@app.command("heatmap")
def heatmap(image: str = typer.Argument(..., help="Image file, or a catalog image id."),
            backbone: str = typer.Option(..., "--backbone", "-b", help="Registered backbone."),
            tap: str = typer.Option("conv5", "--tap", "-t", help="Tap (conv2..conv5 or layer names)."),
            method: str = typer.Option("mean", help="mean (channel-mean activation), gradcam, gradcam++, hirescam, ..."),
            target: Optional[str] = typer.Option(None, help="Class (name or index) for Grad-CAM methods."),
            top_channels: int = typer.Option(0, help="Also keep the N strongest channels' maps (mean only)."),
            compare: Optional[str] = typer.Option(None, "--compare", help="Second backbone: side by side + difference."),
            probe_dataset: Optional[str] = typer.Option(None, help="Grad-CAM on a network without a classifier: "
                                                        "the labelled data set whose probe is the head."),
            out_dir: Path = typer.Option(Path("featscope-maps"), "--out", "-o", help="Folder for PNG/NPZ/JSON."),
            device: Optional[str] = typer.Option(None, help="auto, cpu, cuda."),
            as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Activation heatmap of an image (study Fig. 4), drawn on the original image; PNG and arrays."""
    results = [_run(_ws().heatmap, b, image, tap=tap, method=method, target=target, top_channels=top_channels,
                    probe_dataset=probe_dataset, device=device, on_message=_say)
               for b in [backbone] + ([compare] if compare else [])]
    _write_maps(results, out_dir, _map_stem(image, method if method != "mean" else "activation"), as_json)


def _rgb(text: str | None) -> tuple[float, float, float] | None:
    if text is None:
        return None
    parts = text.replace(" ", "").split(",")
    try:
        values = tuple(float(p) for p in parts)
    except ValueError:
        values = ()
    if len(values) != 3:
        raise typer.BadParameter(f"--mean-pixel takes R,G,B (three numbers 0..255), got {text!r}")
    return values


@app.command("maskout")
def maskout(image: str = typer.Argument(..., help="Image file, or a catalog image id."),
            backbone: str = typer.Option(..., "--backbone", "-b", help="Registered backbone."),
            target: str = typer.Option(..., "--target", help="Class name or index whose probability is mapped."),
            size: int = typer.Option(60, help="Mask side in pixels at the network's input resolution."),
            stride: int = typer.Option(8, help="Step between mask positions in pixels."),
            fill: str = typer.Option("zero", help="zero (the normalisation mean colour), mean (--mean-pixel), or blur."),
            mean_pixel: Optional[str] = typer.Option(None, "--mean-pixel", help="R,G,B (0..255): the data set's "
                                                     "mean pixel, for --fill mean."),
            precision: str = typer.Option("fp32", help="fp32 (exact) or bf16 / fp16 (faster)."),
            approx_margin: Optional[int] = typer.Option(None, "--approx-margin", help="Faster, approximate: drop the "
                                                        "mask's effect beyond N cells of its footprint at every layer "
                                                        "(default: exact). Check it against an exact map first."),
            compare: Optional[str] = typer.Option(None, "--compare", help="Second backbone: side by side + difference."),
            probe_dataset: Optional[str] = typer.Option(None, help="For networks without a classifier: the labelled "
                                                        "data set whose linear probe is the head (trained if needed)."),
            out_dir: Path = typer.Option(Path("featscope-maps"), "--out", "-o", help="Folder for PNG/NPZ/JSON."),
            device: Optional[str] = typer.Option(None, help="auto, cpu, cuda."),
            as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Mask-out probability map (study Fig. 5): p(target) as a blank square slides over the image."""
    results = []
    for b in [backbone] + ([compare] if compare else []):
        progress, update = _count_progress(f"mask-out {b}")
        with progress:
            results.append(_run(_ws().maskout, b, image, target=target, size=size, stride=stride, fill=fill,
                                mean_pixel=_rgb(mean_pixel), precision=precision, approx_margin=approx_margin,
                                probe_dataset=probe_dataset, device=device, progress=update,
                                on_message=_say))
    _write_maps(results, out_dir, _map_stem(image, "maskout"), as_json)


# ---------------------------------------------------------------- analyses
_FORMAT = typer.Option("table", "--format", "-f", help="table (summary), json (everything) or csv (the rows).")
_OUT = typer.Option(None, "--out", "-o", help="Write the json/csv output to this file instead of stdout.")
_FORCE = typer.Option(False, "--force", help="Recompute even if a cached result exists.")


def _say(message: str) -> None:
    err.print(message, highlight=False)


def _write_output(text: str, out_file: Optional[Path]) -> None:
    if out_file is None:
        sys.stdout.write(text)
        return
    out_file.parent.mkdir(parents=True, exist_ok=True)
    out_file.write_text(text, encoding="utf-8")
    err.print(f"wrote {out_file}", highlight=False)


def _csv_text(rows: list[dict]) -> str:
    import csv
    import io

    buf = io.StringIO()
    columns = list(dict.fromkeys(c for r in rows for c in r))
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def _show(res, fmt: str, out_file: Optional[Path], summary: dict[str, Any], columns: list[str], max_rows: int = 20) -> None:
    """Print an analysis result: a summary and the first rows (table), everything (json), or the rows (csv)."""
    if fmt == "json":
        _write_output(json.dumps({**res.to_dict(), "rows": res.rows}, indent=2, default=str) + "\n", out_file)
    elif fmt == "csv":
        _write_output(_csv_text(res.rows), out_file)
    else:
        state = "cached" if res.cached else f"computed in {res.seconds:.2f} s"
        out.print(f"[bold]{res.kind}[/bold] analysis {res.id} on embedding sets {res.inputs} ({state})")
        for k, v in summary.items():
            out.print(f"  {k}: {_fmt(v)}", highlight=False)
        if columns and res.rows:
            shown = res.rows[:max_rows]
            more = f" (first {max_rows} of {len(res.rows)}; --format csv for all)" if len(res.rows) > max_rows else ""
            _emit(shown, columns, False, f"{res.kind}{more}")


def _check_format(fmt: str) -> None:
    if fmt not in ("table", "json", "csv"):
        err.print(f"[red]error:[/red] --format must be table, json or csv, not {fmt!r}")
        raise typer.Exit(2)


@analyze_app.command("comembership")
def analyze_comembership(a: int = typer.Argument(..., help="Embedding set A (`featscope embeddings list`)."),
                         b: int = typer.Argument(..., help="Embedding set B, same data set."),
                         k: Optional[list[int]] = typer.Option(None, "--k", help="K values (repeatable; default: a log grid)."),
                         k_min: int = typer.Option(2, help="Smallest K of the default grid."),
                         k_max: int = typer.Option(1000, help="Largest K of the default grid (clipped to the image count)."),
                         n_k: int = typer.Option(20, help="Number of K values in the default grid."),
                         seed: list[int] = typer.Option([0, 1, 2], "--seed", help="K-means seeds (repeatable)."),
                         niter: int = typer.Option(20, help="K-means iterations."),
                         sample: Optional[int] = typer.Option(None, help="Train centroids on this many images (all are assigned)."),
                         force: bool = _FORCE, fmt: str = _FORMAT, out_file: Optional[Path] = _OUT) -> None:
    """Co-membership curves: P(same cluster in B | same in A) and back, ARI, NMI, FM against K (study Fig. 6)."""
    _check_format(fmt)
    progress, update = _count_progress("k-means")
    with progress:
        res = _run(_ws().comembership, a, b, ks=k or None, k_min=k_min, k_max=k_max, n_k=n_k, seeds=seed,
                   niter=niter, sample=sample, force=force, progress=update, on_message=_say)
    _show(res, fmt, out_file, {"images": res.data["n"], "seeds": res.data["seeds"]},
          ["k", "a_to_b_mean", "a_to_b_std", "b_to_a_mean", "b_to_a_std", "ari_mean", "nmi_mean",
           "fowlkes_mallows_mean"], max_rows=100)


@analyze_app.command("closest")
def analyze_closest(sets: list[int] = typer.Argument(..., help="One or more embedding sets."),
                    n_pairs: int = typer.Option(50, help="Pairs per set."),
                    k: int = typer.Option(10, "-k", help="Neighbours searched per image (k >= n-pairs is exact)."),
                    force: bool = _FORCE, fmt: str = _FORMAT, out_file: Optional[Path] = _OUT) -> None:
    """The most similar image pairs in each embedding set (study Fig. 3)."""
    _check_format(fmt)
    res = _run(_ws().closest_pairs, sets, n_pairs=n_pairs, k=k, force=force, on_message=_say)
    _show(res, fmt, out_file, {}, ["embedding_set", "rank", "image_a", "relpath_a", "image_b", "relpath_b", "score"])


@analyze_app.command("contrast")
def analyze_contrast(a: int = typer.Argument(..., help="Embedding set A (pairs close here)."),
                     b: int = typer.Argument(..., help="Embedding set B (pairs distant here)."),
                     definition: str = typer.Option("ranks", help="ranks (neighbour rank in B) or clusters (the study's)."),
                     n_pairs: int = typer.Option(50, help="How many pairs."),
                     k: int = typer.Option(10, "-k", help="Candidate pairs: each image's k nearest in A."),
                     k_large: Optional[int] = typer.Option(None, help="clusters: K in A (default min(1000, N/4))."),
                     k_small: int = typer.Option(4, help="clusters: K in B."),
                     seed: int = typer.Option(0, help="clusters: K-means seed."),
                     force: bool = _FORCE, fmt: str = _FORMAT, out_file: Optional[Path] = _OUT) -> None:
    """Pairs close in A but distant in B, ranked (study Fig. 3 and appendix 6.1)."""
    _check_format(fmt)
    res = _run(_ws().contrast_pairs, a, b, definition=definition, n_pairs=n_pairs, k=k, k_large=k_large,
               k_small=k_small, seed=seed, force=force, on_message=_say)
    extra = ["rank_b", "score_b"] if definition == "ranks" else ["cluster_a", "cluster_b_i", "cluster_b_j"]
    _show(res, fmt, out_file, {"definition": definition},
          ["rank", "image_a", "relpath_a", "image_b", "relpath_b", "score_a", *extra])


@analyze_app.command("agreement")
def analyze_agreement(a: int = typer.Argument(..., help="Embedding set A."),
                      b: int = typer.Argument(..., help="Embedding set B, same data set."),
                      k: int = typer.Option(10, "-k", help="Neighbourhood size."),
                      n_worst: int = typer.Option(20, help="How many least-agreeing images to list."),
                      force: bool = _FORCE, fmt: str = _FORMAT, out_file: Optional[Path] = _OUT) -> None:
    """Per-image overlap of the k nearest neighbours in A and in B; the images that disagree most."""
    _check_format(fmt)
    res = _run(_ws().agreement, a, b, k=k, n_worst=n_worst, force=force, on_message=_say)
    _show(res, fmt, out_file, {"mean overlap": res.data["mean"], "k": res.data["k"]},
          ["image_id", "relpath", "label", "overlap"], max_rows=n_worst)


@analyze_app.command("project")
def analyze_project(sets: list[int] = typer.Argument(..., help="One or more embedding sets of the same images."),
                    method: str = typer.Option("tsne", help="tsne, umap or pca."),
                    perplexity: float = typer.Option(30.0, help="t-SNE perplexity."),
                    n_neighbors: int = typer.Option(15, help="UMAP neighbours."),
                    min_dist: float = typer.Option(0.1, help="UMAP min_dist."),
                    pca_dims: Optional[int] = typer.Option(50, help="PCA pre-reduction (0: none)."),
                    seed: int = typer.Option(0, help="Random seed."),
                    force: bool = _FORCE, fmt: str = _FORMAT, out_file: Optional[Path] = _OUT) -> None:
    """2-D maps (t-SNE, UMAP, PCA); later sets' maps are Procrustes-aligned to the first (study Fig. 7)."""
    _check_format(fmt)
    res = _run(_ws().projection, sets, method=method, perplexity=perplexity, n_neighbors=n_neighbors,
               min_dist=min_dist, pca_dims=pca_dims or None, seed=seed, force=force, on_message=_say)
    _show(res, fmt, out_file, {"method": method, "images": len(res.arrays["coords_0"])},
          ["embedding_set", "image_id", "relpath", "label", "c0", "c1"], max_rows=10)


@analyze_app.command("probe")
def analyze_probe(embedding_set: int = typer.Argument(..., help="Embedding set of a labelled data set."),
                  seed: int = typer.Option(0, help="Split seed."),
                  val_fraction: float = typer.Option(0.15, help="Validation share (chooses C)."),
                  test_fraction: float = typer.Option(0.2, help="Test share (reported accuracy)."),
                  max_iter: int = typer.Option(1000, help="L-BFGS iterations."),
                  knn_k: int = typer.Option(20, help="k of the k-NN accuracy."),
                  force: bool = _FORCE, fmt: str = _FORMAT, out_file: Optional[Path] = _OUT) -> None:
    """Linear probe (L2 chosen on validation) and k-NN accuracy with 95% intervals; the probe is kept."""
    _check_format(fmt)
    res = _run(_ws().probe, embedding_set, seed=seed, val_fraction=val_fraction, test_fraction=test_fraction,
               max_iter=max_iter, knn_k=knn_k, force=force, on_message=_say)
    d = res.data
    _show(res, fmt, out_file, {
        "linear probe top-1": f"{100 * d['accuracy']:.1f}% [{100 * d['ci_low']:.1f}, {100 * d['ci_high']:.1f}]",
        f"k-NN (k={d['knn_k']}) top-1": f"{100 * d['knn_accuracy']:.1f}% [{100 * d['knn_ci_low']:.1f}, "
                                         f"{100 * d['knn_ci_high']:.1f}]",
        "best C": d["best_c"], "classes": d["n_classes"], "train/val/test": f"{d['n_train']}/{d['n_val']}/{d['n_test']}",
        "converged": d["converged"]}, [])


@analyze_app.command("probes")
def analyze_probes(dataset: str = typer.Option(..., "--dataset", "-d", help="Labelled data set."),
                   backbone: list[str] = typer.Option(..., "--backbone", "-b", help="Backbone (repeatable)."),
                   tap: Optional[list[str]] = typer.Option(None, "--tap", "-t", help="Only these taps (default: all cached)."),
                   pooling: Optional[list[str]] = typer.Option(None, "--pooling", "-p", help="Only these poolings."),
                   seed: int = typer.Option(0, help="Split seed."),
                   fmt: str = _FORMAT, out_file: Optional[Path] = _OUT) -> None:
    """Probe accuracy over backbones x taps x pooling from cached embedding sets (study Tables 5 and 6)."""
    _check_format(fmt)
    rows = _run(_ws().probe_table, backbone, dataset, taps=tap or None, poolings=pooling or None, seed=seed,
                on_message=_say)
    if fmt == "json":
        _write_output(json.dumps(rows, indent=2) + "\n", out_file)
    elif fmt == "csv":
        _write_output(_csv_text(rows), out_file)
    else:
        _emit(rows, ["backbone", "tap", "pooling", "dim", "accuracy", "ci_low", "ci_high", "knn_accuracy", "best_c",
                     "n_test"], False, f"linear probes on {dataset}")


@analyze_app.command("similarity")
def analyze_similarity(a: int = typer.Argument(..., help="Embedding set A."),
                       b: int = typer.Argument(..., help="Embedding set B, same data set."),
                       k: int = typer.Option(10, "-k", help="k of the mutual k-NN score."),
                       force: bool = _FORCE, fmt: str = _FORMAT, out_file: Optional[Path] = _OUT) -> None:
    """Linear CKA (biased and debiased) and mutual k-NN alignment of two embedding sets."""
    _check_format(fmt)
    res = _run(_ws().similarity, a, b, k=k, force=force, on_message=_say)
    _show(res, fmt, out_file, {"linear CKA": res.data["cka"], "debiased CKA": res.data["cka_debiased"],
                               f"mutual {k}-NN": res.data["mutual_knn"], "images": res.data["n"]}, [])


@analyze_app.command("cka-matrix")
def analyze_cka_matrix(backbone_a: str = typer.Option(..., "--a", help="Backbone A (rows)."),
                       backbone_b: str = typer.Option(..., "--b", help="Backbone B (columns)."),
                       dataset: str = typer.Option(..., "--dataset", "-d", help="Data set both embedded."),
                       pooling: str = typer.Option("avg", help="Pooling of the sets to compare."),
                       debiased: bool = typer.Option(False, "--debiased", help="Debiased HSIC estimator."),
                       force: bool = _FORCE, fmt: str = _FORMAT, out_file: Optional[Path] = _OUT) -> None:
    """Layer-by-layer linear CKA between two backbones' cached taps."""
    _check_format(fmt)
    res = _run(_ws().cka_matrix, backbone_a, backbone_b, dataset, pooling=pooling, debiased=debiased, force=force,
               on_message=_say)
    _show(res, fmt, out_file, {}, ["tap_a", "tap_b", "cka"], max_rows=100)


@analyze_app.command("list")
def analyze_list(kind: Optional[str] = typer.Option(None, help="Only this kind."),
                 as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """List cached analyses."""
    _emit(_run(_ws().analyses, kind), ["id", "kind", "inputs", "params", "artifact_key", "created_at"], as_json,
          "analyses")


# ---------------------------------------------------------------- server
@app.command("serve")
def serve(host: str = typer.Option("127.0.0.1", help="Bind address; anything but loopback needs FEATSCOPE_TOKEN."),
          port: int = typer.Option(8050, help="Port."),
          embedded_worker: bool = typer.Option(True, "--embedded-worker/--no-embedded-worker",
                                               help="Also start one job-worker process (off when workers run apart)."),
          workers: int = typer.Option(1, help="Jobs the embedded worker runs at once."),
          log_level: str = typer.Option("info", help="uvicorn log level.")) -> None:
    """Serve the REST API (OpenAPI docs at /docs) with uvicorn, plus a job worker."""
    from featscope.server.cli import serve_command
    from featscope.server.settings import ServerSettings

    data_dir = _state.get("data_dir")
    settings = ServerSettings() if data_dir is None else ServerSettings(data_dir=data_dir)
    serve_command(host, port, embedded_worker, workers, log_level, settings=settings)


if __name__ == "__main__":  # pragma: no cover
    app()
