"""Reading exported ONNX models: an ONNX Runtime session plus the metadata that travels inside the file.

Only numpy and onnxruntime are needed here (no torch), a first step towards serving ONNX
models from a slim install.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..errors import CheckpointError, brief
from ..model_meta import meta_tta

META_KEY = "scenetag"
INPUT, OUTPUT = "images", "probabilities"
# What travels with an exported model (in the file and in its JSON sidecar).
PORTABLE_KEYS = ("classes", "thresholds", "temperatures", "preprocessing", "backbone", "head", "members", "fallback", "metrics", "format_version", "scenetag_version")


def portable_meta(meta: dict[str, Any]) -> dict[str, Any]:
    """The part of a checkpoint's metadata an exported model carries, with its TTA setting made explicit."""
    return {k: meta[k] for k in PORTABLE_KEYS if k in meta} | {"tta": meta_tta(meta)}


def sidecar_path(model_path: Path | str) -> Path:
    """The JSON file written beside an exported model."""
    return Path(model_path).with_suffix(".json")


def load_onnx(path: Path | str):
    """(ONNX Runtime session, metadata) from an exported file; torch is not needed."""
    import onnxruntime as ort

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: model file not found")
    try:
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own exception types
        raise CheckpointError(f"{path}: not a readable ONNX model ({brief(e)[:200]})") from None
    props = sess.get_modelmeta().custom_metadata_map
    if META_KEY in props:
        meta = json.loads(props[META_KEY])
    elif sidecar_path(path).is_file():
        meta = json.loads(sidecar_path(path).read_text())
    else:
        raise CheckpointError(f"{path}: no scenetag metadata (not exported by scenetag export?)")
    return sess, meta
