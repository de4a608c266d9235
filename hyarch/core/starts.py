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

# a start moves at most this many state scales from its first observation: the start is
# the first sample less its noise, and a noise level near a state's spread is no data
MAX_OFFSET = 1.0


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
    each state's scale, each offset within ``MAX_OFFSET`` scales). Each trajectory keeps the
    best finite start any step reached; where none lowered its misfit (or the optimiser
    broke down, as on a chaotic or stiff system whose gradients overflow) it starts from the
    first observation."""
    observed = data.y0().detach()
    if model.replicas > 1 or model._modules.get("twin_") is not None:
        return observed  # (one fitted model, measured states: what this is for)
    head = prefixes(data, points)
    mask = head.mask
    target = torch.where(mask, head.y, torch.zeros_like(head.y))
    scale = scales.to(observed)
    raw = torch.zeros_like(observed, requires_grad=True)  # offset = MAX_OFFSET tanh(raw)
    frozen = [p for p in model.parameters() if p.requires_grad]
    for p in frozen:
        p.requires_grad_(False)
    shape = (-1, *([1] * (observed.ndim - 1)))

    def misfit(offset: torch.Tensor) -> torch.Tensor:
        pred = rollout(model, head, method=method, substeps=substeps,
                       y0=observed + offset * scale)
        r = torch.where(mask, (pred - target) / scale, torch.zeros_like(pred))
        return r.pow(2).sum(dim=(-2, -1))  # per trajectory

    best = torch.zeros_like(observed)
    try:
        with torch.enable_grad():
            lowest = misfit(best).detach()
            lowest = torch.where(torch.isfinite(lowest), lowest, torch.full_like(lowest, torch.inf))
            opt = torch.optim.LBFGS([raw], lr=1.0, max_iter=iterations,
                                    line_search_fn="strong_wolfe")

            def closure() -> torch.Tensor:
                nonlocal best, lowest
                opt.zero_grad()
                offset = MAX_OFFSET * torch.tanh(raw)
                each = misfit(offset)
                with torch.no_grad():  # every evaluation: keep each trajectory's best start
                    gain = torch.isfinite(each) & (each < lowest)
                    lowest = torch.where(gain, each, lowest)
                    best = torch.where(gain.reshape(shape), offset, best)
                loss = each.sum()
                if not torch.isfinite(loss):  # a diverged trial point: no way through it
                    return loss.detach()
                loss.backward()
                return loss

            opt.step(closure)
    except (RuntimeError, ValueError, ArithmeticError):
        pass  # the optimiser broke down (overflow in a step): the best start seen stands
    finally:
        for p in frozen:
            p.requires_grad_(True)
    fitted = observed + best.detach() * scale
    return torch.where(torch.isfinite(fitted), fitted, observed)
