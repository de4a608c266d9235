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
# the misfit a trial start is given where the rollout from it is not finite
HUGE = 1e30


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
                if not torch.isfinite(loss):
                    # a trial start where the model is undefined or overflows: a huge loss
                    # with no slope, so the line search backs off (a NaN loss with a zero
                    # slope ended torch's line search in an IndexError)
                    raw.grad = torch.zeros_like(raw)
                    return torch.tensor(HUGE, dtype=loss.dtype)
                loss.backward()
                return loss

            opt.step(closure)
    except (RuntimeError, ValueError, ArithmeticError, LookupError):
        pass  # the optimiser broke down (overflow in a step): the best start seen stands
    finally:
        for p in frozen:
            p.requires_grad_(True)
    fitted = observed + best.detach() * scale
    return torch.where(torch.isfinite(fitted), fitted, observed)


def with_starts(data: Trajectories, y0: torch.Tensor) -> Trajectories:
    """``data`` whose rollouts start at ``y0`` (its first sample replaced; that sample is
    never scored, the loss skips the initial point)."""
    from dataclasses import replace

    y = data.y.clone()
    y[:, 0] = y0.to(y)
    return replace(data, y=y)


# alternations of start estimation and parameter refit: the first moves the parameters off
# the observed starts' bias; the second checks that the starts it leads to agree
START_ROUNDS = 2


def refit_from_starts(factory, train: Trajectories, selection: Trajectories, cfg, fitted,
                      points: int, *, progress=None):
    """A network-free candidate that is scored from estimated starts is fitted from them
    too. Training rolls each trajectory out from its first observation, noise included; on
    a system that is sensitive to where it starts (a double well, growth from a small
    start) the least-squares parameters then absorb that noise (ODEBench s32: damping
    0.1832 fitted, 0.18 true, a validation error 4 times the truth's). Alternately: each
    training and selection trajectory's start is estimated with the model fixed (its first
    ``points`` samples), and the parameters are refitted from those starts, starting from
    the fitted values. A refit is kept only where it lowers the selection error from the
    estimated starts. Hybrids are returned as they are: a network is trained once."""
    from dataclasses import replace

    from hyarch.core.metrics import normalised_mse
    from hyarch.core.train import fit

    model = fitted.model
    if (not points or model.closures() or model._modules.get("twin_") is not None
            or not model.physical_values()):
        return fitted
    for _ in range(START_ROUNDS):
        kw = {"method": cfg.method, "substeps": cfg.substeps}
        scales = fitted.scales
        tr = with_starts(train, estimate_starts(fitted.model, train.to(scales.device), points,
                                                scales, **kw))
        se = with_starts(selection, estimate_starts(fitted.model, selection.to(scales.device),
                                                    points, scales, **kw))
        with torch.no_grad():
            before = float(normalised_mse(rollout(fitted.model, se, **kw), se, scales))
        warm = {k: float(v) for k, v in fitted.model.physical_values().items()}
        try:
            # from the fitted values, on the full horizon at once: the short-window
            # curriculum finds a basin from a cold start, and this start is in one (it
            # was four fifths of a distilled variant's refit on ODEBench s41, 15 s of 18)
            new = fit(factory, tr, se, replace(cfg, restarts=1, warm_starts=(warm,),
                                               windows=()), progress=progress)
        except Exception:  # noqa: BLE001 - the first fit stands
            return fitted
        if not (new.val_loss < before):
            return fitted
        fitted = new
    return fitted
