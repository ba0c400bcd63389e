"""Request and response models of the REST API (pydantic), shared by the routes and the OpenAPI schema."""

from __future__ import annotations

from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, model_validator

T = TypeVar("T")
MAX_LIMIT = 500
MAX_ID = 2**53


def _ref_ok(v: str) -> str:
    if v.isdigit() and (not v.isascii() or len(v) > 15):
        raise ValueError("an id must be a positive integer with at most 15 digits")
    return v


# A registered thing by name (``name`` or ``name@version`` for data sets) or by id written as digits.
Ref = Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=r"^[^\x00-\x1f]+$"),
                AfterValidator(_ref_ok)]
Id = Annotated[int, Field(ge=1, le=MAX_ID)]
Name = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.-]{1,64}$")]
PathStr = Annotated[str, StringConstraints(min_length=1, max_length=4096, pattern=r"^[^\x00]+$")]
Pooling = Literal["avg", "max", "grid2", "grid4", "none"]
TapName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.-]{1,100}$")]
UploadId = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{32}$")]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ErrorOut(BaseModel):
    """Every error: ``detail`` says what went wrong and what to do; ``errors`` lists invalid fields (422)."""

    detail: str
    errors: list[dict[str, Any]] | None = None


class Page(BaseModel, Generic[T]):
    items: list[T]
    total: int
    limit: int
    offset: int


# ---------------------------------------------------------------- auth
class LoginIn(Strict):
    token: Annotated[str, StringConstraints(min_length=1, max_length=1000)]


class LoginOut(BaseModel):
    ok: bool
    message: str


# ---------------------------------------------------------------- data sets and images
class DatasetOut(BaseModel):
    id: int
    name: str
    version: int
    format: str
    root: str
    n_images: int
    n_skipped: int
    classes: list[str]
    fingerprint: str
    summary: str
    created: bool = False


class DatasetAdd(Strict):
    path: PathStr = Field(description="Folder, COCO JSON, VOC root or CSV manifest under an allowed root.")
    name: Name | None = None
    format: Literal["auto", "imagefolder", "coco", "voc", "folder", "csv"] = "auto"
    images_root: PathStr | None = Field(default=None, description="COCO images folder (under an allowed root).")
    split: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.-]{1,64}$")] | None = None


class SynthIn(Strict):
    name: Name = "synth"
    n_scenes: int = Field(default=200, ge=1, le=2000)
    n_per_class: int = Field(default=30, ge=1, le=500)
    size: int = Field(default=128, ge=32, le=512)
    seed: int = Field(default=0, ge=0, le=2**31 - 1)


class BoxOut(BaseModel):
    label: str
    box: list[float] = Field(description="[x0, y0, x1, y1] in pixels, corners as pixel edges.")
    occlusion: float | None = Field(default=None, description="Fraction of the object hidden by others (0..1); "
                                                              "null when the annotations do not say.")


class ImageOut(BaseModel):
    id: int
    dataset_id: int
    relpath: str
    label: str | None
    width: int | None
    height: int | None
    n_boxes: int
    error: str | None
    boxes: list[BoxOut] = []


# ---------------------------------------------------------------- backbones
class BackboneOut(BaseModel):
    id: int
    name: str
    spec: str
    arch: str
    weights: str | None
    random_init: bool
    fingerprint: str
    taps: list[str]
    has_classifier: bool
    created: bool = False


class BackboneAdd(Strict):
    spec: Annotated[str, StringConstraints(pattern=r"^(torchvision|torchvision-det|timm|checkpoint|run):[^\x00]{1,1000}$")] = \
        Field(description="`source:name`, e.g. torchvision:resnet50, timm:convnext_tiny, checkpoint:/path/file.pth.")
    name: Name | None = None
    weights: PathStr | None = Field(default=None, description="Weights file under an allowed root.")
    weights_format: Literal["auto", "torchvision", "featscope", "torchvision-det", "mmdet", "detectron2", "caffe2", "timm"] = "auto"
    arch: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.-]{1,100}$")] | None = None
    random_init: bool = False
    seed: int = Field(default=0, ge=0, le=2**31 - 1)


