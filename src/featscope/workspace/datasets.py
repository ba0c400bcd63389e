"""Registering and listing data sets: a reader's scan becomes catalog rows."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import func, select

from featscope.catalog import Dataset, Image
from featscope.datasets import Box, DatasetScan, read_dataset, synth_dataset
from featscope.datasets.masks import CocoMasks, MaskSet, VocMasks
from featscope.workspace.context import Context, NotFound


@dataclass(frozen=True)
class DatasetInfo:
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
    created: bool = False  # True when this call registered it (False: already known, nothing changed)

    @classmethod
    def of(cls, row: Dataset, created: bool = False) -> "DatasetInfo":
        return cls(row.id, row.name, row.version, row.format, row.root, row.n_images, row.n_skipped,
                   list(row.classes), row.fingerprint, row.summary, created)


def add_dataset(ctx: Context, path: str | Path, *, name: str | None = None, format: str = "auto",
                images_root: str | Path | None = None, split: str | None = None, verify: str = "header",
                progress: Callable[[int, int], None] | None = None) -> DatasetInfo:
    """Scan ``path`` and register it. Same name and same content: the existing row. Changed content: a new version."""
    path = Path(path).expanduser().resolve()
    if images_root is not None:  # absolute, so a worker or server in another folder finds the images
        images_root = Path(images_root).expanduser().resolve()
    scan = read_dataset(path, format, images_root=images_root, split=split, verify=verify, progress=progress)
    name = name or _default_name(path)
    with ctx.session() as s:
        latest = s.scalars(select(Dataset).where(Dataset.name == name).order_by(Dataset.version.desc())).first()
        if latest is not None and latest.fingerprint == scan.fingerprint:
            return DatasetInfo.of(latest)
        row = _dataset_row(scan, name, path, version=(latest.version + 1) if latest else 1)
        s.add(row)
        s.flush()
        s.add_all(_image_rows(row.id, scan))
        s.flush()
        return DatasetInfo.of(row, created=True)


def _default_name(path: Path) -> str:
    return path.stem if path.is_file() else path.name


def _dataset_row(scan: DatasetScan, name: str, source: Path, version: int) -> Dataset:
    return Dataset(
        name=name, version=version, root=str(scan.root), source_path=str(source), format=scan.format,
        annotations=str(scan.annotations) if scan.annotations else None, fingerprint=scan.fingerprint,
        n_images=len(scan.images), n_skipped=len(scan.skipped), classes=list(scan.classes),
        summary=scan.summary(), skipped_reasons=scan.skipped_reasons(), warnings=list(scan.warnings)[:1000],
    )


def _image_rows(dataset_id: int, scan: DatasetScan) -> list[Image]:
    def row(rec, position: int | None) -> Image:
        return Image(
            dataset_id=dataset_id, position=position, relpath=rec.relpath, label=rec.label, width=rec.width,
            height=rec.height, size_bytes=rec.size_bytes, mtime_ns=rec.mtime_ns, error=rec.error,
            boxes=[b.to_row() for b in rec.boxes],
        )

    return [row(r, i) for i, r in enumerate(scan.images)] + [row(r, None) for r in scan.skipped]


def synth(ctx: Context, out_dir: str | Path, *, name: str = "synth", n_scenes: int = 200, n_per_class: int = 30,
          size: int = 128, seed: int = 0, progress: Callable[[int, int], None] | None = None) -> list[DatasetInfo]:
    """Generate the synthetic data set and register both halves: ``<name>-scenes`` (COCO) and ``<name>-objects``."""
    result = synth_dataset(Path(out_dir), n_scenes=n_scenes, n_per_class=n_per_class, size=size, seed=seed, progress=progress)
    return [
        add_dataset(ctx, result.coco_json, name=f"{name}-scenes", format="coco", images_root=result.scenes_dir),
        add_dataset(ctx, result.classification_dir, name=f"{name}-objects", format="imagefolder"),
    ]


def study(ctx: Context, out_dir: str | Path, *, name: str = "study", progress: Callable[[int, int], None] | None = None,
          **counts: int) -> list[DatasetInfo]:
    """Generate the study's synthetic sets (:func:`featscope.datasets.study.study_datasets`) and register each
    as ``<name>-<part>``: pretrain, pretrain-val, target-train, target-test (COCO) and single, several, small."""
    from featscope.datasets.study import study_datasets

    sets = study_datasets(Path(out_dir), progress=progress, **counts)
    infos = [add_dataset(ctx, path, name=f"{name}-{part}", format="coco", images_root=path.with_suffix(""))
             for part, path in sets.coco.items()]
    infos += [add_dataset(ctx, path, name=f"{name}-{part}", format="imagefolder") for part, path in sets.folders.items()]
    return infos


def list_datasets(ctx: Context, all_versions: bool = False) -> list[DatasetInfo]:
    """Registered data sets, newest version of each name (or every version)."""
    with ctx.session() as s:
        q = select(Dataset).order_by(Dataset.name, Dataset.version)
        if not all_versions:
            latest = select(Dataset.name, func.max(Dataset.version).label("v")).group_by(Dataset.name).subquery()
            q = q.join(latest, (Dataset.name == latest.c.name) & (Dataset.version == latest.c.v))
        return [DatasetInfo.of(r) for r in s.scalars(q)]


def get_dataset(ctx: Context, ref: str | int) -> Dataset:
    """A data set by id, ``name`` (newest version) or ``name@version``."""
    with ctx.session() as s:
        row = None
        if isinstance(ref, int) or str(ref).isdigit():
            row = s.get(Dataset, int(ref))
        if row is None:
            name, _, version = str(ref).partition("@")
            q = select(Dataset).where(Dataset.name == name)
            q = q.where(Dataset.version == int(version)) if version.isdigit() else q.order_by(Dataset.version.desc())
            row = s.scalars(q).first()
        if row is None:
            known = ", ".join(sorted({d.name for d in s.scalars(select(Dataset))})) or "none yet"
            raise NotFound(f"no data set {ref!r} (known: {known}); add one with `featscope dataset add PATH` "
                           f"(POST /api/v1/datasets)")
        return row


@dataclass(frozen=True)
class ImageInfo:
    id: int
    dataset_id: int
    relpath: str
    label: str | None
    width: int | None
    height: int | None
    n_boxes: int
    error: str | None


def list_images(ctx: Context, dataset: str | int, *, limit: int | None = None, offset: int = 0,
                skipped: bool = False) -> list[ImageInfo]:
    """A page of a data set's readable images in position order (or of its skipped files)."""
    ds = get_dataset(ctx, dataset)
    with ctx.session() as s:
        q = select(Image).where(Image.dataset_id == ds.id)
        q = q.where(Image.position.is_(None)).order_by(Image.relpath) if skipped else \
            q.where(Image.position.is_not(None)).order_by(Image.position)
        rows = s.scalars(q.offset(offset).limit(limit))
        return [ImageInfo(im.id, im.dataset_id, im.relpath, im.label, im.width, im.height, len(im.boxes or []), im.error)
                for im in rows]


