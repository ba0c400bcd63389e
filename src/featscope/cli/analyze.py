"""``featscope analyze``: analyses of cached embedding sets (cached too)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import typer

from featscope.cli.common import app, count_progress, cell, csv_text, emit, err, out, run, say, write_output, ws

analyze_app = typer.Typer(help="Analyses of cached embedding sets (cached too): co-membership, pairs, maps, probes, CKA.",
                          no_args_is_help=True)
app.add_typer(analyze_app, name="analyze")

_FORMAT = typer.Option("table", "--format", "-f", help="table (summary), json (everything) or csv (the rows).")
_OUT = typer.Option(None, "--out", "-o", help="Write the json/csv output to this file instead of stdout.")
_FORCE = typer.Option(False, "--force", help="Recompute even if a cached result exists.")


def _show(res, fmt: str, out_file: Optional[Path], summary: dict[str, Any], columns: list[str], max_rows: int = 20) -> None:
    """Print an analysis result: a summary and the first rows (table), everything (json), or the rows (csv)."""
    if fmt == "json":
        write_output(json.dumps({**res.to_dict(), "rows": res.rows}, indent=2, default=str) + "\n", out_file)
    elif fmt == "csv":
        write_output(csv_text(res.rows), out_file)
    else:
        state = "cached" if res.cached else f"computed in {res.seconds:.2f} s"
        out.print(f"[bold]{res.kind}[/bold] analysis {res.id} on embedding sets {res.inputs} ({state})")
        for k, v in summary.items():
            out.print(f"  {k}: {cell(v)}", highlight=False)
        if columns and res.rows:
            shown = res.rows[:max_rows]
            more = f" (first {max_rows} of {len(res.rows)}; --format csv for all)" if len(res.rows) > max_rows else ""
            emit(shown, columns, False, f"{res.kind}{more}")


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
    progress, update = count_progress("k-means")
    with progress:
        res = run(ws().comembership, a, b, ks=k or None, k_min=k_min, k_max=k_max, n_k=n_k, seeds=seed,
                   niter=niter, sample=sample, force=force, progress=update, on_message=say)
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
    res = run(ws().closest_pairs, sets, n_pairs=n_pairs, k=k, force=force, on_message=say)
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
    res = run(ws().contrast_pairs, a, b, definition=definition, n_pairs=n_pairs, k=k, k_large=k_large,
               k_small=k_small, seed=seed, force=force, on_message=say)
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
    res = run(ws().agreement, a, b, k=k, n_worst=n_worst, force=force, on_message=say)
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
    res = run(ws().projection, sets, method=method, perplexity=perplexity, n_neighbors=n_neighbors,
               min_dist=min_dist, pca_dims=pca_dims or None, seed=seed, force=force, on_message=say)
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
    res = run(ws().probe, embedding_set, seed=seed, val_fraction=val_fraction, test_fraction=test_fraction,
               max_iter=max_iter, knn_k=knn_k, force=force, on_message=say)
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
    rows = run(ws().probe_table, backbone, dataset, taps=tap or None, poolings=pooling or None, seed=seed,
                on_message=say)
    if fmt == "json":
        write_output(json.dumps(rows, indent=2) + "\n", out_file)
    elif fmt == "csv":
        write_output(csv_text(rows), out_file)
    else:
        emit(rows, ["backbone", "tap", "pooling", "dim", "accuracy", "ci_low", "ci_high", "knn_accuracy", "best_c",
                     "n_test"], False, f"linear probes on {dataset}")


@analyze_app.command("similarity")
def analyze_similarity(a: int = typer.Argument(..., help="Embedding set A."),
                       b: int = typer.Argument(..., help="Embedding set B, same data set."),
                       k: int = typer.Option(10, "-k", help="k of the mutual k-NN score."),
                       force: bool = _FORCE, fmt: str = _FORMAT, out_file: Optional[Path] = _OUT) -> None:
    """Linear CKA (biased and debiased) and mutual k-NN alignment of two embedding sets."""
    _check_format(fmt)
    res = run(ws().similarity, a, b, k=k, force=force, on_message=say)
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
    res = run(ws().cka_matrix, backbone_a, backbone_b, dataset, pooling=pooling, debiased=debiased, force=force,
               on_message=say)
    _show(res, fmt, out_file, {}, ["tap_a", "tap_b", "cka"], max_rows=100)


@analyze_app.command("list")
def analyze_list(kind: Optional[str] = typer.Option(None, help="Only this kind."),
                 as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """List cached analyses."""
    emit(run(ws().analyses, kind), ["id", "kind", "inputs", "params", "artifact_key", "created_at"], as_json,
          "analyses")
