"""scenetag: multi-label natural scene tagging (train, evaluate, explain, serve, export).

Importing the package is cheap: heavy modules (torch, timm) load only when a
command or function that needs them is used.
"""
from __future__ import annotations

from .errors import DataError, ScenetagError
from .version import __version__

__all__ = ["DataError", "MultiLabelDataset", "ScenetagError", "load_dataset", "__version__"]


def __getattr__(name: str):
    # Lazy, so `import scenetag` (and `scenetag --help`) does not read the data package.
    if name in ("MultiLabelDataset", "load_dataset"):
        from . import data

        return getattr(data, name)
    raise AttributeError(f"module 'scenetag' has no attribute {name!r}")