def readable_images(ctx: Context, dataset_id: int) -> list[Image]:
    """The data set's readable images in position order (the row order of its embedding arrays)."""
    with ctx.session() as s:
        q = select(Image).where(Image.dataset_id == dataset_id, Image.position.is_not(None)).order_by(Image.position)
        return list(s.scalars(q))


def image_boxes(row: Image) -> list[Box]:
    """A catalog image row's boxes as :class:`Box` values (rows stored before occlusion existed read with None)."""
    return [Box.from_row(b) for b in row.boxes or []]


def readable_relpaths(ctx: Context, dataset_id: int) -> list[str]:
    """Relative paths of the data set's readable images in position order (one column: cheap for millions)."""
    with ctx.session() as s:
        q = (select(Image.relpath).where(Image.dataset_id == dataset_id, Image.position.is_not(None))
             .order_by(Image.position))
        return list(s.scalars(q))


def segmentation(ctx: Context, dataset: str | int | Dataset, *, void_width: int | None = None) -> MaskSet:
    """The data set's per-pixel class masks, read on demand from its own files (never the catalog).

    Pascal VOC sets read ``SegmentationClass/<id>.png`` below their root; COCO sets paint each image's
    ``segmentation`` polygons/RLE from the registered JSON, with a void band ``void_width`` pixels wide
    (:func:`featscope.datasets.masks.render_instances`). Raises ValueError when the data set has none.
    """
    ds = dataset if isinstance(dataset, Dataset) else get_dataset(ctx, dataset)
    what = f"data set {ds.name!r}"
    if ds.format == "voc":
        if not Path(ds.root).is_dir():
            raise ValueError(f"{what} was read from {ds.root}, which no longer exists; register it again")
        try:
            return VocMasks(ds.root, object_classes=list(ds.classes))
        except ValueError as e:
            raise ValueError(f"{what}: {e}") from None
    if ds.format == "coco":
        source = Path(ds.annotations or ds.source_path)
        if not source.is_file():
            raise ValueError(f"{what} was read from {source}, which no longer exists; register it again")
        try:
            return CocoMasks(source, images_root=ds.root, void_width=void_width)
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise ValueError(f"{what}: {e}") from None
    raise ValueError(f"{what} ({ds.format}) has no segmentation masks; segmentation needs Pascal VOC "
                     "SegmentationClass PNGs or COCO polygons/RLE")


def segmentation_coverage(ctx: Context, dataset: str | int | Dataset) -> dict:
    """How many of the data set's readable images have a segmentation mask: ``{"images": k, "of": n,
    "classes": [...], "source": path}``, or ``{"images": 0, "of": n, "reason": why}`` when it has none."""
    ds = dataset if isinstance(dataset, Dataset) else get_dataset(ctx, dataset)
    relpaths = readable_relpaths(ctx, ds.id)
    try:
        masks = segmentation(ctx, ds)
    except ValueError as e:
        return {"images": 0, "of": len(relpaths), "reason": str(e)}
    return {"images": sum(1 for r in relpaths if masks.has(r)), "of": len(relpaths), "classes": list(masks.classes),
            "source": masks.source}
