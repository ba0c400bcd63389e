"""Training data: samples from the catalog, seeded augmentation, and a resumable distributed sampler.

Public names: :class:`Sample`, :class:`ClassificationData`, :class:`DetectionData`, :class:`SegmentationData`,
:class:`EpochSampler`, :func:`collate_classification`, :func:`collate_detection`, :func:`collate_segmentation`,
:func:`check_samples`.

Every random choice of an augmentation is drawn from a generator seeded by (run seed, epoch, image
index), never from the process's global state: a sample looks the same whichever rank, loader
worker or resumed process draws it. That is what makes a resumed run and a DDP run equal to an
uninterrupted single-process one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset, DistributedSampler

from featscope.extractors.types import Preprocess

Loader = Callable[[Path], Image.Image]
BoxTuple = tuple[str, float, float, float, float]


@dataclass(frozen=True)
class Sample:
    """One training image: its file, image-level label and boxes ``(label, x0, y0, x1, y1)`` in pixels;
    ``occlusion``: per box the fraction hidden by other objects (None: unknown; empty: unknown for all)."""

    path: Path
    label: str | None = None
    boxes: tuple[BoxTuple, ...] = ()
    occlusion: tuple[float | None, ...] = ()


def check_samples(samples: Sequence[Sample], classes: Sequence[str], task: str, what: str) -> None:
    """Refuse data a task cannot learn from, before any work: no images, no labels, no boxes."""
    if not samples:
        raise ValueError(f"{what} has no images; check the data set (featscope dataset list) and the split fractions")
    if task == "cls":
        if all(s.label is None for s in samples):
            raise ValueError(f"{what} has no image labels; classification needs a labelled data set "
                             f"(ImageFolder, CSV with labels, COCO or VOC)")
        labels = {s.label for s in samples if s.label is not None and (not classes or s.label in classes)}
        if not labels:
            raise ValueError(f"{what} has no images of the chosen classes ({', '.join(classes)})")
        if len(labels) < 2 and not classes:
            raise ValueError(f"{what} has a single class; classification needs at least two")
    elif task == "det":
        known = set(classes)
        if not any(b[0] in known for s in samples for b in s.boxes):
            raise ValueError(f"{what} has no object boxes{' of the chosen classes' if classes else ''}; "
                             f"detection needs a COCO JSON or Pascal VOC data set")


def _seed_for(seed: int, epoch: int, index: int) -> int:
    """One 63-bit seed per (run seed, epoch, image): a fixed mix, so it is the same in every process."""
    x = (seed * 0x9E3779B97F4A7C15 + epoch * 0xBF58476D1CE4E5B9 + index * 0x94D049BB133111EB) & (2**64 - 1)
    x ^= x >> 31
    return x & (2**63 - 1)


def _key(item: int | tuple[int, int]) -> tuple[int, int]:
    return (int(item[0]), int(item[1])) if isinstance(item, tuple) else (int(item), 0)


def _default_loader(path: Path) -> Image.Image:
    from featscope.datasets.images import load_rgb

    return load_rgb(path)


class ClassificationData(Dataset):
    """``(index, epoch)`` -> (uint8 (3, S, S) image, class index).

    ``train=True``: random-resized crop (area fraction ``scale``, aspect 3/4..4/3) to ``size`` and a
    horizontal flip with probability 1/2. ``train=False``: ``preprocess`` (the run's evaluation
    transform, the same one its backbone registers).
    """

    def __init__(self, samples: Sequence[Sample], classes: Sequence[str], *, size: int, train: bool,
                 preprocess: Preprocess, seed: int = 0, scale: tuple[float, float] = (0.35, 1.0), flip: bool = True,
                 loader: Loader | None = None) -> None:
        index = {c: i for i, c in enumerate(classes)}
        self.samples = [s for s in samples if s.label in index]
        self.targets = [index[s.label] for s in self.samples]
        self.size, self.train, self.preprocess, self.seed = size, train, preprocess, seed
        self.scale, self.flip, self.loader = tuple(scale), flip, loader or _default_loader

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, item: int | tuple[int, int]) -> tuple[torch.Tensor, int]:
        i, epoch = _key(item)
        image = self.loader(self.samples[i].path)
        if not self.train:
            return self.preprocess.to_uint8(image), self.targets[i]
        from torchvision.transforms import RandomResizedCrop
        from torchvision.transforms.v2 import functional as TF

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(_seed_for(self.seed, epoch, i))
            top, left, h, w = RandomResizedCrop.get_params(image, list(self.scale), [3 / 4, 4 / 3])
            flip = self.flip and bool(torch.rand(()) < 0.5)
        image = TF.resized_crop(image, top, left, h, w, [self.size, self.size], antialias=True)
        if flip:
            image = TF.horizontal_flip(image)
        return TF.pil_to_tensor(image), self.targets[i]


class DetectionData(Dataset):
    """``(index, epoch)`` -> (uint8 (3, H, W) image, target ``{"boxes": (N, 4) xyxy, "labels": (N,)}``).

    Labels are 1..K (0 is torchvision's background); boxes of other classes and empty boxes are
    dropped. ``train=True`` flips horizontally with probability 1/2. Resizing and normalisation are
    the detector's own (``GeneralizedRCNNTransform``).
    """

    def __init__(self, samples: Sequence[Sample], classes: Sequence[str], *, train: bool, seed: int = 0,
                 flip: bool = True, loader: Loader | None = None) -> None:
        self.samples, self.train, self.seed, self.flip = list(samples), train, seed, flip
        self.index = {c: i + 1 for i, c in enumerate(classes)}
        self.loader = loader or _default_loader

    def __len__(self) -> int:
        return len(self.samples)

    def _kept(self, i: int) -> list[int]:
        return [k for k, b in enumerate(self.samples[i].boxes) if b[0] in self.index and b[3] > b[1] and b[4] > b[2]]

    def occlusion(self, i: int) -> np.ndarray:
        """Per kept box of sample ``i`` (the order of :meth:`target`): its occlusion, NaN where unknown."""
        occ = self.samples[i].occlusion
        return np.array([occ[k] if k < len(occ) and occ[k] is not None else np.nan for k in self._kept(i)],
                        dtype=np.float64)

    def target(self, i: int) -> dict[str, torch.Tensor]:
        """Sample ``i``'s kept boxes and labels, unflipped."""
        kept = [self.samples[i].boxes[k] for k in self._kept(i)]
        boxes = torch.tensor([b[1:] for b in kept], dtype=torch.float32).reshape(-1, 4)
        labels = torch.tensor([self.index[b[0]] for b in kept], dtype=torch.int64)
        return {"boxes": boxes, "labels": labels}

    def __getitem__(self, item: int | tuple[int, int]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        from torchvision.transforms.v2 import functional as TF

        i, epoch = _key(item)
        image = TF.pil_to_tensor(self.loader(self.samples[i].path))
        target = self.target(i)
        if self.train and self.flip:
            g = torch.Generator().manual_seed(_seed_for(self.seed, epoch, i))
            if bool(torch.rand((), generator=g) < 0.5):
                image = image.flip(-1)
                w = float(image.shape[-1])
                b = target["boxes"]
                target["boxes"] = torch.stack([w - b[:, 2], b[:, 1], w - b[:, 0], b[:, 3]], dim=1)
        return image, target


MaskReader = Callable[[Path], "np.ndarray"]


class SegmentationData(Dataset):
    """``(index, epoch)`` -> (uint8 (3, S, S) image, int64 mask).

    The image is resized to ``size`` x ``size`` (bilinear, antialiased; the aspect ratio is not kept) and
    ``train=True`` flips image and mask together with probability 1/2, seeded per (run seed, epoch,
    image). The mask (class indices, 255 = void) comes from ``masks(path)``: resized with nearest
    neighbour to (S, S) when ``train``, at the image's own resolution otherwise (scores are computed
    there, on the logits upsampled to it).
    """

    def __init__(self, samples: Sequence[Sample], masks: MaskReader, *, size: int, train: bool, seed: int = 0,
                 flip: bool = True, loader: Loader | None = None) -> None:
        self.samples, self.masks, self.size, self.train = list(samples), masks, size, train
        self.seed, self.flip, self.loader = seed, flip, loader or _default_loader

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, item: int | tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        from torchvision.transforms.v2 import InterpolationMode
        from torchvision.transforms.v2 import functional as TF

        i, epoch = _key(item)
        path = self.samples[i].path
        image = TF.pil_to_tensor(self.loader(path))
        mask = torch.from_numpy(np.ascontiguousarray(self.masks(path), dtype=np.uint8))
        if tuple(mask.shape) != tuple(image.shape[-2:]):
            raise ValueError(f"the mask of {path} is {tuple(mask.shape)} pixels, the image "
                             f"{tuple(image.shape[-2:])}; masks must match their images")
        image = TF.resize(image, [self.size, self.size], antialias=True)
        if not self.train:
            return image, mask.to(torch.int64)
        mask = TF.resize(mask[None], [self.size, self.size], interpolation=InterpolationMode.NEAREST_EXACT)[0]
        if self.flip:
            g = torch.Generator().manual_seed(_seed_for(self.seed, epoch, i))
            if bool(torch.rand((), generator=g) < 0.5):
                image, mask = image.flip(-1), mask.flip(-1)
        return image, mask.to(torch.int64)


def collate_segmentation(batch: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, Any]:
    """Images stacked; masks stacked when they share a shape (training), else a list (evaluation)."""
    images, masks = zip(*batch)
    same = len({tuple(m.shape) for m in masks}) == 1
    return torch.stack(images), (torch.stack(masks) if same else list(masks))


def collate_classification(batch: list[tuple[torch.Tensor, int]]) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = zip(*batch)
    return torch.stack(images), torch.tensor(labels, dtype=torch.int64)


def collate_detection(batch: list[tuple[torch.Tensor, dict[str, torch.Tensor]]]) -> tuple[list, list]:
    images, targets = zip(*batch)
    return list(images), list(targets)


class EpochSampler(DistributedSampler):
    """torch's ``DistributedSampler`` (the same shuffle on every rank, this rank's share) that yields
    ``(index, epoch)`` and can start part-way through an epoch: the sampler position of a checkpoint.

    With one replica it is the single-process sampler; a batch of B on each of N ranks covers the
    same images as one batch of N*B on one process.
    """

    def __init__(self, n: int, *, num_replicas: int = 1, rank: int = 0, seed: int = 0, shuffle: bool = True) -> None:
        super().__init__(range(n), num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed, drop_last=True)
        self.start = 0

    def set_position(self, epoch: int, start: int) -> None:
        """Begin at ``epoch``, skipping the first ``start`` samples of this rank's share."""
        self.set_epoch(epoch)
        self.start = int(start)

    def __iter__(self):
        order = list(super().__iter__())[self.start:]
        return iter([(i, self.epoch) for i in order])

    def __len__(self) -> int:
        return max(0, self.num_samples - self.start)


def sample_dict(s: Sample) -> dict[str, Any]:
    """JSON-ready form of a sample (for run manifests)."""
    return {"path": str(s.path), "label": s.label, "boxes": [list(b) for b in s.boxes]}
