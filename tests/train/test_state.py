from __future__ import annotations

import dataclasses

import pytest
import torch

from scenetag.errors import CheckpointError
from scenetag.train.state import TrainState


def _non_default(field: dataclasses.Field, i: int):
    """A value unlike the field's default, by type, so a field that is not restored is noticed."""
    default = field.default_factory() if field.default_factory is not dataclasses.MISSING else field.default
    if isinstance(default, bool):
        return not default
    if isinstance(default, (int, float)):
        return default + 7 + i if default == default and abs(default) != float("inf") else 0.25 + i
    if isinstance(default, list):
        return [{"phase": "head", "epoch": i}]
    return {"state": {0: {"exp_avg": torch.full((2,), float(i))}}, "param_groups": [{"lr": 0.1 * i}]}


def test_every_field_round_trips_through_state_dict():
    fields = dataclasses.fields(TrainState)
    state = TrainState(**{f.name: _non_default(f, i) for i, f in enumerate(fields)})
    for f in fields:  # the test itself must change every field
        assert getattr(state, f.name) != getattr(TrainState(), f.name), f.name
    # Through torch.save / weights_only load, as in last.pt.
    restored = TrainState.from_state_dict(state.state_dict())
    for f in fields:
        a, b = getattr(state, f.name), getattr(restored, f.name)
        if isinstance(a, dict):
            torch.testing.assert_close(a, b)
        else:
            assert a == b, f.name


def test_state_survives_weights_only_save(tmp_path):
    state = TrainState(phase=1, epoch=2, lr=1e-3, history=[{"phase": "head", "epoch": 1}], best_score=0.5, best_boundary=3)
    torch.save({"train_state": state.state_dict()}, tmp_path / "s.pt")
    back = TrainState.from_state_dict(torch.load(tmp_path / "s.pt", weights_only=True)["train_state"])
    assert back == state


def test_missing_or_unknown_fields_are_refused_and_old_keys_accepted():
    d = TrainState().state_dict()
    with pytest.raises(CheckpointError, match="lacks \\['epoch'\\]"):
        TrainState.from_state_dict({k: v for k, v in d.items() if k != "epoch"})
    with pytest.raises(CheckpointError, match="unknown training-state field"):
        TrainState.from_state_dict(d | {"surprise": 1})
    assert TrainState.from_state_dict(d | {"rng": {"torch": torch.zeros(3)}}) == TrainState()  # written by earlier versions


def test_phase_bookkeeping():
    st = TrainState(phase=1, epoch=2)
    assert st.phase_done(0, 5) and not st.phase_done(1, 5) and st.phase_done(1, 2)
    assert st.resumes_inside(1) and not st.resumes_inside(0) and not TrainState(phase=1, epoch=0).resumes_inside(1)
