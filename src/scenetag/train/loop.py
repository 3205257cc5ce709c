"""One phase of the recipe, as a short sequence of named steps:
choose the LR -> build optimizer and schedule -> for each epoch: train_one_epoch -> validate ->
record -> save. A phase trains ``pieces[boundary:]`` + head on cached activations.
"""
from __future__ import annotations

import itertools
import logging
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from ..errors import TrainingError
from ..io import atomic_write_json
from ..metrics import multilabel_metrics, samples_f1, tune_thresholds
from ..report.figures import plot_lr_find
from ..runs import RunDir
from .bags import train_slots
from .batches import autocast_ctx, batches_per_epoch, endless_batches, epoch_batches, mixup, to_device
from .distributed import average_buffers, broadcast
from .lr_find import lr_find
from .optim import discriminative_groups, make_optimizer, one_cycle
from .saver import CheckpointSaver, selection_score, untuned_thresholds
from .setup import TrainingSetup
from .state import TrainState

log = logging.getLogger(__name__)
# Called after every finished (and saved) epoch with the training state and the model, e.g. to stop or to log elsewhere.
EpochCallback = Callable[[TrainState, nn.Module], None]
LR_FLOOR, LR_CEIL = 1e-5, 3e-2  # the finder's valley can land on noise with tiny data: keep it in a sane band


def epoch_seed(seed: int, phase_index: int, epoch: int) -> int:
    """Every epoch's random streams derive from (seed, phase, epoch): resuming draws the same numbers."""
    return int(np.random.SeedSequence([seed, phase_index, epoch + 1000]).generate_state(1)[0])


def find_lr(setup: TrainingSetup, phase_index: int, boundary: int, loss_fn: nn.Module, run: RunDir, fixed: float = 0.0) -> float:
    """LR finder on the cached activations of a phase; saves its plot and data, returns the LR to use.

    ``fixed`` > 0: the phase's configured LR is used instead of the suggestion (both are recorded).
    The sweep restores every state it touched, so training is unchanged by it.
    """
    cfg, model = setup.cfg, setup.model
    phase = cfg.train.phases[phase_index]
    if not setup.dist.is_main:  # rank 0 sweeps on its shard; the others take its answer
        return float(broadcast(None, setup.dist))
    opt = make_optimizer(discriminative_groups(model, boundary, 1e-3, phase.lr_mult), cfg)
    source = endless_batches(setup.train_acts, boundary, setup.layout.train_rows, setup.y_train, cfg.train.batch_size, epoch_seed(cfg.train.seed, phase_index, -1), train_slots(cfg))
    batches = ((to_device(x, setup.device), y.to(setup.device)) for x, y in source)
    torch.manual_seed(epoch_seed(cfg.train.seed, phase_index, -2))
    setup.grad_sync.active = False
    try:
        res = lr_find(model, opt, batches, loss_fn, forward=lambda x: model.forward_from(boundary, x), steps=cfg.train.lr_find_steps)
    finally:
        setup.grad_sync.active = True
    lr = fixed if fixed > 0 else float(np.clip(res.suggestion, LR_FLOOR, LR_CEIL))
    title = f"LR finder, phase {phase_index + 1} ({phase.name})"
    plot_lr_find(res.lrs, res.losses, res.suggestion, res.steepest, run.lr_find_plot(phase_index, phase.name), title, chosen=lr)
    atomic_write_json(run.lr_find_data(phase_index, phase.name), res.to_dict() | {"used": lr, "fixed": fixed > 0})
    return float(broadcast(lr, setup.dist))


def steps_per_epoch(setup: TrainingSetup) -> int:
    """Batches of at least two images per epoch; under torchrun, the same count on every rank."""
    steps = batches_per_epoch(len(setup.layout.train_rows), setup.cfg.train.batch_size)
    if setup.dist.enabled:  # every rank must take the same number of synchronised steps
        t = torch.tensor(steps)
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MIN)
        steps = int(t)
    return steps


@dataclass
class PhaseOptim:
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    steps_per_epoch: int


def phase_optim(setup: TrainingSetup, phase_index: int, boundary: int, lr: float, state: TrainState) -> PhaseOptim:
    """AdamW over discriminative groups with a one-cycle schedule; restored from ``state`` when resuming."""
    t = setup.cfg.train
    phase = t.phases[phase_index]
    opt = make_optimizer(discriminative_groups(setup.model, boundary, lr, phase.lr_mult), setup.cfg)
    steps = steps_per_epoch(setup)
    sched = one_cycle(opt, steps * phase.epochs)
    if state.resumes_inside(phase_index):
        opt.load_state_dict(state.optimizer)
        sched.load_state_dict(state.scheduler)
    scaler = torch.amp.GradScaler(enabled=t.amp == "fp16" and setup.device.startswith("cuda"))
    return PhaseOptim(opt, sched, scaler, steps)


