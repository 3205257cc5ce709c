"""Ensembles: several trained checkpoints averaged into one self-describing checkpoint.

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
import torch

from . import __version__
from .checkpoint import FORMAT_VERSION, CheckpointError, meta_tta, read_checkpoint, save_checkpoint
from .models import EnsembleNet, build_model
from .transforms import Preprocessing

log = logging.getLogger(__name__)
MEMBER_KEYS = ("backbone", "head", "dropout", "preprocessing", "temperatures", "thresholds")


def ensemble_preprocessing(pps: Sequence[Preprocessing], names: Sequence[str]) -> Preprocessing:
    """The ensemble's input: that of its largest-input member; members must agree on the resize geometry."""
    first = pps[0]
    for pp, name in zip(pps[1:], names[1:]):
        if pp.resize != first.resize or (pp.resize == "crop" and pp.crop_pct != first.crop_pct):
            raise CheckpointError(f"{name}: resize {pp.resize!r} (crop_pct {pp.crop_pct}) differs from {names[0]}'s {first.resize!r} ({first.crop_pct}); members must see the same part of the image")
    return max(pps, key=lambda pp: pp.size)


def _adapters(ens: Preprocessing, pps: Sequence[Preprocessing]) -> tuple[list[int], torch.Tensor, torch.Tensor]:
    """Per member: input size and the affine map from the ensemble's normalisation to the member's."""
    e_mean, e_std = torch.tensor(ens.mean), torch.tensor(ens.std)
    scales = torch.stack([e_std / torch.tensor(pp.std) for pp in pps])
    shifts = torch.stack([(e_mean - torch.tensor(pp.mean)) / torch.tensor(pp.std) for pp in pps])
    return [pp.size for pp in pps], scales, shifts


def ensemble_net(meta: dict[str, Any], members: list[torch.nn.Module] | None = None) -> EnsembleNet:
    """The (untrained unless ``members`` are given) network an ensemble checkpoint describes."""
    specs = meta["members"]
    n_classes = len(meta["classes"])
    if members is None:
        members = [build_model(s["backbone"], weights="none", n_classes=n_classes, head=s["head"], dropout=s.get("dropout", 0.5), quiet=True) for s in specs]
    pps = [Preprocessing.from_dict(s["preprocessing"]) for s in specs]
    sizes, scales, shifts = _adapters(Preprocessing.from_dict(meta["preprocessing"]), pps)
    temps = torch.tensor([s.get("temperatures") or [1.0] * n_classes for s in specs], dtype=torch.float32)
    weights = torch.tensor([float(s["weight"]) for s in specs])
    return EnsembleNet(members, sizes, scales, shifts, weights, temps)


def combine(checkpoints: Sequence[Path | str], weights: Sequence[float] | None = None) -> tuple[EnsembleNet, dict[str, Any]]:
    """Load the members and build the ensemble model and its metadata (thresholds: weighted mean of the members')."""
    from .checkpoint import load_model

    paths = [Path(c) for c in checkpoints]
    if len(paths) < 2:
        raise CheckpointError("an ensemble needs at least two checkpoints")
    w = np.ones(len(paths)) if not weights else np.asarray(weights, dtype=np.float64)
    if len(w) != len(paths) or not np.all(np.isfinite(w)) or (w < 0).any() or w.sum() <= 0:
        raise CheckpointError(f"--weights: need {len(paths)} non-negative numbers with a positive sum, got {list(weights or [])}")
    w = w / w.sum()
    models, metas = [], []
    for p in paths:
        if p.suffix == ".onnx":
            raise CheckpointError(f"{p}: ensembles are built from .pt checkpoints (export the ensemble afterwards)")
        model, meta = load_model(p)
        if meta.get("members"):
            raise CheckpointError(f"{p}: is itself an ensemble; list its members instead")
        if list(meta["classes"]) != list(metas[0]["classes"] if metas else meta["classes"]):
            raise CheckpointError(f"{p}: classes {meta['classes']} differ from {paths[0]}'s {metas[0]['classes']}")
        models.append(model)
        metas.append(meta)
    pps = [Preprocessing.from_dict(m["preprocessing"]) for m in metas]
    ens_pp = ensemble_preprocessing(pps, [str(p) for p in paths])
    specs = [{k: m.get(k) for k in MEMBER_KEYS} | {"weight": float(wi), "source": str(p)} for m, wi, p in zip(metas, w, paths)]
    meta = {
        "classes": list(metas[0]["classes"]),
        "backbone": "ensemble(" + "+".join(s["backbone"] for s in specs) + ")",
        "head": "ensemble",
        "members": specs,
        "preprocessing": ens_pp.to_dict(),
        "thresholds": [float(x) for x in np.average([m["thresholds"] for m in metas], axis=0, weights=w)],
        "threshold_source": "weighted mean of the members' thresholds",
        "fallback": all(m.get("fallback", True) for m in metas),
        "tta": all(meta_tta(m) for m in metas),
        "metrics": {},
        "format_version": FORMAT_VERSION,
        "scenetag_version": __version__,
    }
    return ensemble_net(meta, models).eval(), meta


def make_ensemble(checkpoints: Sequence[Path | str], out: Path | str, weights: Sequence[float] | None = None, tune_on: Path | str | None = None, progress: bool = True) -> dict[str, Any]:
    """``scenetag ensemble``: write one checkpoint averaging ``checkpoints``; returns its path, thresholds and metrics."""
    from .data import DataError
    from .evaluation import load_run_parts, multilabel_metrics, tune_thresholds
    from .predict import Predictor

    model, meta = combine(checkpoints, weights)
    if tune_on:
        parts = {w: ds for w, ds in load_run_parts(tune_on).items() if len(ds)}
        if "val" not in parts:
            raise DataError(f"{tune_on}: its val part is empty; thresholds need validation images")
        pred = Predictor.from_model(model, meta)
        probs = {w: pred.dataset_probabilities(ds, progress=progress) for w, ds in parts.items()}
        th = tune_thresholds(parts["val"].labels, probs["val"])
        meta["thresholds"] = [float(x) for x in th]
        meta["threshold_source"] = f"tuned per label on the val part of {tune_on}"
        meta["metrics"] = {w: multilabel_metrics(parts[w].labels, probs[w], th, meta["classes"]) for w in parts}
    path = save_checkpoint(out, model, meta)
    log.info("wrote ensemble of %d models to %s (%s)", len(meta["members"]), path, meta["threshold_source"])
    return {"path": str(path), "thresholds": meta["thresholds"], "threshold_source": meta["threshold_source"], "metrics": meta["metrics"]}
