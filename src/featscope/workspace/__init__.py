"""The Python API: one :class:`Workspace` per data dir, with the same verbs as the CLI and REST API."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from featscope.config import Settings
from featscope.extractors.types import Preprocess
from featscope.workspace import analyses as _analyses, analyze as _an, backbones as _bb, datasets as _ds, \
    embeddings as _emb, maps as _maps
from featscope.workspace.maps import MapResult
from featscope.workspace.analyses import AnalysisResult
from featscope.workspace.analyze import KeptProbe
from featscope.workspace.backbones import BackboneInfo
from featscope.workspace.context import Context, NotFound
from featscope.workspace.datasets import DatasetInfo, ImageInfo
from featscope.workspace.embeddings import Embeddings, EmbeddingSetInfo, Neighbour
from featscope.training.runs import RunInfo

__all__ = ["AnalysisResult", "KeptProbe", "MapResult", "BackboneInfo", "DatasetInfo", "ImageInfo", "EmbeddingSetInfo", "Embeddings", "Neighbour", "NotFound", "RunInfo", "Workspace"]


class Workspace:
    """featscope's state in one data dir: catalog, artifact store, loaded backbones.

    >>> ws = Workspace()                      # reads FEATSCOPE_* settings
    >>> ws.synth_dataset("synth")             # registers synth-scenes and synth-objects
    >>> ws.add_backbone("torchvision:resnet18", random_init=True)
    >>> [es] = ws.extract("resnet18-random0", "synth-objects")
    >>> ws.neighbours(es.id, image=1, k=5)
    """

    def __init__(self, settings: Settings | None = None, **overrides) -> None:
        settings = settings or Settings()
        if overrides:
            settings = settings.model_copy(update=overrides)
        self.settings = settings
        self.ctx = Context.open(settings)

    # data sets
    def add_dataset(self, path: str | Path, *, name: str | None = None, format: str = "auto",
                    images_root: str | Path | None = None, split: str | None = None, verify: str = "header",
                    progress: Callable[[int, int], None] | None = None) -> DatasetInfo:
        """Register an image collection (ImageFolder, COCO JSON, VOC, plain folder or CSV manifest)."""
        return _ds.add_dataset(self.ctx, path, name=name, format=format, images_root=images_root, split=split,
                               verify=verify, progress=progress)

    def synth_dataset(self, out_dir: str | Path, *, name: str = "synth", n_scenes: int = 200, n_per_class: int = 30,
                      size: int = 128, seed: int = 0) -> list[DatasetInfo]:
        """Generate and register the synthetic shapes data set (scenes as COCO, single objects as ImageFolder)."""
        return _ds.synth(self.ctx, out_dir, name=name, n_scenes=n_scenes, n_per_class=n_per_class, size=size, seed=seed)

    def study_datasets(self, out_dir: str | Path, *, name: str = "study", n_pretrain: int = 4800,
                       n_pretrain_val: int = 150, n_target_train: int = 300, n_target_test: int = 150,
                       n_probe: int = 40, size: int = 128, seed: int = 0) -> list[DatasetInfo]:
        """Generate and register the study's synthetic sets: ``<name>-pretrain`` (one class per scene, 1-4
        instances), ``-pretrain-val``, ``-target-train``/``-target-test`` (other shapes), ``-single``,
        ``-several``, ``-small`` (probe sets)."""
        return _ds.study(self.ctx, out_dir, name=name, n_pretrain=n_pretrain, n_pretrain_val=n_pretrain_val,
                         n_target_train=n_target_train, n_target_test=n_target_test, n_probe=n_probe, size=size,
                         seed=seed)

    def datasets(self, all_versions: bool = False) -> list[DatasetInfo]:
        return _ds.list_datasets(self.ctx, all_versions)

    def images(self, dataset: str | int, *, limit: int | None = None, offset: int = 0,
               skipped: bool = False) -> list[ImageInfo]:
        """A page of a data set's images with their catalog ids (``skipped=True``: the unreadable files)."""
        return _ds.list_images(self.ctx, dataset, limit=limit, offset=offset, skipped=skipped)

    def segmentation(self, dataset: str | int, *, void_width: int | None = None):
        """The data set's per-pixel class masks (:class:`featscope.datasets.masks.MaskSet`), read on demand."""
        return _ds.segmentation(self.ctx, dataset, void_width=void_width)

    # backbones
    def add_backbone(self, spec: str, *, name: str | None = None, weights: str | Path | None = None,
                     weights_format: str = "auto", arch: str | None = None, random_init: bool = False,
                     seed: int = 0, preprocess: Preprocess | dict | None = None) -> BackboneInfo:
        """Register a backbone (``torchvision:resnet50``, ``torchvision-det:...``, ``timm:...``, ``checkpoint:PATH``)."""
        return _bb.add_backbone(self.ctx, spec, name=name, weights=weights, weights_format=weights_format, arch=arch,
                                random_init=random_init, seed=seed, preprocess=preprocess)

    def backbones(self) -> list[BackboneInfo]:
        return _bb.list_backbones(self.ctx)

    def backbone_layers(self, backbone: str | int, input_size: int | None = None):
        """Taps of a registered backbone with their shapes and pooled vector lengths."""
        return _bb.backbone_layers(self.ctx, backbone, input_size)

    def load_backbone(self, backbone: str | int):
        """The loaded network (:class:`featscope.extractors.types.Backbone`) of a registered backbone."""
        return _bb.open_backbone(self.ctx, backbone)

    # embeddings
    def extract(self, backbone: str | int, dataset: str | int, *, taps: Sequence[str] = ("conv5",),
                poolings: Sequence[str] = ("avg",), precision: str | None = None, device: str | None = None,
                batch_size: int | None = None, num_workers: int | None = None, dtype: str = "float32",
                progress=None, on_message: Callable[[str], None] | None = None) -> list[EmbeddingSetInfo]:
        """Embed a data set with a backbone at each tap x pooling (cache hit when nothing changed)."""
        return _emb.extract(self.ctx, backbone, dataset, taps=taps, poolings=poolings, precision=precision,
                            device=device, batch_size=batch_size, num_workers=num_workers, dtype=dtype,
                            progress=progress, on_message=on_message)

    def embedding_sets(self, backbone: str | int | None = None, dataset: str | int | None = None) -> list[EmbeddingSetInfo]:
        return _emb.list_embeddings(self.ctx, backbone, dataset)

    def load_embeddings(self, embedding_set: int) -> Embeddings:
        return _emb.load_embeddings(self.ctx, embedding_set)

    def import_embeddings(self, backbone: str | int, dataset: str | int, vectors, **params) -> EmbeddingSetInfo:
        """Register vectors computed elsewhere (one row per readable image, position order) as an embedding set."""
        return _emb.import_embeddings(self.ctx, backbone, dataset, vectors, **params)

    def neighbours(self, embedding_set: int, image: str | int, k: int = 10) -> tuple[Neighbour, list[Neighbour]]:
        """The query image and its ``k`` nearest neighbours (cosine) in an embedding set."""
        return _emb.neighbours(self.ctx, embedding_set, image, k)

    # analyses (each cached by its inputs and parameters; ``force=True`` recomputes)
    def comembership(self, a: int, b: int, **params) -> AnalysisResult:
        """Co-membership curves of embedding sets A and B over a K grid (study Fig. 6); see
        :func:`featscope.workspace.analyze.comembership` for the parameters."""
        return _an.comembership(self.ctx, a, b, **params)

    def closest_pairs(self, embedding_sets: Sequence[int], **params) -> AnalysisResult:
        """The most similar image pairs in each embedding set (study Fig. 3)."""
        return _an.closest(self.ctx, list(embedding_sets), **params)

    def contrast_pairs(self, a: int, b: int, **params) -> AnalysisResult:
        """Pairs close in A but distant in B, by neighbour ranks or the study's cluster definition."""
        return _an.contrast(self.ctx, a, b, **params)

    def agreement(self, a: int, b: int, **params) -> AnalysisResult:
        """Per-image k-NN neighbourhood overlap between A and B, and the images that disagree most."""
        return _an.agreement(self.ctx, a, b, **params)

    def projection(self, embedding_sets: Sequence[int], **params) -> AnalysisResult:
        """t-SNE / UMAP / PCA maps of one or more sets, later maps Procrustes-aligned to the first (Fig. 7)."""
        return _an.projection(self.ctx, list(embedding_sets), **params)

    def probe(self, embedding_set: int, **params) -> AnalysisResult:
        """Linear probe and k-NN accuracy with 95% intervals; the trained probe is kept."""
        return _an.probe(self.ctx, embedding_set, **params)

    def probe_table(self, backbones: Sequence[str | int], dataset: str | int, **params) -> list[dict]:
        """Probe accuracy over backbones x taps x pooling (study Tables 5 and 6)."""
        return _an.probe_table(self.ctx, list(backbones), dataset, **params)

    def load_probe(self, backbone: str | int, dataset: str | int, **params) -> KeptProbe:
        """A backbone's trained probe on a data set (trained now if missing), e.g. as a mask-out head."""
        return _an.load_probe(self.ctx, backbone, dataset, **params)

    def similarity(self, a: int, b: int, **params) -> AnalysisResult:
        """Linear CKA (biased, debiased) and mutual k-NN alignment of two embedding sets."""
        return _an.similarity(self.ctx, a, b, **params)

    def cka_matrix(self, backbone_a: str | int, backbone_b: str | int, dataset: str | int, **params) -> AnalysisResult:
        """Layer-by-layer linear CKA between two backbones' cached taps."""
        return _an.cka_matrix(self.ctx, backbone_a, backbone_b, dataset, **params)

    def analyses(self, kind: str | None = None) -> list[dict]:
        """Analyses recorded in the catalog."""
        return _analyses.list_analyses(self.ctx, kind)

    # maps (study Figs. 4 and 5), cached by backbone weights, image bytes, head and parameters
    def heatmap(self, backbone: str | int, image: str | int | Path, **params) -> MapResult:
        """Channel-mean activation (``method="mean"``) or Grad-CAM-family map of an image (catalog id or file)."""
        return _maps.heatmap(self.ctx, backbone, image, **params)

    def maskout(self, backbone: str | int, image: str | int | Path, *, target: str | int, **params) -> MapResult:
        """Mask-out probability map of ``target`` for an image (catalog id or file); see :func:`maps.maskout`."""
        return _maps.maskout(self.ctx, backbone, image, target=target, **params)

    # training runs (study Tables 1, 5, 7, 8 and Fig. 1); see featscope.workspace.training
    def train(self, task: str, dataset: str | int, *, preset: str = "cpu-demo", init: str | int | None = None,
              val_dataset: str | int | None = None, classes: Sequence[str] | None = None, name: str | None = None,
              restart: bool = False, progress=None, on_message: Callable[[str], None] | None = None,
              **params) -> RunInfo:
        """Pre-train a ``cls`` or ``det`` run (same seeded trunk or ``init`` backbone); registers backbone ``run:<id>``."""
        from featscope.workspace import training as _tr

        return _tr.train(self.ctx, task, dataset, preset=preset, init=init, val_dataset=val_dataset, classes=classes,
                         name=name, restart=restart, progress=progress, on_message=on_message, **params)

    def finetune(self, task: str, backbone: str | int, dataset: str | int, *, test_dataset: str | int | None = None,
                 preset: str = "cpu-demo", classes: Sequence[str] | None = None, name: str | None = None,
                 restart: bool = False, progress=None, on_message: Callable[[str], None] | None = None,
                 **params) -> RunInfo:
        """Fine-tune a backbone for ``det`` (AP at IoU 0.1..0.9), ``cls`` (top-1 with a Wilson interval) or ``seg``
        (DeepLabV3 head; mIoU, trimap / anti-trimap accuracy)."""
        from featscope.workspace import training as _tr

        return _tr.finetune(self.ctx, task, backbone, dataset, preset=preset, test_dataset=test_dataset,
                            classes=classes, name=name, restart=restart, progress=progress, on_message=on_message,
                            **params)

    def runs(self, task: str | None = None) -> list[RunInfo]:
        """Training runs, newest first."""
        from featscope.workspace import training as _tr

        return _tr.list_runs(self.ctx, task)

    def run(self, run: int | str) -> RunInfo:
        """One training run by id or name."""
        from featscope.workspace import training as _tr

        return _tr.get_run(self.ctx, run)

    def run_metrics(self, run: int | str, kind: str | None = None) -> list[dict]:
        """A run's metrics log (``train`` and ``eval`` rows), for curves."""
        from featscope.workspace import training as _tr

        return _tr.run_metrics(self.ctx, run, kind)

    def run_detections(self, run: int | str) -> dict:
        """A detection fine-tuning run's test-set boxes (ground truth with occlusion, predictions >= 0.05)."""
        from featscope.workspace import training as _tr

        return _tr.run_detections(self.ctx, run)

    def cancel_run(self, run: int | str) -> RunInfo:
        """Ask a running run to stop; it keeps its last checkpoint."""
        from featscope.workspace import training as _tr

        return _tr.cancel_run(self.ctx, run)

    def export_run(self, run: int | str, out: str | Path, *, format: str = "torchvision") -> Path:
        """Write a finished run's weights (``torchvision`` state dict or the ``featscope`` backbone file)."""
        from featscope.workspace import training as _tr

        return _tr.export_run(self.ctx, run, out, format=format)