def train_one_epoch(setup: TrainingSetup, boundary: int, optim: PhaseOptim, loss_fn: nn.Module, seed: int, desc: str, progress: bool) -> float:
    """One pass over the training images (one cached view or bag each); returns the mean training loss."""
    t, model = setup.cfg.train, setup.model
    torch.manual_seed(seed)
    rng = np.random.default_rng([seed, setup.dist.rank] if setup.dist.enabled else seed)
    model.train()
    total, n = 0.0, 0
    batches = itertools.islice(epoch_batches(setup.train_acts, boundary, setup.layout.train_rows, setup.y_train, t.batch_size, rng, train_slots(setup.cfg)), optim.steps_per_epoch)
    for x, y in tqdm(batches, total=optim.steps_per_epoch, desc=desc, leave=False, disable=not progress or not setup.dist.is_main):
        x, y = to_device(x, setup.device), y.to(setup.device)
        if t.mixup > 0:
            x, y = mixup(x, y, t.mixup, rng)
        optim.optimizer.zero_grad(set_to_none=True)
        with autocast_ctx(t.amp, setup.device):
            loss = loss_fn(model.forward_from(boundary, x).float(), y)
        if not torch.isfinite(loss):
            raise TrainingError(f"{desc}: the training loss became {float(loss.detach())} (diverged); lower the LR or weight decay, or check the loss settings")
        optim.scaler.scale(loss).backward()
        optim.scaler.step(optim.optimizer)
        optim.scaler.update()
        optim.scheduler.step()
        total += float(loss.detach()) * len(y)
        n += len(y)
    average_buffers(model, setup.dist)
    return total / max(n, 1)


def validate(setup: TrainingSetup, boundary: int) -> dict[str, Any]:
    """Metrics of the val part at threshold 0.5 (empty without a val part), plus ``samples_f1_tuned``:
    samples-F1 at thresholds tuned on the val part itself, as the shipped model decides (optimistic, for the curves)."""
    y_val = setup.labels("val")
    if not len(y_val):
        return {}
    probs = setup.predict_part(boundary, "val")
    mode = setup.cfg.train.threshold_mode
    return multilabel_metrics(y_val, probs, 0.5, setup.ds.classes) | {"samples_f1_tuned": samples_f1(y_val, probs, tune_thresholds(y_val, probs, mode))}


def epoch_row(phase_name: str, epoch: int, lr: float, train_loss: float, val: dict[str, Any], seconds: float, lr_end: float = float("nan")) -> dict[str, Any]:
    """One line of metrics.csv: ``lr`` is the phase's peak (one-cycle) LR, ``lr_end`` the head's LR as the epoch ended."""
    nan = float("nan")
    return {
        "phase": phase_name, "epoch": epoch, "lr": round(lr, 8), "lr_end": float(f"{lr_end:.4g}"), "train_loss": round(train_loss, 5),
        "val_loss": round(val.get("bce_loss", nan), 5), "val_samples_f1": round(val.get("samples_f1", nan), 5), "val_samples_f1_tuned": round(val.get("samples_f1_tuned", nan), 5),
        "val_micro_f1": round(val.get("micro_f1", nan), 5), "val_mAP": round(val.get("mAP", nan), 5), "seconds": round(seconds, 2),
    }  # fmt: skip


def phase_lr(setup: TrainingSetup, phase_index: int, boundary: int, loss_fn: nn.Module, run: RunDir, state: TrainState) -> float:
    """The LR a phase trains with: the one it was using when resumed, else the finder's or the configured one."""
    phase = setup.cfg.train.phases[phase_index]
    if state.resumes_inside(phase_index):
        return state.lr
    if setup.cfg.train.lr_find or not phase.lr:
        # With a fixed phase LR the sweep still runs, for its plot and suggestion in the run folder.
        return find_lr(setup, phase_index, boundary, loss_fn, run, fixed=phase.lr)
    return phase.lr


def run_phase(setup: TrainingSetup, phase_index: int, boundary: int, run: RunDir, state: TrainState, loss_fn: nn.Module, saver: CheckpointSaver, progress: bool = True, callbacks: Sequence[EpochCallback] = ()) -> None:
    """Train phase ``phase_index`` from piece ``boundary`` (LR -> one-cycle), saving every epoch."""
    t = setup.cfg.train
    phase = t.phases[phase_index]
    setup.model.freeze_until(boundary)
    lr = phase_lr(setup, phase_index, boundary, loss_fn, run, state)
    optim = phase_optim(setup, phase_index, boundary, lr, state)
    start = state.epoch if state.resumes_inside(phase_index) else 0
    for epoch in range(start, phase.epochs_run):
        t0 = time.time()
        desc = f"{phase.name} {epoch + 1}/{phase.epochs}"
        train_loss = train_one_epoch(setup, boundary, optim, loss_fn, epoch_seed(t.seed, phase_index, epoch), desc, progress)
        val = validate(setup, boundary)
        row = epoch_row(phase.name, epoch + 1, lr, train_loss, val, time.time() - t0, max(g["lr"] for g in optim.optimizer.param_groups))
        _log_epoch(row, phase.epochs)
        state.history.append(row)
        state.phase, state.epoch, state.lr = phase_index, epoch + 1, lr
        state.optimizer, state.scheduler = optim.optimizer.state_dict(), optim.scheduler.state_dict()
        meta = setup.meta(boundary, untuned_thresholds(len(setup.ds.classes)), {"val": val})
        saver.save_epoch(setup.model, meta, state, selection_score(val, t.select, len(state.history)))
        for callback in callbacks:
            callback(state, setup.model)


def _log_epoch(row: dict[str, Any], epochs: int) -> None:
    log.info(
        "%s epoch %d/%d  train_loss %.4f  val_loss %.4f  val samples-F1 %.4f  micro-F1 %.4f  mAP %.4f  (%.1fs)",
        row["phase"], row["epoch"], epochs, row["train_loss"], row["val_loss"], row["val_samples_f1"], row["val_micro_f1"], row["val_mAP"], row["seconds"],
    )
