"""scenetag: multi-label natural scene tagging (train, evaluate, explain, serve, export)."""
from __future__ import annotations

__version__ = "0.1.0"

from .data import DataError, MultiLabelDataset, load_dataset  # noqa: E402

__all__ = ["DataError", "MultiLabelDataset", "load_dataset", "__version__"]
