from __future__ import annotations

import numpy as np
import pytest
import torch

from scenetag.config import load_config
from scenetag.models import build_model
from scenetag.train.optim import discriminative_groups, make_optimizer, one_cycle
from scenetag.train.setup import phase_boundaries



def _tiny_model():
    torch.manual_seed(0)
    return build_model("test_efficientnet", "none", 5, "reference", 0.5)


def test_discriminative_lrs_and_one_cycle_momentum():
    model = _tiny_model()
    k = model.boundary_for_fraction(0.8)
    groups = discriminative_groups(model, k, 1e-2, 10.0)
    lrs = [g["lr"] for g in groups]
    assert lrs == sorted(lrs) and lrs[-1] == pytest.approx(1e-2) and lrs[0] == pytest.approx(1e-3)
    trainable = {id(p) for g in groups for p in g["params"]}
    model.freeze_until(k)
    assert trainable == {id(p) for p in model.parameters() if p.requires_grad}
    opt = make_optimizer(groups, load_config())
    sched = one_cycle(opt, 100)
    seen = []
    for _ in range(100):
        opt.step()
        sched.step()
        seen.append((opt.param_groups[-1]["lr"], opt.param_groups[-1]["betas"][0]))
    peak = int(np.argmax([s[0] for s in seen]))
    assert 15 < peak < 35  # warm-up ~25%
    assert seen[peak][1] < seen[-1][1]  # beta1 low at peak LR, high at the end


@pytest.mark.parametrize("steps", range(1, 13))
def test_one_cycle_runs_any_number_of_steps(steps):
    """Tiny phases (a handful of batches) must schedule too; torch's 1/(pct*T - 1) once divided by zero at T=4."""
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.AdamW([p], lr=1e-3)
    sched = one_cycle(opt, steps)
    lrs = []
    for _ in range(steps):
        opt.step()
        sched.step()
        lrs.append(opt.param_groups[0]["lr"])
    assert all(np.isfinite(lrs)) and max(lrs) <= 1e-3 + 1e-12


def test_phase_boundaries_follow_fractions():
    model = _tiny_model()
    cfg = load_config(None, ["train.phases=[{name: a, unfreeze: 0.0}, {name: b, unfreeze: 0.6}, {name: c, unfreeze: 0.8}]"])
    b = phase_boundaries(model, cfg)
    assert b[0] == len(model.pieces()) and b[0] > b[1] >= b[2]


