"""Self-describing checkpoints: weights + everything needed to predict, saved atomically.

A checkpoint holds the model weights, class names, backbone and head, the
preprocessing, per-label thresholds, the config, metrics, and format/package
versions. It is loaded with ``torch.load(weights_only=True)``, so a file that
tries to run code on load is refused.
"""
from __future__ import annotations

import logging
import pickle
from pathlib import Path
from typing import Any

import torch

from .version import __version__
from .errors import CheckpointError, brief
from .io import atomic_path
from .model_meta import FORMAT_VERSION, validate_meta
from .models import from_meta

log = logging.getLogger(__name__)


def save_checkpoint(path: Path | str, model: torch.nn.Module, meta: dict[str, Any], train_state: dict[str, Any] | None = None) -> Path:
    """Write ``{weights, meta, train_state}`` to ``path`` via a temp file and ``os.replace``."""
    payload = {
        "format_version": FORMAT_VERSION,
        "scenetag_version": __version__,
        "meta": meta,
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
    }
    if train_state is not None:
        payload["train_state"] = train_state
    try:
        with atomic_path(path) as tmp:
            torch.save(payload, tmp)
    except RuntimeError as e:  # torch's writer reports a full disk as "[enforce fail ...]"
        raise CheckpointError(f"{path}: could not write the checkpoint ({brief(e)}; is the disk full?); the previous file is unchanged") from None
    return Path(path)


def _unpickler_detail(message: str) -> str:
    """The line of torch's weights_only error that says what was refused (the rest is generic advice)."""
    text = message.split("WeightsUnpickler error:", 1)[-1]
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    skip = ("Weights only load failed", "Please file an issue", "Check the documentation")
    useful = [ln for ln in lines if not ln.startswith(skip)]
    return useful[0] if useful else (lines[0] if lines else "unreadable")


def read_checkpoint(path: Path | str) -> dict[str, Any]:
    """The raw payload, safely loaded and version-checked."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: empty file (0 bytes), not a checkpoint")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        detail = _unpickler_detail(str(e))
        if "global" not in detail.lower():  # e.g. "Unsupported operand": not a pickle at all
            raise CheckpointError(f"{path}: not a readable checkpoint (not a PyTorch file: {detail})") from None
        raise CheckpointError(
            f"{path}: refused: the file contains objects that are not plain weights/metadata "
            f"(possibly code that would run on load); only weights_only checkpoints are accepted ({detail})"
        ) from None
    except Exception as e:  # torch.load raises many types (KeyError, EOFError, ...) for garbage
        raise CheckpointError(f"{path}: not a readable checkpoint (truncated or corrupt: {brief(e)})") from None
    if not isinstance(payload, dict) or "state_dict" not in payload or "meta" not in payload:
        raise CheckpointError(f"{path}: not a scenetag checkpoint (no state_dict/meta)")
    version = payload.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(f"{path}: checkpoint format version {version}, this scenetag reads version {FORMAT_VERSION}")
    return payload


def load_model(path: Path | str) -> tuple[torch.nn.Module, dict[str, Any]]:
    """A ready model (eval mode) and its metadata; nothing else is needed to predict."""
    payload = read_checkpoint(path)
    meta = validate_meta(payload["meta"], str(path))
    model = from_meta(meta)
    try:
        model.load_state_dict(payload["state_dict"])
    except RuntimeError as e:
        raise CheckpointError(f"{path}: weights do not fit the described model ({brief(e)})") from None
    return model.eval(), meta
