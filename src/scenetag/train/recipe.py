"""The training recipe (head, then progressive unfreezing; LR finder, one-cycle, discriminative LRs)
run on cached activations, so it takes minutes on a CPU.

Phase ``i`` trains ``pieces[k_i:]`` + head, where ``k_i`` is chosen so those pieces
hold about ``phase.unfreeze`` of the backbone's parameters. The frozen part's
output for every (image, view) is computed once (see :mod:`scenetag.train.cache`).
A run is: prepare -> write the run files -> each phase -> curves -> finalize -> result.json.
"""
from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import logging
import os
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from torch import nn

from ..checkpoint import read_checkpoint
from ..config import Config, config_diff, config_to_yaml, load_config, with_absolute_paths
from ..data.dataset import MultiLabelDataset
from ..data.layouts import load_dataset
from ..data.splits import Split
from ..errors import CheckpointError, ConfigError
from ..io import atomic_write_json, atomic_write_text
from ..report.figures import plot_training_curves
from ..runs import RunDir, locked
from .distill import load_teacher, soft_targets
from .finalize import finalize
from .loop import EpochCallback, find_lr, run_phase
from .losses import make_loss
from .dashboard import write_dashboard
from .saver import CheckpointSaver, best_row
from .setup import TrainingSetup, phase_boundaries, prepare, versions
from .rundata import check_data, record_data
from .state import TrainState

log = logging.getLogger(__name__)


def write_run_files(cfg: Config, run: RunDir, split: Split, ds: MultiLabelDataset) -> None:
    """What the run is, written before training: config, versions, seed, split, which data."""
    run.path.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run.config, config_to_yaml(cfg))
    record_data(run, ds)
    atomic_write_json(run.versions, versions() | {"seed": cfg.train.seed})
    atomic_write_text(run.seed, f"{cfg.train.seed}\n")
    atomic_write_json(run.split, split.as_dict())


def cache_dir_of(cfg: Config, run: RunDir) -> Path:
    """``train.cache_dir`` when set (shared between runs; keys keep caches apart), else the run's own."""
    return Path(cfg.train.cache_dir) if cfg.train.cache_dir else run.cache


def load_resume(run: RunDir) -> tuple[Config, TrainState, Split]:
    """Config, training state and split of an interrupted run."""
    if not run.last.is_file():
        raise ConfigError(f"{run}: nothing to resume (no last.pt)")
    cfg = load_config(run.config)  # its paths are absolute (runs written before: relative to the current folder)
    payload = read_checkpoint(run.last)
    if "train_state" not in payload:
        raise CheckpointError(f"{run.last}: holds no training state, so the run cannot be resumed")
    state = TrainState.from_state_dict(payload["train_state"], str(run.last))
    split = Split.read(run.split)
    log.info("resuming %s at phase %d epoch %d", run, state.phase + 1, state.epoch)
    return cfg, state, split


def start_or_resume(cfg: Config | None, run: RunDir, resume: bool, split: Split | None) -> tuple[Config, TrainState, Split | None]:
    if resume:
        if run.is_finished():
            raise ConfigError(f"{run}: the run is finished ({run.result.name}); nothing to resume")
        return load_resume(run)
    if run.is_finished():  # recognised by its result, so deleting last.pt (only for resuming) cannot expose best.pt
        raise ConfigError(f"{run} already holds a finished run ({run.result.name}); pass another --out or remove it")
    if run.is_started():
        raise ConfigError(f"{run} already holds a run (last.pt); use --resume {run} or another --out")
    return cfg, TrainState(), split


def _run_lock(run: RunDir):
    """Rank 0 (or the only process) holds the run folder while training; the other ranks write nothing."""
    return locked(run) if int(os.environ.get("RANK", "0")) == 0 else contextlib.nullcontext(run)


def run_phases(setup: TrainingSetup, run: RunDir, state: TrainState, progress: bool, callbacks: Sequence[EpochCallback]) -> None:
    """Every phase not finished yet, in order."""
    loss_fn = make_loss(setup.cfg, setup.labels("train")).to(setup.device)
    saver = CheckpointSaver(run, writes=setup.dist.is_main)
    for phase_index, boundary in enumerate(phase_boundaries(setup.model, setup.cfg)):
        epochs = setup.cfg.train.phases[phase_index].epochs_run
        if not epochs or state.phase_done(phase_index, epochs):
            continue  # a phase of 0 epochs is skipped (a refit keeps the phases after its stop that way)
        if phase_index > state.phase:
            state.phase, state.epoch = phase_index, 0
        run_phase(setup, phase_index, boundary, run, state, loss_fn, saver, progress, callbacks)


