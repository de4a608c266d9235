"""Hybrid regularizers, by name.

Each is computed on states a rollout visited, in per-state normalised units, from the
full field F, the reduced field F0 (closures null) and the closure contribution
G = F - F0, so they apply to any wiring: additive, multiplicative, a network inside a
rate law. Adding one is a function and a line in ``REGULARIZERS``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from hyarch.core.data import Trajectories
from hyarch.core.fields import Points, field_parts, reduced, rollout
from hyarch.core.model import HybridModel


@dataclass(frozen=True)
class Context:
    """What a regularizer may look at."""

    model: HybridModel
    data: Trajectories
    pred: torch.Tensor  # the full model's rollout of ``data``
    scales: torch.Tensor  # per stacked state
    method: str = "rk4"
    substeps: int = 1

    def points(self) -> Points:
        return Points.from_rollout(self.pred, self.data)


def _parts(ctx: Context) -> tuple[torch.Tensor, torch.Tensor]:
    full, red = field_parts(ctx.model, ctx.points())
    return full / ctx.scales, red / ctx.scales


def closure_norm(ctx: Context) -> torch.Tensor:
    """Mean squared closure contribution ||F - F0||^2 (APHYNITY's ||F_a||^2), normalised."""
    full, red = _parts(ctx)
    return ((full - red) ** 2).sum(-1).mean(-1)


def closure_share(ctx: Context) -> torch.Tensor:
    """||F - F0|| / ||F|| over the visited states: how much the networks had to do."""
    full, red = _parts(ctx)
    g = (full - red).flatten(-2)
    return g.norm(dim=-1) / full.flatten(-2).norm(dim=-1).clamp_min(1e-12)


def decorrelation(ctx: Context) -> torch.Tensor:
    """|<F0, G>| / (||F0|| ||G||): the mechanism and the networks should not fight."""
    full, red = _parts(ctx)
    f = red.flatten(-2)
    g = (full - red).flatten(-2)
    denom = (f.norm(dim=-1) * g.norm(dim=-1)).clamp_min(1e-12)
    return (f * g).sum(-1).abs() / denom


def reduced_fit(ctx: Context) -> torch.Tensor:
    """Normalised MSE of the reduced (closure-free) model against the data."""
    from hyarch.core.metrics import normalised_mse

    with reduced(ctx.model):
        pred = rollout(ctx.model, ctx.data, method=ctx.method, substeps=ctx.substeps)
    return normalised_mse(pred, ctx.data, ctx.scales)


def sensitivity(ctx: Context, rel_step: float = 1e-3) -> torch.Tensor:
    """RMS of d(normalised trajectory)/d(log p), averaged over physical parameters.

    Near zero when the output no longer depends on the mechanism (a network doing all).
    Finite differences on a one-replica model, for reports and ranking, not training.
    """
    model = ctx.model
    values = model.physical_values()
    if not values:
        return torch.zeros(())
    base = ctx.pred.detach()
    mask = ctx.data.mask[:, 1:].to(base.dtype)
    per_param = []
    with torch.no_grad():
        for name, value in values.items():
            spec = model.parameter_specs[name]
            # step inwards when the value sits at its upper bound
            sign = 1.0 if value * (1 + rel_step) <= spec.upper else -1.0
            bumped = value * (1 + sign * rel_step)
            raw = model._raw[name]
            saved = raw.detach().clone()  # restored bit for bit: set_physical(value) may not be
            model.set_physical({name: bumped})
            actual = model.physical_values()[name]
            try:
                pert = rollout(model, ctx.data, method=ctx.method, substeps=ctx.substeps)
            finally:
                raw.copy_(saved)
            if actual == value or value == 0:
                per_param.append(torch.zeros((), dtype=base.dtype))
                continue
            dlog = (actual - value) / value  # first order in log|p|, valid for p < 0 too
            d = ((pert - base) / ctx.scales)[:, 1:] / dlog
            per_param.append(((d ** 2) * mask).sum().div(mask.sum().clamp_min(1)).sqrt())
    return torch.stack(per_param).mean()


REGULARIZERS: dict[str, Callable[[Context], torch.Tensor]] = {
    "closure_norm": closure_norm,
    "reduced_fit": reduced_fit,
    "decorrelation": decorrelation,
    "sensitivity": sensitivity,
}


def get_regularizer(name: str) -> Callable[[Context], torch.Tensor]:
    try:
        return REGULARIZERS[name]
    except KeyError:
        raise ValueError(
            f"unknown regularizer {name!r}; valid: {', '.join(REGULARIZERS)}"
        ) from None
