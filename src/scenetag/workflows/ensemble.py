"""``scenetag ensemble``: several trained checkpoints averaged into one self-describing checkpoint.

The result is an ordinary scenetag checkpoint (an :class:`~scenetag.models.EnsembleNet`
plus metadata listing its members), so ``predict``, ``evaluate``, ``export`` and
``serve`` take it like any model. Typical uses: the K models of ``train --cv K``
(``--ensemble``), or models of different backbones trained on one split
(``scenetag ensemble runs/default/best.pt runs/best/best.pt --tune-on runs/default``).

Thresholds: with ``tune_on`` (a run folder whose val part none of the members
trained on), per-label thresholds are tuned on the ensemble's own val
probabilities and the run's test part, if any, is reported; without it they are
the weighted mean of the members' thresholds.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..checkpoint import load_model, save_checkpoint
from ..data.preprocessing import Preprocessing
from ..errors import CheckpointError, DataError
from ..infer.predictor import Predictor
from ..io import refuse_overwriting
from ..metrics import multilabel_metrics, tune_thresholds
from ..model_meta import MODEL_KEYS, build_meta, meta_tta
from ..models import EnsembleNet, ensemble_net
from ..models.ensemble import ensemble_preprocessing
from ..train.rundata import load_run_parts

log = logging.getLogger(__name__)


def _member_weights(n: int, weights: Sequence[float] | None) -> np.ndarray:
    w = np.ones(n) if not weights else np.asarray(weights, dtype=np.float64)
    if len(w) != n or not np.all(np.isfinite(w)) or (w < 0).any() or w.sum() <= 0:
        raise CheckpointError(f"--weights: need {n} non-negative numbers with a positive sum, got {list(weights or [])}")
    return w / w.sum()


def _load_members(paths: Sequence[Path]) -> tuple[list, list[dict[str, Any]]]:
    models, metas = [], []
    for path in paths:
        if path.suffix == ".onnx":
            raise CheckpointError(f"{path}: ensembles are built from .pt checkpoints (export the ensemble afterwards)")
        model, meta = load_model(path)
        if meta.get("members"):
            raise CheckpointError(f"{path}: is itself an ensemble; list its members instead")
        if meta.get("bag"):  # its input is a bag of views, the ensemble's one image
            raise CheckpointError(f"{path}: a bag model (model.bag) cannot be an ensemble member yet")
        if metas and list(meta["classes"]) != list(metas[0]["classes"]):
            raise CheckpointError(f"{path}: classes {meta['classes']} differ from {paths[0]}'s {metas[0]['classes']}")
        models.append(model)
        metas.append(meta)
    return models, metas


def combine(checkpoints: Sequence[Path | str], weights: Sequence[float] | None = None) -> tuple[EnsembleNet, dict[str, Any]]:
    """Load the members and build the ensemble model and its metadata (thresholds: weighted mean of the members')."""
    paths = [Path(c) for c in checkpoints]
    if len(paths) < 2:
        raise CheckpointError("an ensemble needs at least two checkpoints")
    w = _member_weights(len(paths), weights)
    models, metas = _load_members(paths)
    pps = [Preprocessing.from_dict(m["preprocessing"]) for m in metas]
    ens_pp = ensemble_preprocessing(pps, [str(p) for p in paths])
    # boundary + config: which pieces each member trained, so a distillation can run it from a cache.
    specs = [{k: m.get(k) for k in MODEL_KEYS} | {"weight": float(wi), "source": str(p), "boundary": m.get("boundary"), "config": m.get("config")} for m, wi, p in zip(metas, w, paths)]
    meta = build_meta(
        metas[0]["classes"],
        {"backbone": "ensemble(" + "+".join(s["backbone"] for s in specs) + ")", "head": "ensemble"},
        ens_pp.to_dict(),
        np.average([m["thresholds"] for m in metas], axis=0, weights=w),
        metrics={},
        members=specs,
        threshold_source="weighted mean of the members' thresholds",
        fallback=all(m.get("fallback", True) for m in metas),
        tta=all(meta_tta(m) for m in metas),
    )
    return ensemble_net(meta, models).eval(), meta


def make_ensemble(checkpoints: Sequence[Path | str], out: Path | str, weights: Sequence[float] | None = None, tune_on: Path | str | None = None, progress: bool = True) -> dict[str, Any]:
    """Write one checkpoint averaging ``checkpoints``; returns its path, thresholds and metrics."""
    refuse_overwriting(list(checkpoints), [out])
    model, meta = combine(checkpoints, weights)
    if tune_on:
        parts = {w: ds for w, ds in load_run_parts(tune_on).items() if len(ds)}
        if "val" not in parts:
            raise DataError(f"{tune_on}: its val part is empty; thresholds need validation images")
        predictor = Predictor.from_model(model, meta)
        probs = {w: predictor.dataset_probabilities(ds, progress=progress) for w, ds in parts.items()}
        thresholds = tune_thresholds(parts["val"].labels, probs["val"])
        meta["thresholds"] = [float(x) for x in thresholds]
        meta["threshold_source"] = f"tuned per label on the val part of {tune_on}"
        meta["metrics"] = {w: multilabel_metrics(parts[w].labels, probs[w], thresholds, meta["classes"]) for w in parts}
    path = save_checkpoint(out, model, meta)
    log.info("wrote ensemble of %d models to %s (%s)", len(meta["members"]), path, meta["threshold_source"])
    return {"path": str(path), "thresholds": meta["thresholds"], "threshold_source": meta["threshold_source"], "metrics": meta["metrics"]}
