"""Training progress that must survive a restart, as one typed object (Lightning-style state_dict).

Random streams are not part of it: every epoch reseeds from (seed, phase,
epoch), so a resumed run draws exactly the numbers an uninterrupted one draws.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from ..errors import CheckpointError

# Keys of train_state written by earlier versions that nothing needs (kept readable).
_OBSOLETE_KEYS = ("rng", "lr_found")


@dataclass
class TrainState:
    """Where training is, what it has recorded, and the optimizer/schedule to continue from."""

    phase: int = 0  # index of the phase in progress
    epoch: int = 0  # epochs of that phase finished
    lr: float = 0.0  # the phase's LR (the finder's or the configured one), reused on resume
    optimizer: dict[str, Any] | None = None  # optimizer.state_dict() after the last finished epoch
    scheduler: dict[str, Any] | None = None  # its one-cycle scheduler's state_dict()
    history: list[dict[str, Any]] = field(default_factory=list)  # one metrics row per finished epoch
    best_score: float = -math.inf  # selection score of best.pt
    best_boundary: int = -1  # piece index best.pt was trained from

    def state_dict(self) -> dict[str, Any]:
        """Plain types and tensors only: stored in last.pt and loaded with weights_only."""
        return dataclasses.asdict(self)

    def load_state_dict(self, state: dict[str, Any], where: str = "train_state") -> "TrainState":
        names = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(state) - names - set(_OBSOLETE_KEYS))
        if unknown:
            raise CheckpointError(f"{where}: unknown training-state field(s) {unknown}")
        missing = sorted(names - set(state))
        if missing:
            raise CheckpointError(f"{where}: training state lacks {missing}; it cannot be resumed")
        for name in names:
            setattr(self, name, state[name])
        return self

    @classmethod
    def from_state_dict(cls, state: dict[str, Any], where: str = "train_state") -> "TrainState":
        return cls().load_state_dict(state, where)

    def resumes_inside(self, phase_index: int) -> bool:
        """True when phase ``phase_index`` was interrupted after at least one finished epoch."""
        return self.phase == phase_index and self.epoch > 0

    def phase_done(self, phase_index: int, epochs: int) -> bool:
        return phase_index < self.phase or (phase_index == self.phase and self.epoch >= epochs and self.epoch > 0)
