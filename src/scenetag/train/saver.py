"""What a run writes after every epoch: best.pt when the selection score improves, last.pt with
the training state (for --resume), and metrics.csv. Only rank 0 writes; every write is atomic.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
from torch import nn

from ..checkpoint import save_checkpoint
from ..io import atomic_write_csv
from ..runs import RunDir
from .state import TrainState

# Columns of metrics.csv, one row per epoch.
EPOCH_FIELDS = ["phase", "epoch", "lr", "lr_end", "train_loss", "val_loss", "val_samples_f1", "val_samples_f1_tuned", "val_micro_f1", "val_mAP", "seconds"]


def write_metrics_csv(path, rows: list[dict]) -> None:
    atomic_write_csv(path, [EPOCH_FIELDS] + [[r.get(k, "") for k in EPOCH_FIELDS] for r in rows])


def best_row(history: list[dict[str, Any]], phases: list[tuple[str, int]], select: str) -> int | None:
    """Index in ``history`` of the epoch best.pt holds; ``phases``: (name, epochs) of the recipe's phases."""
    try:
        phase_index, epoch = selected_epoch(history, [n for _, n in phases], select)
    except ValueError:  # not every epoch of the recipe is in the history (an unfinished run)
        return None
    name = phases[phase_index][0]
    return next((i for i, r in enumerate(history) if r["phase"] == name and int(r["epoch"]) == epoch), None)


def selection_score(val_metrics: dict[str, Any], select: str, epochs_done: int) -> float:
    """Higher is better. Without a val part the latest epoch (counted across phases) wins."""
    if not val_metrics:
        return float(epochs_done)
    if select == "loss":  # lower val BCE is better; thresholds are tuned afterwards anyway
        return -val_metrics["bce_loss"]
    return val_metrics["samples_f1"]


def selected_epoch(history: list[dict[str, Any]], epochs_per_phase: list[int], select: str) -> tuple[int, int]:
    """(phase index, epoch from 1) that best.pt holds, replayed from the epoch rows with :meth:`CheckpointSaver.save_epoch`'s rule.

    Rows are rounded to 5 decimals; distinct samples-F1 values of a val part differ by far more.
    """
    if len(history) != sum(epochs_per_phase):
        raise ValueError(f"{len(history)} epoch rows for phases of {epochs_per_phase} epochs")
    phase_of = [(i, e + 1) for i, n in enumerate(epochs_per_phase) for e in range(n)]
    best, chosen = -math.inf, phase_of[0] if phase_of else (0, 0)
    for done, (row, where) in enumerate(zip(history, phase_of), 1):
        has_val = not math.isnan(float(row["val_samples_f1"]))
        val = {"samples_f1": float(row["val_samples_f1"]), "bce_loss": float(row["val_loss"])} if has_val else {}
        score = selection_score(val, select, done)
        if score > best:
            best, chosen = score, where
    return chosen


class CheckpointSaver:
    """Keeps best.pt, last.pt and metrics.csv of one run folder up to date."""

    def __init__(self, run: RunDir, writes: bool):
        self.run = run
        self.writes = writes  # False on ranks other than 0

    def save_epoch(self, model: nn.Module, meta: dict[str, Any], state: TrainState, score: float) -> bool:
        """Record one finished epoch; returns whether it became the best."""
        improved = score > state.best_score
        if improved:
            state.best_score = score
            state.best_boundary = int(meta["boundary"])
        if self.writes:
            if improved:
                save_checkpoint(self.run.best, model, meta)
            save_checkpoint(self.run.last, model, meta, train_state=state.state_dict())
            write_metrics_csv(self.run.metrics_csv, state.history)
        return improved


def untuned_thresholds(n_classes: int) -> np.ndarray:
    """Thresholds of a checkpoint saved during training, before they are tuned on val."""
    return np.full(n_classes, 0.5)