class TapLayerOut(BaseModel):
    name: str
    aliases: list[str]
    channels: int
    height: int
    width: int
    dims: dict[str, int] = Field(description="Vector length per pooling (avg, max, grid2, grid4, none).")


class TapsOut(BaseModel):
    backbone: str
    taps: list[str]
    aliases: dict[str, str] = Field(description="Study alias (conv2..conv5) -> tap name, where the backbone has them.")
    input_size: int | None = Field(default=None, description="The input side the shapes below are for (its crop).")
    layers: list[TapLayerOut] | None = Field(default=None, description="Each tap's shape and pooled lengths.")


# ---------------------------------------------------------------- embeddings
class EmbeddingSetOut(BaseModel):
    id: int
    backbone: str
    dataset: str
    tap: str
    pooling: str
    precision: str
    dtype: str
    n: int
    dim: int
    n_failed: int
    index_kind: str
    artifact_key: str
    index_nprobe: int | None = Field(None, description="IVF indexes: inverted lists searched per query.")
    index_recall: float | None = Field(None, description="IVF indexes: recall@10 against exact search measured "
                                                         "when the index was built (None: exact flat index).")


class ExtractIn(Strict):
    backbone: Ref
    dataset: Ref
    taps: list[TapName] = Field(default_factory=lambda: ["conv5"], min_length=1, max_length=32)
    poolings: list[Pooling] = Field(default_factory=lambda: ["avg"], min_length=1, max_length=5)
    precision: Literal["fp32", "bf16", "fp16"] | None = None


class NeighbourOut(BaseModel):
    rank: int
    image_id: int
    relpath: str
    label: str | None
    score: float


class NeighboursOut(BaseModel):
    embedding_set: int
    query: NeighbourOut
    neighbours: list[NeighbourOut]


# ---------------------------------------------------------------- jobs
class JobOut(BaseModel):
    id: int
    kind: str
    state: Literal["queued", "running", "done", "failed", "cancelled"]
    progress: float
    message: str
    error: str | None
    result: dict[str, Any]
    params: dict[str, Any]
    attempts: int
    created_at: str | None
    started_at: str | None
    finished_at: str | None
    log_tail: str
    parent_id: int | None = Field(None, description="The job this one is a shard of (a split extraction); its "
                                                    "progress covers all of its shards.")


# ---------------------------------------------------------------- analyses
class AnalysisOut(BaseModel):
    id: int
    kind: str
    inputs: list[int]
    params: dict[str, Any]
    data: dict[str, Any]
    artifact_key: str
    cached: bool = True
    arrays: dict[str, Any] | None = None


class AnalysisSummary(BaseModel):
    id: int
    kind: str
    inputs: list[int]
    params: dict[str, Any]
    artifact_key: str
    created_at: str


class _Pair(Strict):
    a: Id = Field(description="Embedding set A.")
    b: Id = Field(description="Embedding set B (same data set as A).")

    def inputs(self) -> list[Any]:
        return [self.a, self.b]

    def params(self) -> dict[str, Any]:
        return self.model_dump(exclude={"a", "b"}, exclude_none=True)


class _Many(Strict):
    embedding_sets: list[Id] = Field(min_length=1, max_length=8)

    def inputs(self) -> list[Any]:
        return list(self.embedding_sets)

    def params(self) -> dict[str, Any]:
        return self.model_dump(exclude={"embedding_sets"}, exclude_none=True)


class ComembershipIn(_Pair):
    ks: list[Annotated[int, Field(ge=2, le=100_000)]] | None = Field(default=None, max_length=100)
    k_min: int = Field(default=2, ge=2, le=100_000)
    k_max: int = Field(default=1000, ge=2, le=100_000)
    n_k: int = Field(default=20, ge=1, le=100)
    seeds: list[Annotated[int, Field(ge=0, le=2**31 - 1)]] = Field(default=[0, 1, 2], min_length=1, max_length=20)
    niter: int = Field(default=20, ge=1, le=1000)
    sample: int | None = Field(default=None, ge=2, le=10_000_000)


class ClosestIn(_Many):
    n_pairs: int = Field(default=50, ge=1, le=10_000)
    k: int = Field(default=10, ge=1, le=1000)


