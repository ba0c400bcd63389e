"""``featscope backbone``: register backbones and list their layer taps."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Optional

import typer

from featscope.cli.common import app, emit, out, run, ws

backbone_app = typer.Typer(help="Register backbones and list their layer taps.", no_args_is_help=True)
app.add_typer(backbone_app, name="backbone")

@backbone_app.command("add")
def backbone_add(spec: str = typer.Argument(..., help="torchvision:NAME, torchvision-det:NAME, timm:NAME or checkpoint:PATH."),
                 name: Optional[str] = typer.Option(None, help="Catalog name (default from the spec)."),
                 weights: Optional[Path] = typer.Option(None, help="Local weights file for the architecture."),
                 weights_format: str = typer.Option("auto", help="auto, torchvision, featscope, timm, torchvision-det, mmdet, detectron2."),
                 arch: Optional[str] = typer.Option(None, help="Architecture, when it cannot be inferred (e.g. resnet50)."),
                 random_init: bool = typer.Option(False, help="Untrained network with --seed (for tests and baselines)."),
                 seed: int = typer.Option(0, help="Seed for --random-init."),
                 resize: Optional[int] = typer.Option(None, help="Override preprocessing: short side resized to this "
                                                      "(normalisation stays the weights' own)."),
                 crop: Optional[int] = typer.Option(None, help="Override preprocessing: centre crop size."),
                 as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Register a backbone; the weights are loaded and checked now."""
    preprocess = None
    if resize is not None or crop is not None:  # only the sizes change: the weights' normalisation stays
        crop = crop or (resize * 7 // 8 if resize else 224)
        preprocess = {"resize": resize or max(crop, round(crop * 8 / 7)), "crop": crop}
    info = run(ws().add_backbone, spec, name=name, weights=weights, weights_format=weights_format, arch=arch,
                random_init=random_init, seed=seed, preprocess=preprocess)
    if as_json:
        emit([info], [], True, "")
        return
    verb = "registered" if info.created else "already registered:"
    out.print(f"{verb} [bold]{info.name}[/bold] (id {info.id}, {info.arch}, fingerprint {info.fingerprint[:12]}); "
              f"taps: {', '.join(info.taps)}")


@backbone_app.command("list")
def backbone_list(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """List registered backbones."""
    emit(run(ws().backbones), ["id", "name", "spec", "arch", "random_init", "has_classifier", "fingerprint"],
          as_json, "backbones")


@backbone_app.command("layers")
def backbone_layers(name: str = typer.Argument(..., help="Registered backbone name or id."),
                    input_size: Optional[int] = typer.Option(None, help="Input side (default: the backbone's crop)."),
                    as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """List the taps a backbone offers, with shapes and pooled vector lengths."""
    taps = run(ws().backbone_layers, name, input_size)
    rows = [{**dataclasses.asdict(t), "shape": f"{t.channels}x{t.height}x{t.width}",
             "pooled": ", ".join(f"{k}={v}" for k, v in t.dims.items())} for t in taps]
    emit(rows, ["name", "aliases", "shape", "pooled"], as_json, f"taps of {name}")
