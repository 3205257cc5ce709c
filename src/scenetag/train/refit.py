"""Evaluate, then refit: retrain the evaluated recipe on every labelled image and ship that model.

The evaluated run (``best.pt``) estimates the shipped model's quality on its
held-out test part; nothing can measure the refit on images it trained on, so
that estimate is what final.pt reports. The refit repeats the evaluated run's
schedule -- the same phases and one-cycle lengths, the LRs it used (the LR
finder's picks included) -- on train + val + test, in ``RUN/refit/`` (an
ordinary run folder: interrupted refits resume). ``final.pt`` holds those
weights with the evaluated run's thresholds and temperatures, tuned on its val
part; after ``--cv K`` thresholds are tuned on the out-of-fold predictions of
every image instead, which measured better (docs/experiments.md).
"""
from __future__ import annotations

import csv
import json
import logging
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..checkpoint import load_model, read_checkpoint, save_checkpoint
from ..config import Config, load_config
from ..data.splits import Split
from ..errors import ConfigError
from ..infer.outputs import read_probabilities
from ..metrics import tune_thresholds
from ..runs import RunDir, locked
from .recipe import cache_dir_of, train_or_resume
from .rundata import load_run_data
from .dashboard import write_dashboard
from .saver import selected_epoch

log = logging.getLogger(__name__)
# What final.pt copies from the evaluated best.pt: the decision rule and the quality estimate.
FROM_EVALUATED = ("thresholds", "temperatures", "metrics")


