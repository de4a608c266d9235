"""Levenberg-Marquardt for network-free candidates with few physical parameters.

A mechanistic candidate is a nonlinear least-squares problem in a handful of parameters:
Gauss-Newton steps reach the optimum of a short-window fit in a few iterations where Adam
needs hundreds. The Jacobian of the normalised residuals with respect to the raw (unbounded)
parameters comes from forward differences, all of them and every replica in one wide
rollout; the replicas are independent, so each has its own P x P system and damping.

Used by ``train.fit`` on the curriculum's windows and on the full horizon; any failure
(a candidate that cannot run replicas side by side, non-finite values everywhere) raises
``GaussNewtonError`` and training falls back to Adam and L-BFGS.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from hyarch.core.data import Trajectories
from hyarch.core.fields import rollout
from hyarch.core.model import HybridModel
from hyarch.core.rollout import integrate

# keep the Jacobian (R x residuals x P) under this many numbers: larger window sets are
# subsampled for the Gauss-Newton step (the loss that accepts it still sees them all)
MAX_JACOBIAN = 8_000_000
# the damping's range: a rejected step multiplies it by 4, an accepted one divides it by 3;
# a replica whose damping reached LAM_MAX takes steps too small to matter
LAM_MIN, LAM_MAX = 1e-9, 1e9


class GaussNewtonError(Exception):
    """Gauss-Newton cannot run on this candidate; train it with the first-order path."""


def _residuals(pred: torch.Tensor, data: Trajectories, scales: torch.Tensor) -> torch.Tensor:
    """(R, M) residuals whose squared sum per replica is ``normalised_mse``."""
    mask = data.mask[:, 1:]
    err = ((pred - data.y) / scales)[..., 1:, :]
    err = torch.where(mask, err, torch.zeros((), dtype=err.dtype, device=err.device))
    err = err / math.sqrt(max(int(mask.sum()), 1))
    return err.reshape(*err.shape[:-3], -1) if err.ndim > 3 else err.reshape(1, -1)


class LevenbergMarquardt:
    """Damped Gauss-Newton on the raw physical parameters of ``model`` (all replicas)."""

    def __init__(self, model: HybridModel, scales: torch.Tensor, *, method: str = "rk4",
                 substeps: int = 1, lam: float = 1e-3, max_step: float = 2.0) -> None:
        self.model = model
        self.scales = scales
        self.method, self.substeps = method, substeps
        self.names = list(model.parameter_specs)
        R = model.replicas
        device = scales.device
        self.lam = torch.full((R,), lam, dtype=scales.dtype, device=device)
        self.max_step = max_step
        # per replica: its last trial was rejected (it stays where it was, more damped)
        self.rejected = torch.zeros((R,), dtype=torch.bool, device=device)
        # (data, raw parameters, subsample, residuals, Jacobian): a rejected step leaves
        # every parameter where it was, so the next step on the same data reuses them
        self._linearised: tuple | None = None

    # -- evaluations --------------------------------------------------------------
    def _rollout(self, data: Trajectories) -> torch.Tensor:
        return rollout(self.model, data, method=self.method, substeps=self.substeps)

    def losses(self, data: Trajectories) -> torch.Tensor:
        """Normalised MSE per replica (inf where not finite)."""
        with torch.no_grad():
            r = _residuals(self._rollout(data), data, self.scales)
            loss = (r ** 2).sum(-1)
        return torch.where(torch.isfinite(loss), loss, torch.full_like(loss, math.inf))

    def jacobian(self, data: Trajectories) -> tuple[torch.Tensor, torch.Tensor]:
        """Residuals (R, M) and their Jacobian (R, M, P) by forward differences.

        All P + 1 evaluations of all R replicas run as one rollout of (P + 1) R replicas,
        the way the curriculum runs restarts: for a small ODE one wide rollout costs about
        what one narrow one does. (Forward-mode AD gives exact columns but runs 30-40x
        slower than a plain rollout here: several of its per-operation formulas are
        Python decompositions.) The step is ``1e-3 max(1, |raw|)`` (float32) or ``1e-6``
        times that (float64); errors in the columns slow Gauss-Newton down, they do not
        move its fixed point much, since the residuals there are small.
        """
        model = self.model
        R, P = model.replicas, len(self.names)
        raws = torch.stack([model._raw[n].detach() for n in self.names])  # (P, R)
        eps = 1e-6 if raws.dtype == torch.float64 else 1e-3
        h = eps * raws.abs().clamp_min(1.0)  # (P, R)
        wide = raws.unsqueeze(0).repeat(P + 1, 1, 1)  # (P + 1, P, R): row k + 1 moves k
        idx = torch.arange(P, device=raws.device)
        wide[idx + 1, idx] += h
        y0 = data.y0()
        y0 = y0.expand(((P + 1) * R, *y0.shape))
        # a parameter broadcasts against a state (wide, trajectories, *state shape): one
        # trailing 1 per axis when every state has the same shape (grid states included)
        shapes = set(model.state_shapes)
        trail = (1,) * (1 + (len(next(iter(shapes))) if len(shapes) == 1 else 0))
        try:
            with torch.no_grad(), model.cached_parameters():
                for j, name in enumerate(self.names):
                    value = model.parameter_specs[name].from_raw(wide[:, j].reshape(-1))
                    model.__dict__[name] = value.reshape(-1, *trail)
                pred = integrate(model.vector_field, y0, data.t, data.u,
                                 method=self.method, substeps=self.substeps)
                if pred.shape != (*y0.shape[:-1], data.length, y0.shape[-1]):
                    raise GaussNewtonError(f"a wide rollout came back as {tuple(pred.shape)}")
        except GaussNewtonError:
            raise
        except Exception as exc:  # a candidate written for scalar parameters only
            raise GaussNewtonError(f"cannot evaluate replicas side by side: {exc}") from exc
        res = _residuals(pred.reshape(P + 1, R, *pred.shape[1:]).flatten(0, 1), data,
                         self.scales).reshape(P + 1, R, -1)
        J = (res[1:] - res[:1]) / h.unsqueeze(-1)  # (P, R, M)
        return res[0], J.permute(1, 2, 0)

    # -- one iteration ------------------------------------------------------------
    def step(self, data: Trajectories, current: torch.Tensor, alive: torch.Tensor,
             tol: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
        """One damped Gauss-Newton step per replica: (new losses, predicted gains).

        ``current`` holds the replicas' losses at their present parameters; a replica
        moves only where its trial loss is lower (its damping shrinks), otherwise its
        damping grows and it stays where it was. The predicted gain is the relative
        decrease the linearised model promises for the step; where it is below ``tol``
        for every live replica the optimum is reached and no trial is made.
        """
        raw_now = torch.stack([self.model._raw[n].detach() for n in self.names])
        cached = self._linearised
        if cached is not None and cached[0] is data and torch.equal(cached[1], raw_now):
            *_, fit_data, r, J = cached
        else:
            fit_data = data
            R, P = self.model.replicas, len(self.names)
            residuals = max(1, data.y[:, 1:].numel())  # per replica, all windows
            if data.n > 1 and R * P * residuals > MAX_JACOBIAN:
                keep = max(1, int(MAX_JACOBIAN / (R * P * residuals / data.n)))
                fit_data = data.select(torch.randperm(data.n)[:keep])
            r, J = self.jacobian(fit_data)
            self._linearised = (data, raw_now.clone(), fit_data, r, J)
        ok = torch.isfinite(r).all(-1) & torch.isfinite(J).all(-1).all(-1) & alive
        if not bool(ok.any()):
            raise GaussNewtonError("the residuals or their derivatives are not finite")
        r = torch.where(ok[:, None], r, torch.zeros_like(r))
        J = torch.where(ok[:, None, None], J, torch.zeros_like(J))
        A = J.transpose(-1, -2) @ J  # (R, P, P)
        g = (J.transpose(-1, -2) @ r.unsqueeze(-1)).squeeze(-1)  # (R, P)
        diag = torch.diagonal(A, dim1=-2, dim2=-1)
        floor = diag.amax(-1, keepdim=True).clamp_min(1e-30) * 1e-9
        damp = torch.diag_embed(self.lam[:, None] * diag.clamp_min(0) + floor)
        try:
            delta = -torch.linalg.solve(A + damp, g)
        except RuntimeError:  # singular: fall back to a gradient step of the damped scale
            delta = -g / (self.lam[:, None] * diag + floor)
        delta = torch.nan_to_num(delta, nan=0.0, posinf=0.0, neginf=0.0)
        # a step longer than max_step (in any raw parameter) is shortened as a whole: cut
        # component by component it would turn, and could promise a loss increase
        longest = delta.abs().amax(-1, keepdim=True).clamp_min(1e-30)
        delta = delta * (self.max_step / longest).clamp_max(1.0) * ok[:, None]
        # ||r + J d||^2 = ||r||^2 + 2 g.d + d'Ad: the decrease the linear model promises
        promised = -(2 * (g * delta).sum(-1) + (delta * (A @ delta.unsqueeze(-1)).squeeze(-1)).sum(-1))
        predicted = torch.where(ok, promised / (r ** 2).sum(-1).clamp_min(1e-300),
                                torch.zeros_like(promised))
        if _settled(predicted, ok, tol):
            self.rejected = torch.zeros_like(self.rejected)
            return current, predicted

        raws = [self.model._raw[n] for n in self.names]
        saved = [p.detach().clone() for p in raws]
        with torch.no_grad():
            for k, p in enumerate(raws):
                p.add_(delta[:, k])
        trial = self.losses(data)
        better = (trial < current) & ok
        with torch.no_grad():
            for p, old in zip(raws, saved, strict=True):
                p.copy_(torch.where(better, p, old))
        self.lam = torch.where(better, (self.lam / 3).clamp_min(LAM_MIN),
                               (self.lam * 4).clamp_max(LAM_MAX))
        self.rejected = ok & ~better
        return torch.where(better, trial, current), predicted


def _settled(predicted: torch.Tensor, live: torch.Tensor, tol: float) -> bool:
    """Every live replica's linear model promises a gain in [0, tol): the optimum is
    reached. A negative promise is a failed step (rounding in a badly conditioned solve),
    not an optimum: that replica's trial is rejected and its damping grows."""
    live_predicted = predicted[live]
    return bool(((live_predicted >= 0) & (live_predicted < tol)).all())


