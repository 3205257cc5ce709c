"""Export a checkpoint to ONNX (verified against PyTorch) or TorchScript, with its metadata.

The ONNX file outputs probabilities (sigmoid applied) for a dynamic batch of
preprocessed images, (batch, 3, size, size), or for a bag model (metadata ``bag``)
of preprocessed bags, (batch, len(bag), 3, size, size): the views named in ``bag``,
in that order, pooled in the graph. It carries the checkpoint's metadata (classes,
thresholds, preprocessing, backbone, metrics) as the ``scenetag`` metadata
property, plus a JSON sidecar, so ONNX Runtime can run it without a torch model.
"""
from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from ..checkpoint import load_model
from ..errors import ExportError
from ..io import atomic_path, atomic_write_json, refuse_overwriting
from .onnx import INPUT, META_KEY, OUTPUT, portable_meta, sidecar_path

log = logging.getLogger(__name__)


def _sample_batch(meta: dict[str, Any], n: int = 4):
    import torch

    size = int(meta["preprocessing"]["size"])
    g = torch.Generator().manual_seed(0)
    bag = (len(meta["bag"]),) if meta.get("bag") else ()
    return torch.rand(n, *bag, 3, size, size, generator=g) * 2 - 1  # in the normalised input range


def _probability_model(checkpoint: Path | str, out: Path):
    """(model + sigmoid in eval mode, its metadata, a sample batch); the output may not overwrite the checkpoint."""
    import torch

    refuse_overwriting([checkpoint], [out, sidecar_path(out)])
    model, meta = load_model(checkpoint)
    return torch.nn.Sequential(model, torch.nn.Sigmoid()).eval(), meta, _sample_batch(meta)


def export_onnx(checkpoint: Path | str, out: Path | str, opset: int = 17, atol: float = 1e-4) -> dict[str, Any]:
    """Write ``out`` (.onnx) + ``out.json``; fail (leaving nothing) if ONNX Runtime disagrees with PyTorch by > ``atol``."""
    import onnx
    import onnxruntime as ort
    import torch

    out = Path(out)
    prob, meta, x = _probability_model(checkpoint, out)
    with torch.no_grad():
        want = prob(x).numpy()
    portable = portable_meta(meta)
    with atomic_path(out) as tmp:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(prob, (x[:2],), str(tmp), input_names=[INPUT], output_names=[OUTPUT], dynamic_axes={INPUT: {0: "batch"}, OUTPUT: {0: "batch"}}, opset_version=opset, dynamo=False)
        proto = onnx.load(str(tmp))
        entry = proto.metadata_props.add()
        entry.key, entry.value = META_KEY, json.dumps(portable)
        onnx.checker.check_model(proto)
        onnx.save(proto, str(tmp))
        sess = ort.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])
        got = sess.run(None, {INPUT: x.numpy()})[0]
        diff = float(np.abs(got - want).max())
        if not diff <= atol:
            raise ExportError(f"{out}: ONNX Runtime differs from PyTorch by {diff:.2e} (> {atol:.0e}); not written")
    atomic_write_json(sidecar_path(out), portable)
    log.info("exported %s (max abs diff vs PyTorch %.2e)", out, diff)
    return {"path": str(out), "sidecar": str(sidecar_path(out)), "max_abs_diff": diff}


def export_torchscript(checkpoint: Path | str, out: Path | str, atol: float = 1e-5) -> dict[str, Any]:
    """Traced TorchScript module outputting probabilities, metadata in ``extra_files``."""
    import torch

    out = Path(out)
    prob, meta, x = _probability_model(checkpoint, out)
    with torch.no_grad():
        traced = torch.jit.trace(prob, x[:2])
        diff = float((traced(x) - prob(x)).abs().max())
    if not diff <= atol:
        raise ExportError(f"{out}: TorchScript differs from eager by {diff:.2e}; not written")
    portable = portable_meta(meta)
    with atomic_path(out) as tmp:
        torch.jit.save(traced, str(tmp), _extra_files={"scenetag.json": json.dumps(portable)})
    atomic_write_json(sidecar_path(out), portable)
    return {"path": str(out), "sidecar": str(sidecar_path(out)), "max_abs_diff": diff}