def read_history(run: RunDir) -> list[dict[str, Any]]:
    """The evaluated run's epoch rows (metrics.csv)."""
    if not run.metrics_csv.is_file():
        raise ConfigError(f"{run}: no {run.metrics_csv.name}, so its schedule cannot be repeated")
    with open(run.metrics_csv, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


REFIT_UNTIL = ("epoch", "phase", "all")
# Measured on 5 folds (docs/experiments.md, "Refit"): every phase to the end of its one-cycle gave the best
# refit; stopping at the selected epoch can end mid-cycle, at a high LR.
DEFAULT_UNTIL = "all"


def refit_config(cfg: Config, history: list[dict[str, Any]], until: str = DEFAULT_UNTIL) -> Config:
    """The evaluated run's recipe with the LRs it used, no LR sweep and no held-out parts, trained ``until``:

    ``epoch``: up to the selected epoch (mid-cycle when it was selected there); ``phase``: to the end of
    the selected phase's one-cycle; ``all``: every phase. Phases left out stay, with 0 epochs (skipped),
    so the cache holds the same boundaries and the evaluated run's training cache is found again.
    """
    if until not in REFIT_UNTIL:
        raise ConfigError(f"refit until must be one of {', '.join(REFIT_UNTIL)}, got {until!r}")
    epochs = [p.epochs_run for p in cfg.train.phases]
    phase_index, epoch = selected_epoch(history, epochs, cfg.train.select)
    last = len(epochs) - 1 if until == "all" else phase_index
    starts = np.cumsum([0] + epochs)
    phases = []
    for i, phase in enumerate(cfg.train.phases):
        if i > last:
            phases.append(phase.model_copy(update={"epochs": 0, "stop": 0}))
            continue
        lr = float(history[starts[i]]["lr"]) if epochs[i] else phase.lr  # the finder's pick when it chose
        stop = epoch if until == "epoch" and i == phase_index and epoch < phase.epochs else phase.stop
        phases.append(phase.model_copy(update={"lr": lr, "stop": stop}))
    out = cfg.model_copy(deep=True)
    out.train.phases = phases
    out.train.lr_find = False
    out.data.val = out.data.test = 0.0
    return out


def refit_split(split: Split) -> tuple[Split, list[np.ndarray]]:
    """Every labelled image in training, and the pieces to cache it in (the evaluated run's training images first)."""
    held = np.concatenate([split.val, split.test]).astype(np.int64)
    every = np.concatenate([split.train, held])
    empty = np.array([], dtype=np.int64)
    return Split(every, empty, empty), [split.train, held]


def final_meta(evaluated: dict[str, Any], refitted: dict[str, Any], n_images: int, cfg: Config) -> dict[str, Any]:
    """final.pt's self-description: the refit's network, the evaluated run's thresholds and estimate."""
    meta = {k: v for k, v in refitted.items() if k not in FROM_EVALUATED} | {k: evaluated[k] for k in FROM_EVALUATED if k in evaluated}
    phases = cfg.train.phases
    meta["refit"] = {
        "n_images": int(n_images),
        "metrics_are": "the held-out estimate of the evaluated model(s): the same recipe trained without the images scored",
        "schedule": [{"name": p.name, "lr": p.lr, "epochs": p.epochs, "stop": p.stop} for p in phases],
    }
    return meta


def one_process() -> None:
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ConfigError("a refit runs in one process: after torchrun, run `scenetag refit RUN` on its own")


def refit(run_dir: Path | str, progress: bool = True) -> dict[str, Any]:
    """Retrain the finished run in ``run_dir`` on all its images; writes ``RUN/final.pt`` and returns what it did."""
    run = RunDir(run_dir)
    one_process()
    if not run.is_finished():
        raise ConfigError(f"{run}: no finished run to refit ({run.result.name} missing); train it first")
    with locked(run):
        cfg = load_config(run.config)
        _, split = load_run_data(run)  # the data must still be the run's
        rcfg = refit_config(cfg, read_history(run))
        rcfg.train.cache_dir = rcfg.train.cache_dir or str(cache_dir_of(cfg, run).absolute())  # reuse its training cache
        whole, parts = refit_split(split)
        log.info("refit on all %d images: %s", len(whole.train), ", ".join(f"{p.name} {p.epochs_run} of {p.epochs} epochs at lr {p.lr:g}" for p in rcfg.train.phases))
        result = train_or_resume(rcfg, run.refit, progress=progress, split=whole, train_parts=parts)
        model, refitted = load_model(run.refit.best)
        evaluated = read_checkpoint(run.best)["meta"]
        save_checkpoint(run.final, model, final_meta(evaluated, refitted, len(whole.train), rcfg))
    write_dashboard(run.path)  # it now links final.pt
    return {"final": str(run.final), "n_images": len(whole.train), "train_seconds": result.get("train_seconds"), "reused": bool(result.get("reused"))}


def cv_refit_config(fold_cfgs: Sequence[Config], histories: Sequence[list[dict[str, Any]]]) -> Config:
    """One refit schedule after K folds: every phase to the end (the folds share the recipe), each phase at the
    median of the LRs the folds used (the LR finder picks the head's per fold)."""
    per_fold = [refit_config(cfg, history) for cfg, history in zip(fold_cfgs, histories)]
    out = per_fold[0].model_copy(deep=True)
    for i, phase in enumerate(out.train.phases):
        phase.lr = float(np.median([c.train.phases[i].lr for c in per_fold]))
    return out


def out_of_fold(cv: RunDir, k: int, labels: np.ndarray, classes: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """(labels, probabilities) of every image from the fold model that did not train on it."""
    ids = [Split.read(cv.fold(i).split).test for i in range(k)]
    probs = np.concatenate([read_probabilities(cv.fold(i).test_predictions, classes) for i in range(k)])
    return labels[np.concatenate(ids)], probs


def refit_after_cv(cv_dir: Path | str, k: int, progress: bool = True) -> dict[str, Any]:
    """After ``train --cv K``: retrain on every image with the folds' median LRs; thresholds tuned on the
    out-of-fold predictions of all images; ``OUT/final.pt`` reports the K-fold mean as its estimate."""
    cv = RunDir(cv_dir)
    one_process()
    folds = [cv.fold(i) for i in range(k)]
    unfinished = [str(f) for f in folds if not f.is_finished()]
    if unfinished or not cv.cv_summary.is_file():
        raise ConfigError(f"{cv}: the cross-validation is not finished ({', '.join(unfinished) or cv.cv_summary.name}); run it first")
    cfgs = [load_config(f.config) for f in folds]
    if cfgs[0].train.calibrate:
        raise ConfigError("train.calibrate is not supported by a refit after --cv (fold temperatures differ); refit one run instead")
    rcfg = cv_refit_config(cfgs, [read_history(f) for f in folds])
    ds, _ = load_run_data(folds[0])
    whole = Split(np.arange(len(ds)), np.array([], dtype=np.int64), np.array([], dtype=np.int64))
    with locked(cv):
        result = train_or_resume(rcfg, cv.refit, progress=progress, split=whole, cache_all_images=True)
        y, probs = out_of_fold(cv, k, ds.labels, ds.classes)
        thresholds = tune_thresholds(y, probs, rcfg.train.threshold_mode)
        summary = json.loads(cv.cv_summary.read_text())
        evaluated = {"thresholds": thresholds.tolist(), "metrics": {"cv": {"k": k, "mean": summary["mean"], "std": summary["std"]}}}
        model, refitted = load_model(cv.refit.best)
        save_checkpoint(cv.final, model, final_meta(evaluated, refitted, len(ds), rcfg) | {"threshold_source": f"tuned on the out-of-fold predictions of all {len(ds)} images"})
    return {"final": str(cv.final), "n_images": len(ds), "train_seconds": result.get("train_seconds"), "reused": bool(result.get("reused"))}