def fit_least_squares(
    lm: LevenbergMarquardt, data: Trajectories, alive: torch.Tensor, *, max_iters: int,
    tol: float = 1e-4, out_of_time: Callable[[], bool] = lambda: False,
    on_step: Callable[[torch.Tensor], bool | None] | None = None,
    start: torch.Tensor | None = None,
) -> tuple[torch.Tensor, int]:
    """Iterate ``lm`` on ``data`` until no contending replica gains ``tol`` (relative) in
    four iterations running, ``max_iters``, the deadline, or ``on_step(losses)`` returns
    True. Contending: alive and within 10x of the best replica's loss (a replica stuck in
    a poor basin creeping down does not keep the others waiting).

    A rejected trial is not a stalled fit: its replica stays where it was with more
    damping, and the next iteration tries a shorter step from the same linearisation (far
    from the optimum of an oscillator's long rollout the full Gauss-Newton step overshoots
    several times running). Only accepted steps that gain too little, or a damping at its
    cap, count as stalled.

    Returns (losses per replica, iterations).
    """
    current = lm.losses(data) if start is None else start
    stale, it = 0, 0
    while it < max_iters and not out_of_time():
        best = torch.where(alive, current, torch.full_like(current, math.inf)).min()
        contending = alive & torch.isfinite(current) & (current <= 10 * best)
        new, predicted = lm.step(data, current, contending, tol)
        it += 1
        gain = torch.where(contending, (current - new) / current.clamp_min(1e-300),
                           torch.zeros_like(current))
        current = torch.where(alive, torch.minimum(new, current), current)
        retrying = bool((lm.rejected & contending & (lm.lam < LAM_MAX)).any())
        stale = 0 if retrying else (stale + 1 if float(gain.max()) < tol else 0)
        if on_step is not None and on_step(current):
            break
        if (_settled(predicted, contending, tol) or stale >= 4
                or float(current[alive].min()) == 0.0):
            break
    return current, it
