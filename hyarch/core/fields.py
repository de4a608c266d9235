"""Evaluating the mechanistic and neural parts of a vector field at given points.

Regularizers and metrics work on the states a rollout visited: the full field F, the
reduced field F0 (every closure at its null value) and their difference, the share of the
derivative the networks supply, whatever wiring the candidate uses.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from hyarch.core.data import Trajectories
from hyarch.core.model import HybridModel
from hyarch.core.rollout import integrate


@contextlib.contextmanager
def reduced(model: HybridModel):
    """Switch every closure to its null value: the mechanism-only model."""
    closures = model.closures()
    before = [c.null for c in closures]
    for c in closures:
        c.null = True
    try:
        yield model
    finally:
        for c, b in zip(closures, before):
            c.null = b


@contextlib.contextmanager
def recording(model: HybridModel):
    """Collect every closure output computed inside the block."""
    outputs: list[torch.Tensor] = []
    closures = model.closures()
    for c in closures:
        c.record = outputs
    try:
        yield outputs
    finally:
        for c in closures:
            c.record = None


def rollout(
    model: HybridModel, data: Trajectories, *, method: str = "rk4", substeps: int = 1,
    y0: torch.Tensor | None = None, states: bool = False,
) -> torch.Tensor:
    """Integrate ``model`` from each trajectory's first observation over its grid.

    A digital twin (``model.twin_``: latent states, an observation model, individual
    parameters) starts from its initial-value rules and fitted starts, and returns what the
    data measure, unless ``states`` asks for the integrated states themselves."""
    twin = model._modules.get("twin_")
    if twin is None:
        start = data.y0() if y0 is None else y0
        if model.replicas > 1 and start.ndim == 2:
            start = start.unsqueeze(0).expand(model.replicas, -1, -1)
        with model.cached_parameters():
            return integrate(
                model.vector_field, start, data.t, data.u, method=method, substeps=substeps
            )
    with twin.bound_to(data):
        start = twin.initial_state(model, data) if y0 is None else y0
        if model.replicas > 1 and start.ndim == 2:
            start = start.unsqueeze(0).expand(model.replicas, -1, -1)
        with model.cached_parameters():
            pred = integrate(
                model.vector_field, start, data.t, data.u, method=method, substeps=substeps
            )
        return pred if states else twin.observed(model, pred, data)


@dataclass(frozen=True)
class Points:
    """States visited by a rollout, flattened to a batch of points."""

    t: torch.Tensor  # (N,)
    y: torch.Tensor  # (..., N, S)
    u: torch.Tensor | None  # (N, I)

    @classmethod
    def from_rollout(cls, pred: torch.Tensor, data: Trajectories) -> Points:
        lead = pred.shape[:-3]
        B, T, S = pred.shape[-3:]
        y = pred.detach().reshape(*lead, B * T, S)
        u = None if data.u is None else data.u.reshape(B * T, -1)
        return cls(data.t.reshape(B * T), y, u)

    def subsample(self, max_points: int) -> Points:
        """An evenly strided subset of at most ``max_points`` points (all if fewer)."""
        n = self.t.shape[0]
        if n <= max_points:
            return self
        idx = torch.arange(0, n, -(-n // max_points), device=self.t.device)
        return Points(self.t[idx], self.y.index_select(-2, idx),
                      None if self.u is None else self.u[idx])


def field_parts(model: HybridModel, pts: Points) -> tuple[torch.Tensor, torch.Tensor]:
    """(F, F0): the full and the reduced vector field at ``pts``."""
    with model.cached_parameters():
        full = model.vector_field(pts.t, pts.y, pts.u)
        with reduced(model):
            red = model.vector_field(pts.t, pts.y, pts.u)
    return full, red


# Scores compare rollouts with data; a rollout's own integration error must be well below
# the data's noise, or a network can win by correcting the solver. Step doubling: the
# substeps double until two successive rollouts differ, RMS over every predicted point in
# units of each state's scale, by less than this (1/100 of a 1% observation noise).
SCORING_TOL = 1e-4
MAX_SCORING_SUBSTEPS = 256


@dataclass(frozen=True)
class Accuracy:
    """How a scoring rollout was integrated: the substeps used and the RMS change the last
    doubling made (an upper estimate of the remaining error); ``converged`` is False when
    the tolerance was not met within the cap (or the rollout is not finite)."""

    method: str
    substeps: int | None
    error: float | None
    converged: bool


def accurate_rollout(
    model: HybridModel, data: Trajectories, scales: torch.Tensor, *, method: str = "rk4",
    substeps: int = 1, tol: float = SCORING_TOL, max_substeps: int = MAX_SCORING_SUBSTEPS,
    y0: torch.Tensor | None = None,
) -> tuple[torch.Tensor, Accuracy]:
    """A rollout whose integration error is below ``tol`` (see ``SCORING_TOL``), from ``y0``
    (default: as ``rollout`` starts).

    Fixed-step methods double their substeps from ``substeps``; adaptive torchdiffeq
    methods run once at their own tolerances (rtol 1e-6, atol 1e-8). A fixed-step rollout
    that overflows is tried with twice the substeps too: a step beyond the method's
    stability region (a fast rate, a stiff state) overflows a model whose flow does not."""
    from hyarch.core.rollout import FIXED_STEP

    if method not in FIXED_STEP:
        pred = rollout(model, data, method=method, y0=y0)
        return pred, Accuracy(method, None, None, bool(torch.isfinite(pred).all()))
    n = max(int(substeps), 1)
    pred = rollout(model, data, method=method, substeps=n, y0=y0)
    err: float | None = None
    while True:
        finite = bool(torch.isfinite(pred).all())
        if n * 2 > max_substeps:
            return pred, Accuracy(method, n, err if finite else None, False)
        finer = rollout(model, data, method=method, substeps=n * 2, y0=y0)
        if not finite:  # no error estimate from an overflowed rollout: refine and look again
            pred, n = finer, n * 2
            continue
        diff = ((finer - pred) / scales)[..., 1:, :]
        err = float(diff.detach().pow(2).mean().sqrt()) if diff.numel() else 0.0
        pred, n = finer, n * 2
        if err <= tol:
            return pred, Accuracy(method, n, err, bool(torch.isfinite(pred).all()))