class ContrastIn(_Pair):
    definition: Literal["ranks", "clusters"] = "ranks"
    n_pairs: int = Field(default=50, ge=1, le=10_000)
    k: int = Field(default=10, ge=1, le=1000)
    k_large: int | None = Field(default=None, ge=2, le=100_000)
    k_small: int = Field(default=4, ge=2, le=1000)
    seed: int = Field(default=0, ge=0, le=2**31 - 1)


class AgreementIn(_Pair):
    k: int = Field(default=10, ge=1, le=1000)
    n_worst: int = Field(default=20, ge=1, le=10_000)


class ProjectionIn(_Many):
    method: Literal["tsne", "umap", "pca"] = "tsne"
    perplexity: float = Field(default=30.0, gt=0, le=1000)
    n_neighbors: int = Field(default=15, ge=2, le=1000)
    min_dist: float = Field(default=0.1, ge=0, le=1)
    pca_dims: int | None = Field(default=50, ge=2, le=4096)
    seed: int | None = Field(default=0, ge=0, le=2**31 - 1)
    metric: Literal["cosine", "euclidean"] = "cosine"
    n_iter: int = Field(default=500, ge=10, le=10_000)
    early_exaggeration_iter: int = Field(default=250, ge=0, le=10_000)


class ProbeIn(Strict):
    embedding_set: Id
    val_fraction: float = Field(default=0.15, gt=0, lt=0.5)
    test_fraction: float = Field(default=0.2, gt=0, lt=0.5)
    seed: int = Field(default=0, ge=0, le=2**31 - 1)
    c_grid: list[Annotated[float, Field(gt=0, le=1e6)]] | None = Field(default=None, min_length=1, max_length=20)
    max_iter: int = Field(default=1000, ge=10, le=100_000)
    knn_k: int = Field(default=20, ge=1, le=1000)

    def inputs(self) -> list[Any]:
        return [self.embedding_set]

    def params(self) -> dict[str, Any]:
        return self.model_dump(exclude={"embedding_set"}, exclude_none=True)


class SimilarityIn(_Pair):
    k: int = Field(default=10, ge=1, le=1000)


class CkaMatrixIn(Strict):
    backbone_a: Ref
    backbone_b: Ref
    dataset: Ref
    pooling: Pooling = "avg"
    debiased: bool = False

    def inputs(self) -> list[Any]:
        return [self.backbone_a, self.backbone_b, self.dataset]

    def params(self) -> dict[str, Any]:
        return {"pooling": self.pooling, "debiased": self.debiased}


# ---------------------------------------------------------------- uploads and maps
class UploadOut(BaseModel):
    id: str = Field(description="Pass as upload_id to the map routes.")
    format: str
    width: int
    height: int
    size_bytes: int


class _MapImage(Strict):
    backbone: Ref
    image_id: Id | None = Field(default=None, description="A catalog image (or give upload_id).")
    upload_id: UploadId | None = Field(default=None, description="An upload from POST /api/v1/uploads.")
    probe_dataset: Ref | None = Field(default=None, description="Data set whose linear probe is the head, for "
                                                                "backbones without a classifier.")

    @model_validator(mode="after")
    def _one_image(self):
        if (self.image_id is None) == (self.upload_id is None):
            raise ValueError("give exactly one of image_id (a catalog image) and upload_id (an upload)")
        return self

    def job_params(self) -> dict[str, Any]:
        return self.model_dump(exclude_none=True)


class HeatmapIn(_MapImage):
    tap: TapName = "conv5"
    method: Literal["mean", "gradcam", "gradcam++", "hirescam", "xgradcam", "layercam", "eigencam"] = "mean"
    target: Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=r"^[^\x00-\x1f]+$")] | None = \
        Field(default=None, description="Class name or index to explain (Grad-CAM methods); default: the "
                                        "top-scoring class, named in the job's result.")
    top_channels: int = Field(default=0, ge=0, le=4096)


MapScale = Literal["relative", "absolute", "drop"]