def train(cfg: Config | None, run_dir: Path | str, resume: bool = False, progress: bool = True, split: Split | None = None, cache_all_images: bool = False, callbacks: Sequence[EpochCallback] = (), train_parts: Sequence[np.ndarray] = ()) -> dict[str, Any]:
    """Run the configured recipe into ``run_dir``; returns the final test (or val) metrics.

    ``split`` overrides the seeded train/val/test split (cross-validation folds, refits);
    ``cache_all_images`` caches every image so folds share one cache; ``train_parts`` caches
    the training images in these pieces (see :func:`scenetag.train.setup.prepare`).
    """
    run = RunDir(run_dir)
    with _run_lock(run):
        return _train_locked(cfg, run, resume, progress, split, cache_all_images, callbacks, train_parts)


def _train_locked(cfg: Config | None, run: RunDir, resume: bool, progress: bool, split: Split | None, cache_all_images: bool, callbacks: Sequence[EpochCallback], train_parts: Sequence[np.ndarray] = ()) -> dict[str, Any]:
    cfg, state, split = start_or_resume(cfg if cfg is None else with_absolute_paths(cfg), run, resume, split)
    t_start = time.time()
    ds = load_dataset(cfg.data.path, cfg.data.labels, cfg.data.format)
    if resume:
        check_data(run, ds, split)
    teacher = load_teacher(cfg.train.teacher, ds.classes) if cfg.train.teacher else None  # fails before any caching
    setup = prepare(cfg, cache_dir_of(cfg, run), progress, ds=ds, split=split, cache_all_images=cache_all_images, train_parts=train_parts)
    if teacher is not None:
        setup.train_targets = soft_targets(setup, teacher, cache_dir_of(cfg, run), progress)
    if resume:
        setup.model.load_state_dict(read_checkpoint(run.last)["state_dict"])
    elif setup.dist.is_main:
        write_run_files(cfg, run, setup.split, setup.ds)
    run_phases(setup, run, state, progress, callbacks)
    if state.history and setup.dist.is_main:
        phases = [(p.name, p.epochs_run) for p in cfg.train.phases]
        plot_training_curves(state.history, run.curves, best_row(state.history, phases, cfg.train.select))
    result = finalize(setup, run) | {"train_seconds": round(time.time() - t_start, 1)}
    if setup.dist.enabled:
        log.info("rank %d/%d final weights sha %s", setup.dist.rank, setup.dist.world, weights_digest(setup.model))
    if setup.dist.is_main:
        atomic_write_json(run.result, result)
        write_dashboard(run.path)
    return result


def weights_digest(model: nn.Module) -> str:
    """Hash of every parameter and buffer, to compare models across processes."""
    h = hashlib.sha256()
    for name, t in model.state_dict().items():
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def lr_find_only(cfg: Config, run_dir: Path | str, phase: int = 1, progress: bool = True) -> dict[str, Any]:
    """``scenetag lr-find``: the finder of one phase on its cached activations; returns the suggestion."""
    run = RunDir(run_dir)
    if not 1 <= phase <= len(cfg.train.phases):
        raise ConfigError(f"--phase must be in 1..{len(cfg.train.phases)}")
    one = copy.deepcopy(cfg)
    one.train.phases = [cfg.train.phases[phase - 1]]
    setup = prepare(one, cache_dir_of(one, run), progress)
    boundary = phase_boundaries(setup.model, one)[0]
    setup.model.freeze_until(boundary)
    lr = find_lr(setup, 0, boundary, make_loss(one, setup.labels("train")).to(setup.device), run)
    name = one.train.phases[0].name
    return {"lr": lr, "plot": str(run.lr_find_plot(0, name)), "data": str(run.lr_find_data(0, name))}


def train_or_resume(cfg: Config, run_dir: Path | str, progress: bool = True, split: Split | None = None, train_parts: Sequence[np.ndarray] = (), cache_all_images: bool = False) -> dict[str, Any]:
    """The main job: reuse a finished run with the same config, resume an interrupted one, else train."""
    run = RunDir(run_dir)
    if not run.config.is_file() or not (run.is_started() or run.is_finished()):
        return train(cfg, run, progress=progress, split=split, train_parts=train_parts, cache_all_images=cache_all_images)
    differ = config_diff(load_config(run.config), with_absolute_paths(cfg))
    state = "a finished" if run.is_finished() else "an interrupted"
    if differ:
        raise ConfigError(f"{run} holds {state} run with another config ({', '.join(differ)} differ); pass another --out or remove it")
    if split is not None and Split.read(run.split).as_dict() != split.as_dict():
        raise ConfigError(f"{run} holds {state} run with another split; pass another --out or remove it")
    if run.is_finished():
        log.info("%s already holds a finished run with this config; remove it to train again", run)
        return json.loads(run.result.read_text()) | {"reused": True}
    return train(None, run, resume=True, progress=progress, train_parts=train_parts, cache_all_images=cache_all_images)
