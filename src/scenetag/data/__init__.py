"""Data: reading labelled image sets (any layout), decoding images, splits, preprocessing, synthetic sets."""
from __future__ import annotations

from ..errors import DataError
from .dataset import MultiLabelDataset, label_stats
from .images import DEFAULT_MAX_PIXELS, IMAGE_EXTS, check_images, decode_image, open_image, to_rgb
from .layouts import DEFAULT_DATA, FORMATS, MIML_CLASSES, load_dataset
from .splits import Split, kfold_indices, kfold_splits, split_dataset

__all__ = [
    "DataError", "MultiLabelDataset", "label_stats", "DEFAULT_MAX_PIXELS", "IMAGE_EXTS", "check_images",
    "decode_image", "open_image", "to_rgb", "DEFAULT_DATA", "FORMATS", "MIML_CLASSES", "load_dataset",
    "Split", "kfold_indices", "kfold_splits", "split_dataset",
]
