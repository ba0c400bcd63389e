"""``featscope extract``, ``featscope embeddings list`` and ``featscope neighbours``."""

from __future__ import annotations

import dataclasses
import json
import sys
from typing import Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from featscope.cli.common import app, emit, err, out, run, ws

embeddings_app = typer.Typer(help="List cached embedding sets.", no_args_is_help=True)
app.add_typer(embeddings_app, name="embeddings")

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
            infos = run(ws().extract, backbone, dataset, taps=tap, poolings=pooling, precision=precision,
                         device=device, batch_size=batch_size, num_workers=workers,
                         dtype="float16" if float16 else "float32", progress=update,
                         on_message=lambda m: err.print(m, highlight=False))
    except KeyboardInterrupt:
        err.print("interrupted: finished shards are kept; run the same command again to continue from them")
        raise typer.Exit(130) from None
    emit(infos, ["id", "backbone", "dataset", "tap", "pooling", "precision", "n", "dim", "n_failed", "index_kind",
                  "cached"], as_json, "embedding sets")


@embeddings_app.command("list")
def embeddings_list(backbone: Optional[str] = typer.Option(None, "--backbone", "-b", help="Only this backbone."),
                    dataset: Optional[str] = typer.Option(None, "--dataset", "-d", help="Only this data set."),
                    as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """List cached embedding sets."""
    emit(run(ws().embedding_sets, backbone, dataset),
          ["id", "backbone", "dataset", "tap", "pooling", "precision", "dtype", "n", "dim", "n_failed", "index_kind",
           "index_recall"],
          as_json, "embedding sets")


@app.command("neighbours")
def neighbours(embedding_set: int = typer.Argument(..., help="Embedding set id (`featscope embeddings list`)."),
               image: str = typer.Argument(..., help="Catalog image id, or path relative to the data set root."),
               k: int = typer.Option(10, "-k", help="How many neighbours."),
               as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """The k nearest images (cosine similarity) to an image in an embedding set."""
    query, hits = run(ws().neighbours, embedding_set, image, k)
    if as_json:
        sys.stdout.write(json.dumps({"query": dataclasses.asdict(query),
                                     "neighbours": [dataclasses.asdict(h) for h in hits]}, indent=2) + "\n")
        return
    out.print(f"query: image {query.image_id} {query.relpath} ({query.label})")
    emit(hits, ["rank", "image_id", "relpath", "label", "score"], False, f"{k} nearest neighbours")
