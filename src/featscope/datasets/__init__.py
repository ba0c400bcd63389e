"""Datasets: read image collections (ImageFolder, COCO, Pascal VOC, plain folder, CSV) into checked
records, decode images uniformly, and generate the synthetic shapes dataset."""

from featscope.datasets.images import IMAGE_EXTENSIONS, ImageDecodeError, load_rgb, probe_image
from featscope.datasets.readers import FORMATS, DatasetError, detect_format, list_formats, read_dataset
from featscope.datasets.records import Box, DatasetScan, ImageRecord, dataset_fingerprint
from featscope.datasets.synth import SYNTH_CLASSES, SynthDataset, synth_dataset

__all__ = [
    "FORMATS",
    "IMAGE_EXTENSIONS",
    "SYNTH_CLASSES",
    "Box",
    "DatasetError",
    "DatasetScan",
    "ImageDecodeError",
    "ImageRecord",
    "SynthDataset",
    "dataset_fingerprint",
    "detect_format",
    "list_formats",
    "load_rgb",
    "probe_image",
    "read_dataset",
    "synth_dataset",
]
