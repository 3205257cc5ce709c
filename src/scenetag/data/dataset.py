"""The in-memory data set: image paths, class names and a 0/1 label matrix."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import DataError


@dataclass(frozen=True)
class MultiLabelDataset:
    """Image paths, class names and a 0/1 label matrix (n_images x n_classes)."""

    paths: tuple[Path, ...]
    classes: tuple[str, ...]
    labels: np.ndarray
    root: Path
    source: str = ""
    warnings: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        if self.labels.shape != (len(self.paths), len(self.classes)):
            raise DataError(
                f"label matrix has shape {self.labels.shape}, expected "
                f"({len(self.paths)}, {len(self.classes)})"
            )

    def __len__(self) -> int:
        return len(self.paths)

    def subset(self, indices: Sequence[int]) -> "MultiLabelDataset":
        """A new data set holding only ``indices`` (in that order)."""
        idx = np.asarray(indices, dtype=np.int64)
        return MultiLabelDataset(
            paths=tuple(self.paths[i] for i in idx),
            classes=self.classes,
            labels=self.labels[idx],
            root=self.root,
            source=self.source,
        )

    def label_names(self, i: int) -> list[str]:
        """Names of the positive labels of image ``i``."""
        return [c for c, v in zip(self.classes, self.labels[i]) if v]



def fingerprint(ds: MultiLabelDataset) -> str:
    """Identifies a data set's content: image names (relative to its root), file sizes, classes and labels."""
    h = hashlib.sha256()
    for p in ds.paths:
        try:
            name = str(p.relative_to(ds.root))
        except ValueError:
            name = str(p)
        h.update(f"{name}:{p.stat().st_size}\n".encode())
    h.update(("|".join(ds.classes)).encode())
    h.update(np.ascontiguousarray(ds.labels, dtype=np.uint8).tobytes())
    return h.hexdigest()[:16]


def label_stats(ds: MultiLabelDataset) -> dict:
    """Counts a person wants first: per class, labels per image, combinations."""
    y = ds.labels.astype(int)
    per_image = y.sum(1)
    combos: dict[str, int] = {}
    for row in y:
        key = "+".join(c for c, v in zip(ds.classes, row) if v) or "(none)"
        combos[key] = combos.get(key, 0) + 1
    return {
        "n_images": len(ds),
        "n_classes": len(ds.classes),
        "classes": list(ds.classes),
        "per_class": {c: int(n) for c, n in zip(ds.classes, y.sum(0))},
        "labels_per_image": {str(k): int((per_image == k).sum()) for k in range(int(per_image.max()) + 1)},
        "mean_labels_per_image": float(per_image.mean()),
        "combinations": dict(sorted(combos.items(), key=lambda kv: (-kv[1], kv[0]))),
    }

