"""The ensemble network: several trained members averaged in one module (and one exported graph)."""
from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn

from ..data.preprocessing import Preprocessing
from ..errors import CheckpointError, ModelError
from .net import model_from_spec


class EnsembleNet(nn.Module):
    """Weighted average of member models' probabilities, returned as a logit.

    Returning ``logit(mean p)`` keeps the single-model contract (sigmoid gives
    probabilities), so prediction, evaluation, export and serving need no change.
    Members may differ in input size and normalisation: the ensemble takes the
    input of the largest member and each member gets a bilinear resize (ONNX
    cannot export an antialiased one) and an affine renormalisation. Member
    temperatures (per label) are applied before averaging.
    """

    def __init__(self, members: list[nn.Module], sizes: list[int], scales: torch.Tensor, shifts: torch.Tensor, weights: torch.Tensor, temperatures: torch.Tensor):
        super().__init__()
        n = len(members)
        if not (len(sizes) == n and scales.shape == shifts.shape == (n, 3) and weights.shape == (n,) and temperatures.shape[0] == n):
            raise ModelError("ensemble: one size, scale, shift, weight and temperature row per member")
        self.members = nn.ModuleList(members)
        self.sizes = [int(s) for s in sizes]
        # Buffers, so they travel in the state dict and into the exported graph.
        self.register_buffer("scales", scales.reshape(n, 3, 1, 1).float())
        self.register_buffer("shifts", shifts.reshape(n, 3, 1, 1).float())
        self.register_buffer("weights", (weights / weights.sum()).float())
        self.register_buffer("temperatures", temperatures.float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean_prob = None
        for i, member in enumerate(self.members):
            xi = x if self.sizes[i] == x.shape[-1] else nn.functional.interpolate(x, size=(self.sizes[i], self.sizes[i]), mode="bilinear", align_corners=False)
            member_prob = self.weights[i] * torch.sigmoid(member(xi * self.scales[i] + self.shifts[i]) / self.temperatures[i])
            mean_prob = member_prob if mean_prob is None else mean_prob + member_prob
        mean_prob = mean_prob.clamp(1e-6, 1 - 1e-6)
        return torch.log(mean_prob) - torch.log1p(-mean_prob)


def ensemble_preprocessing(pps: Sequence[Preprocessing], names: Sequence[str]) -> Preprocessing:
    """The ensemble's input: that of its largest-input member; members must agree on the resize geometry."""
    first = pps[0]
    for pp, name in zip(pps[1:], names[1:]):
        if pp.resize != first.resize or (pp.resize == "crop" and pp.crop_pct != first.crop_pct):
            raise CheckpointError(f"{name}: resize {pp.resize!r} (crop_pct {pp.crop_pct}) differs from {names[0]}'s {first.resize!r} ({first.crop_pct}); members must see the same part of the image")
    return max(pps, key=lambda pp: pp.size)


def ensemble_adapters(ens: Preprocessing, pps: Sequence[Preprocessing]) -> tuple[list[int], torch.Tensor, torch.Tensor]:
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
        members = [model_from_spec(s, n_classes) for s in specs]
    pps = [Preprocessing.from_dict(s["preprocessing"]) for s in specs]
    sizes, scales, shifts = ensemble_adapters(Preprocessing.from_dict(meta["preprocessing"]), pps)
    temps = torch.tensor([s.get("temperatures") or [1.0] * n_classes for s in specs], dtype=torch.float32)
    weights = torch.tensor([float(s["weight"]) for s in specs])
    return EnsembleNet(members, sizes, scales, shifts, weights, temps)