class MaskoutIn(_MapImage):
    target: Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=r"^[^\x00-\x1f]+$")]
    size: int = Field(default=60, ge=4, le=1024)
    stride: int = Field(default=8, ge=1, le=1024)
    fill: Literal["zero", "mean", "blur"] = "zero"
    mean_pixel: tuple[Annotated[float, Field(ge=0, le=255)], Annotated[float, Field(ge=0, le=255)],
                      Annotated[float, Field(ge=0, le=255)]] | None = Field(
        default=None, description="RGB 0..255 mean pixel of the data set, for fill='mean'.")
    precision: Literal["fp32", "bf16", "fp16", "mixed"] = Field(default="fp32", description=(
        "fp32: exact. mixed: the first layers (to stride 8) and the head in fp32, the rest in bf16 (close to "
        "exact, faster on hardware with fast bf16). bf16 / fp16: everything but the head in that precision."))
    approx_margin: int | None = Field(default=None, ge=0, le=64, description=(
        "Faster, approximate: drop the mask's effect beyond this many cells of its footprint at every layer. "
        "Omit for the exact map."))
    scale: MapScale = Field(default="relative", description=(
        "Overlay colours: relative (the map's own probability range), absolute (0..1) or drop (the fall from "
        "the unmasked probability); the overlay's colour bar states the values."))


# ---------------------------------------------------------------- training runs
TrainParam = Annotated[str, StringConstraints(pattern=r"^[a-z_0-9]{1,64}$")]
TrainValue = str | int | float | bool | list[int] | list[float] | None


class TrainIn(Strict):
    """Pre-train a backbone: ``task`` cls (ResNet + linear classifier) or det (Faster R-CNN, the study's head)."""

    task: Literal["cls", "det"]
    dataset: Ref
    val_dataset: Ref | None = None
    preset: Literal["cpu-demo", "paper"] = "cpu-demo"
    init: Ref | None = Field(None, description="Registered backbone whose trunk to start from (default: seeded random).")
    classes: list[Annotated[str, StringConstraints(min_length=1, max_length=200)]] | None = Field(None, max_length=1000)
    name: Name | None = None
    restart: bool = False
    params: dict[TrainParam, TrainValue] = Field(default_factory=dict, max_length=64,
                                                 description="Any training parameter over the preset's values "
                                                             "(lr, epochs, batch_size, image_size, seed, ...).")
    holdout_classes: list[Annotated[str, StringConstraints(min_length=1, max_length=200)]] | None = Field(
        None, max_length=1000, description="Classes left out of pre-training (study Table 2): images with a label "
                                           "or any box of one are removed, and the classes with them.")

    def train_params(self) -> dict[str, Any]:
        """``params`` with ``holdout_classes`` folded in (it is a training parameter like the others)."""
        return {**self.params, **({"holdout_classes": list(self.holdout_classes)} if self.holdout_classes else {})}

    def job_params(self) -> dict[str, Any]:
        return {**self.model_dump(exclude={"holdout_classes"}), "params": self.train_params()}


class FinetuneIn(Strict):
    """Fine-tune a backbone: ``task`` det (new heads; AP at IoU 0.1..0.9), cls (the whole network; top-1) or seg
    (torchvision's DeepLabV3 head; mIoU and trimap / anti-trimap accuracy; needs segmentation masks)."""

    task: Literal["cls", "det", "seg"]
    backbone: Ref
    dataset: Ref
    test_dataset: Ref | None = None
    preset: Literal["cpu-demo", "paper"] = "cpu-demo"
    classes: list[Annotated[str, StringConstraints(min_length=1, max_length=200)]] | None = Field(None, max_length=1000)
    name: Name | None = None
    restart: bool = False
    params: dict[TrainParam, TrainValue] = Field(default_factory=dict, max_length=64)


class RunOut(BaseModel):
    id: int
    name: str
    task: Literal["cls", "det", "finetune-cls", "finetune-det", "finetune-seg"]
    preset: str
    state: Literal["running", "done", "failed", "cancelled"]
    iteration: int
    total_iterations: int
    progress: float
    message: str
    error: str | None
    config: dict[str, Any]
    result: dict[str, Any]
    classes: list[str]
    init: str
    dataset_id: int | None
    test_dataset_id: int | None
    backbone_id: int | None
    job_id: int | None
    fingerprint: str | None
    created_at: str | None
    finished_at: str | None


class RunDetailOut(RunOut):
    """A run with its metrics log: ``train`` rows (thinned to at most ``max_points``) and every ``eval`` row."""

    metrics: list[dict[str, Any]]
