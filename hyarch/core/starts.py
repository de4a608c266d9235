"""Where each trajectory starts, estimated: the first observation is as noisy as any other.

A rollout from the first observed sample carries that sample's noise along the whole
trajectory. With 1% observation noise on a logistic growth from a small start, or on any
state that relaxes to an attractor, that error can be larger than a missing term's, and a
network that makes the dynamics contract faster scores better than the true mechanism.
With ``splits.condition: n`` on a space without latent states, every predicted trajectory
starts where the model (held fixed) best matches its first ``n`` samples, in the loss's
units (each state divided by its scale), and only the samples after them are scored, as
for a twin that meets a new individual. It is a least-squares fit of S numbers per
trajectory to n samples; every candidate gets the same, so the comparison stays fair.
"""

from __future__ import annotations

import torch

from hyarch.core.data import Trajectories
from hyarch.core.fields import rollout
from hyarch.core.model import HybridModel
from hyarch.core.twin_fit import prefixes


def without_first(data: Trajectories, n: int) -> Trajectories:
    """``data`` with its first ``n`` samples out of the scores (a prediction conditioned on
    them); the initial point stays, as a rollout's start."""
    from dataclasses import replace

    mask = data.mask.clone()
    mask[:, 1:n] = False
    return replace(data, mask=mask)


def estimate_starts(model: HybridModel, data: Trajectories, points: int, scales: torch.Tensor,
                    *, method: str = "rk4", substeps: int = 1, iterations: int = 50,
                    ) -> torch.Tensor:
    """(B, S): each trajectory's start fitted to its first ``points`` samples, the model's
    parameters held fixed (L-BFGS on the offsets from the first observation, in units of
    each state's scale). Falls back to the first observation where the fit does not lower
    the misfit or leaves a non-finite value."""
    observed = data.y0().detach()
    if model.replicas > 1 or model._modules.get("twin_") is not None:
        return observed  # (one fitted model, measured states: what this is for)
    head = prefixes(data, points)
    mask = head.mask
    target = torch.where(mask, head.y, torch.zeros_like(head.y))
    scale = scales.to(observed)
    offset = torch.zeros_like(observed, requires_grad=True)
    frozen = [p for p in model.parameters() if p.requires_grad]
    for p in frozen:
        p.requires_grad_(False)

    def misfit() -> torch.Tensor:
        pred = rollout(model, head, method=method, substeps=substeps,
                       y0=observed + offset * scale)
        r = torch.where(mask, (pred - target) / scale, torch.zeros_like(pred))
        return r.pow(2).sum(dim=(-2, -1))  # per trajectory

    try:
        with torch.enable_grad():
            before = misfit().detach()
            opt = torch.optim.LBFGS([offset], lr=1.0, max_iter=iterations,
                                    line_search_fn="strong_wolfe")

            def closure() -> torch.Tensor:
                opt.zero_grad()
                loss = misfit().sum()
                loss.backward()
                return loss

            opt.step(closure)
            after = misfit().detach()
    finally:
        for p in frozen:
            p.requires_grad_(True)
    better = torch.isfinite(after) & (after < before)
    fitted = observed + offset.detach() * scale
    ok = better.reshape(-1, *([1] * (observed.ndim - 1))) & torch.isfinite(fitted)
    return torch.where(ok, fitted, observed)
