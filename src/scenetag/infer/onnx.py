"""Reading exported ONNX models: an ONNX Runtime session plus the metadata that travels inside the file.

Only numpy and onnxruntime are needed here (no torch), a first step towards serving ONNX
models from a slim install.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..errors import CheckpointError, brief
from ..model_meta import meta_tta, validate_meta

META_KEY = "scenetag"
INPUT, OUTPUT = "images", "probabilities"
# What travels with an exported model (in the file and in its JSON sidecar).
PORTABLE_KEYS = ("classes", "thresholds", "temperatures", "preprocessing", "backbone", "head", "head_options", "bag", "bag_pool", "members", "fallback", "metrics", "refit", "format_version", "scenetag_version")


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
    meta = validate_meta(_read_meta(path, sess.get_modelmeta().custom_metadata_map), str(path))
    check_input_size(sess, meta, path)
    return sess, meta


def _read_meta(path: Path, props: dict[str, str]) -> Any:
    """The metadata inside the model file, else its JSON sidecar."""
    source, text = (f"{path} (metadata {META_KEY!r})", props[META_KEY]) if META_KEY in props else (str(sidecar_path(path)), None)
    if text is None:
        if not sidecar_path(path).is_file():
            raise CheckpointError(f"{path}: no scenetag metadata (not exported by scenetag export?)")
        try:
            text = sidecar_path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise CheckpointError(f"{source}: cannot read ({brief(e)})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{source}: not valid JSON ({e.msg}, line {e.lineno})") from None


def check_input_size(sess, meta: dict[str, Any], path: Path) -> None:
    """The graph's fixed input size (if it has one) must be the one its metadata preprocesses to."""
    shape = sess.get_inputs()[0].shape
    size = meta["preprocessing"]["size"]
    bag = meta.get("bag") or []
    if len(shape) != (5 if bag else 4):
        raise CheckpointError(f"{path}: the graph takes {len(shape)}-d inputs but its metadata describes {'a bag of ' + str(len(bag)) + ' views' if bag else 'single images'}")
    if bag and isinstance(shape[1], int) and shape[1] != len(bag):
        raise CheckpointError(f"{path}: the graph takes bags of {shape[1]} views but its metadata names {len(bag)}")
    fixed = [d for d in shape[-2:] if isinstance(d, int)]
    if fixed and any(d != size for d in fixed):
        raise CheckpointError(f"{path}: the graph takes {shape[-2:]} pixel inputs but its metadata says size {size}")
