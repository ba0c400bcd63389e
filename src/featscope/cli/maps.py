"""``featscope heatmap`` and ``featscope maskout``: activation and mask-out maps (study Figs. 4 and 5)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer

from featscope.cli.common import app, count_progress, out, run, say, ws

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
                                      "legend": r.legend, "cached": r.cached} for r in results]
                                    + [{"files": [str(p) for p in written]}], indent=2, default=str) + "\n")
        return
    for r in results:
        state = "cached" if r.cached else "computed"
        if r.kind == "maskout":
            lg = r.legend
            detail = (f"unmasked p({r.data['class_name']}) = {r.data['unmasked_probability']:.4f}, "
                      f"{r.data['min_probability']:.4g}..{r.data.get('max_probability', float('nan')):.4g} over "
                      f"{r.data['positions']} positions; drawn on the {lg['scale']} scale "
                      f"{lg['low']:.4g}..{lg['high']:.4g}")
        else:
            chosen = " (top-scoring: no --target given)" if r.data.get("target_chosen") == "top-scoring" else ""
            detail = f"{r.params['method']} at {r.params['tap']}" + (f" for {r.data.get('class_name')}{chosen}"
                                                                     if r.data.get("class_name") else "")
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
            target: Optional[str] = typer.Option(None, help="Class (name or index) for Grad-CAM methods "
                                                 "(default: the top-scoring class)."),
            top_channels: int = typer.Option(0, help="Also keep the N strongest channels' maps (mean only)."),
            compare: Optional[str] = typer.Option(None, "--compare", help="Second backbone: side by side + difference."),
            probe_dataset: Optional[str] = typer.Option(None, help="Grad-CAM on a network without a classifier: "
                                                        "the labelled data set whose probe is the head."),
            out_dir: Path = typer.Option(Path("featscope-maps"), "--out", "-o", help="Folder for PNG/NPZ/JSON."),
            device: Optional[str] = typer.Option(None, help="auto, cpu, cuda."),
            as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Activation heatmap of an image (study Fig. 4), drawn on the original image; PNG and arrays."""
    results = [run(ws().heatmap, b, image, tap=tap, method=method, target=target, top_channels=top_channels,
                    probe_dataset=probe_dataset, device=device, on_message=say)
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
            precision: str = typer.Option(
                "fp32", help="fp32 (exact); mixed (first layers and head fp32, the rest bf16: close to exact); "
                             "bf16 / fp16 (fastest on GPUs; slower than fp32 on CPUs without native bf16)."),
            approx_margin: Optional[int] = typer.Option(None, "--approx-margin", help="Faster, approximate: drop the "
                                                        "mask's effect beyond N cells of its footprint at every layer "
                                                        "(default: exact). Check it against an exact map first."),
            scale: str = typer.Option("relative", help="Colours of the overlay: relative (the map's own range), "
                                      "absolute (0..1) or drop (the fall from the unmasked probability); a colour "
                                      "bar states the values."),
            compare: Optional[str] = typer.Option(None, "--compare", help="Second backbone: side by side + difference."),
            probe_dataset: Optional[str] = typer.Option(None, help="For networks without a classifier: the labelled "
                                                        "data set whose linear probe is the head (trained if needed)."),
            out_dir: Path = typer.Option(Path("featscope-maps"), "--out", "-o", help="Folder for PNG/NPZ/JSON."),
            device: Optional[str] = typer.Option(None, help="auto, cpu, cuda."),
            as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Mask-out probability map (study Fig. 5): p(target) as a blank square slides over the image."""
    results = []
    for b in [backbone] + ([compare] if compare else []):
        progress, update = count_progress(f"mask-out {b}")
        with progress:
            results.append(run(ws().maskout, b, image, target=target, size=size, stride=stride, fill=fill,
                                mean_pixel=_rgb(mean_pixel), precision=precision, approx_margin=approx_margin,
                                probe_dataset=probe_dataset, scale=scale, device=device, progress=update,
                                on_message=say))
    _write_maps(results, out_dir, _map_stem(image, "maskout"), as_json)
