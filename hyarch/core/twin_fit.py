"""Fitting a digital twin: the population, each trajectory's unknowns and the noise.

The statistical model. Each measured quantity k of trajectory i is
``y_ik(t) = h_k(x_i(t)) + e``, ``e ~ N(0, sigma_k^2)``: one noise level per quantity, fitted.
An individual parameter is ``theta_i = theta * exp(eta_i)`` (``theta + eta_i`` if it may be
negative) with ``eta_i ~ N(0, omega^2)``, independent per parameter, omega fitted.

The method: the marginal likelihood, with the random effects integrated out, is approximated
by Laplace's method at the random effects' conditional modes with the Gauss-Newton Hessian,
the first-order conditional estimation (FOCE) of population pharmacokinetics:

    -2 log L = sum_k [n_k log(2 pi sigma_k^2) + SSR_k / sigma_k^2]
             + sum_i [eta_i' W eta_i + log det(Omega) + log det(H_i)],
    H_i = sum_k J_ik' J_ik / sigma_k^2 + W,      W = Omega^-1,

``J_ik`` the sensitivity of trajectory i's predictions of quantity k to its eta. It is
minimised by alternating two steps, as ``nlme`` alternates its penalised nonlinear least
squares and linear mixed-effects steps:

A. given sigma and omega, penalised least squares over the population parameters, the
   closures, every eta and every fitted start (L-BFGS): the conditional modes;
B. given those, sigma and omega minimise -2 log L with J_i by finite differences;

until -2 log L changes by less than ``TOL`` or after ``MAX_ROUNDS`` rounds. With no random
effects step B only re-estimates sigma (``sigma_k^2 = SSR_k / n_k``).

The curriculum fits prefixes of 2, 4, 8, ... steps from each trajectory's start: a latent
state has no observed value inside a trajectory, so windows cannot start there.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field, replace

import torch

from hyarch.core.data import Trajectories, state_scales
from hyarch.core.fields import Points, field_parts, rollout
from hyarch.core.metrics import normalised_mse
from hyarch.core.model import HybridModel
from hyarch.core.train import FitResult, TrainConfig, TrainingError

TOL = 1e-3  # -2 log L units: a thousandth of what an information criterion counts per parameter
MAX_ROUNDS = 30
FD_STEP = 1e-4  # eta is on the log scale: a 0.01% change of the parameter
OMEGA_FLOOR = 1e-4  # a spread this small is no random effect (nlme reports 3e-5 for Theoph's ke)


@dataclass(frozen=True)
class TwinFit:
    """What the likelihood says about a fitted twin."""

    sigma: dict[str, float]  # noise level per measured quantity
    omega: dict[str, float]  # random-effect spread per individual parameter (log scale)
    neg2loglik: float  # -2 log L (Laplace / FOCE with random effects)
    n_obs: int
    n_estimated: int  # population parameters + closures' weights + omegas + sigmas + starts
    rounds: int
    n_starts: int = 0  # fitted initial values (one per trajectory and fitted state)
    # relative standard errors (population parameters; each state's trajectory, largest
    # over time relative to its peak) and what is poorly determined: see ``uncertainty``
    uncertainty: dict = field(default_factory=dict)

    @property
    def aic(self) -> float:
        return self.neg2loglik + 2 * self.n_estimated

    @property
    def bic(self) -> float:
        return self.neg2loglik + math.log(max(self.n_obs, 1)) * self.n_estimated


# a parameter whose relative standard error exceeds this is not determined by the data
# (its 95% interval spans more than a factor of two either way: 2 * 0.35 ~ log 2)
RSE_LIMIT = 0.35
# a state trajectory is recovered when its standard error stays below this fraction of its
# peak (the 10% the digital-twin issue asks of a latent compartment, with margin: 1.96 SE)
STATE_LIMIT = 0.05


def uncertainty(model: HybridModel, data: Trajectories, cfg: TrainConfig,
                sigma: dict[str, float]) -> dict:
    """How well the data determine a fitted twin: the Gauss-Newton covariance of the
    population parameters and fitted starts (individual deviations held at their modes),
    Cov = (J' W J)^-1 with W the inverse noise variances, propagated to each parameter
    (relative standard error) and to each state's trajectory (delta method). Flags the
    parameters with a relative error above ``RSE_LIMIT`` and the states whose trajectory's
    error exceeds ``STATE_LIMIT`` of its peak."""
    twin = model.twin_
    raws = [(f"{n}", model._raw[n], 0) for n in model.parameter_specs]
    for state, tab in twin.x0.items():
        raws += [(f"{state}(0)@{i}", tab, k) for k, i in enumerate(twin.ids)]
    sig = torch.tensor([sigma[q] for q in data.state_names], dtype=data.y.dtype)
    mask = data.mask.to(data.y.dtype)
    step = 1e-4
    with torch.no_grad():
        base_obs = rollout(model, data, method=cfg.method, substeps=cfg.substeps)
        base_x = rollout(model, data, method=cfg.method, substeps=cfg.substeps, states=True)
        jo, jx = [], []
        for _name, tab, k in raws:
            flat = tab.view(-1)
            flat[k] += step
            try:
                jo.append(((rollout(model, data, method=cfg.method, substeps=cfg.substeps)
                            - base_obs) / step * mask / sig).reshape(-1))
                jx.append((rollout(model, data, method=cfg.method, substeps=cfg.substeps,
                                   states=True) - base_x) / step)
            finally:
                flat[k] -= step
        J = torch.stack(jo, dim=-1).double()
        # an (almost) flat direction has (almost) infinite variance: no pseudo-inverse
        lam, vec = torch.linalg.eigh(J.T @ J)
        lam = lam.clamp_min(float(lam.abs().max()) * 1e-14 + 1e-300)
        cov = (vec / lam) @ vec.T
        out: dict = {"parameters": {}, "states": {}, "flags": []}
        for j, name in enumerate(model.parameter_specs):
            spec = model.parameter_specs[name]
            raw = model._raw[name][0].double()
            v = spec.from_raw(raw)
            dv = (spec.from_raw(raw + step) - v) / step
            rse = float(dv.abs() * cov[j, j].clamp_min(0).sqrt() / v.abs().clamp_min(1e-300))
            out["parameters"][name] = rse
            if not rse <= RSE_LIMIT:
                out["flags"].append(f"{name}: relative standard error {rse:.0%}")
        G = torch.stack(jx, dim=-1).double()  # (B, T, S, K)
        var = torch.einsum("btsk,kl,btsl->bts", G, cov, G).clamp_min(0)
        peak = base_x.double().abs().amax(dim=1).clamp_min(1e-300)  # (B, S)
        rel = (var.sqrt().amax(dim=1) / peak).amax(dim=0)
        for k, state in enumerate(model.state_names):
            out["states"][state] = float(rel[k])
            if not float(rel[k]) <= STATE_LIMIT:
                out["flags"].append(f"state {state}: standard error up to {float(rel[k]):.0%}"
                                    " of its peak")
    return out


def prefixes(data: Trajectories, points: int) -> Trajectories:
    """The first ``points`` samples of every trajectory."""
    points = max(2, min(points, data.length))
    return replace(data, t=data.t[:, :points], y=data.y[:, :points],
                   mask=data.mask[:, :points],
                   u=None if data.u is None else data.u[:, :points])


class _Objective:
    """-2 log L's pieces for one model on one data set."""

    def __init__(self, model: HybridModel, data: Trajectories, cfg: TrainConfig) -> None:
        self.model, self.data, self.cfg = model, data, cfg
        self.mask = data.mask.to(data.y.dtype)
        self.n = self.mask.sum(dim=(0, 1))  # observations per quantity
        self.twin = model.twin_
        self.names = model.individual_names

    def predict(self) -> torch.Tensor:
        return rollout(self.model, self.data, method=self.cfg.method,
                       substeps=self.cfg.substeps)

    def ssr(self, pred: torch.Tensor) -> torch.Tensor:
        """Sum of squared residuals per measured quantity (every point, the first too:
        a start from a rule or a fit predicts it)."""
        r = torch.where(self.data.mask, pred - self.data.y, torch.zeros_like(pred))
        return (r ** 2).sum(dim=(0, 1))

    def etas(self) -> torch.Tensor:
        """(G, p) deviations of one replica."""
        if not self.names:
            return torch.zeros(0)
        return torch.stack([self.twin.eta[n][0] for n in self.names], dim=-1)

    def log_omega(self) -> torch.Tensor:
        return torch.stack([self.twin.log_omega[n][0] for n in self.names]) if self.names \
            else torch.zeros(0)

    def penalised(self, sigma2: torch.Tensor, closure_weight: float,
                  state_scales_: torch.Tensor | None) -> torch.Tensor:
        """Step A's objective (half of -2 log L's terms that depend on the modes)."""
        pred = self.predict()
        value = 0.5 * (self.ssr(pred) / sigma2).sum()
        if self.names:
            eta = self.etas()
            value = value + 0.5 * (eta ** 2 / torch.exp(2 * self.log_omega())).sum()
        if closure_weight > 0 and self.model.closures():
            states = rollout(self.model, self.data, method=self.cfg.method,
                             substeps=self.cfg.substeps, states=True)
            # at the visited states, with the population values (an additive closure's
            # output does not depend on them)
            pts = Points.from_rollout(states, self.data).subsample(self.cfg.reg_points)
            full, red = field_parts(self.model, pts)
            g = (full - red) / state_scales_
            value = value + closure_weight * self.n.sum() * (g ** 2).sum(-1).mean()
        return value

    def per_trajectory(self, sigma2: torch.Tensor) -> torch.Tensor:
        """(B,) each trajectory's share of step A's objective (its fit and its eta)."""
        pred = self.predict()
        r = torch.where(self.data.mask, pred - self.data.y, torch.zeros_like(pred))
        value = 0.5 * (r ** 2 / sigma2).sum(dim=(1, 2))
        if self.names:
            w = torch.exp(-2 * self.log_omega())
            value = value + 0.5 * (self.etas() ** 2 * w).sum(dim=-1)
        return value

    def sensitivities(self, pred: torch.Tensor) -> torch.Tensor:
        """(B, T, O, p): d prediction / d eta, forward differences, every trajectory at once
        (trajectory i's prediction depends on its own eta only)."""
        cols = []
        with torch.no_grad():
            for name in self.names:
                eta = self.twin.eta[name]
                eta += FD_STEP
                try:
                    cols.append((self.predict() - pred) / FD_STEP)
                finally:
                    eta -= FD_STEP
        return torch.stack(cols, dim=-1) * self.mask.unsqueeze(-1)

    def neg2loglik(self, ssr: torch.Tensor, log_sigma: torch.Tensor,
                   jac: torch.Tensor | None, log_omega: torch.Tensor) -> torch.Tensor:
        """-2 log L at fixed modes, as a function of the noise levels and spreads."""
        sigma2 = torch.exp(2 * log_sigma)
        value = (self.n * (math.log(2 * math.pi) + 2 * log_sigma) + ssr / sigma2).sum()
        if jac is None:
            return value
        eta = self.etas().detach()
        w = torch.exp(-2 * log_omega)
        jw = jac / sigma2.reshape(1, 1, -1, 1)
        hess = torch.einsum("btoa,btoc->bac", jw, jac) + torch.diag_embed(
            w.expand(jac.shape[0], -1))
        value = value + (eta ** 2 * w).sum() + jac.shape[0] * 2 * log_omega.sum()
        return value + torch.logdet(hess).sum()


def _lbfgs(params, loss_fn, max_iters: int, deadline: float) -> tuple[float, int]:
    """L-BFGS in chunks of 20 until a chunk gains less than 1e-7 (relative)."""
    opt = torch.optim.LBFGS(params, lr=1.0, max_iter=20, history_size=30,
                            line_search_fn="strong_wolfe", tolerance_grad=1e-10,
                            tolerance_change=1e-14)

    def closure():
        opt.zero_grad(set_to_none=True)
        loss = loss_fn()
        if torch.isfinite(loss):
            loss.backward()
            return loss
        # a step into a region where the model blows up: a huge loss with no slope, so the
        # line search backs off instead of following NaN gradients
        for p in params:
            p.grad = torch.zeros_like(p)
        return torch.tensor(1e30, dtype=loss.dtype)

    with torch.no_grad():
        prev = float(loss_fn())
    done = 0
    best_state = [p.detach().clone() for p in params]
    while done < max_iters and time.perf_counter() < deadline:
        try:
            opt.step(closure)
        except RuntimeError:
            break
        done += 20
        with torch.no_grad():
            cur = float(loss_fn())
        if not math.isfinite(cur):
            with torch.no_grad():
                for p, b in zip(params, best_state, strict=True):
                    p.copy_(b)
            break
        if not math.isfinite(prev) or cur <= prev:
            best_state = [p.detach().clone() for p in params]
        if math.isfinite(prev) and cur > prev - 1e-7 * abs(prev):
            if cur > prev:  # keep the better point
                with torch.no_grad():
                    for p, b in zip(params, best_state, strict=True):
                        p.copy_(b)
            break
        prev = cur
    return prev, done


def _update_variances(obj: _Objective, names: tuple[str, ...]) -> tuple[torch.Tensor, float]:
    """Step B: the noise levels and spreads that minimise -2 log L at the current modes.
    Returns (sigma^2 per quantity, -2 log L)."""
    with torch.no_grad():
        pred = obj.predict()
        ssr = obj.ssr(pred)
        jac = obj.sensitivities(pred) if names else None
    n = obj.n.clamp_min(1)
    log_sigma = (0.5 * torch.log((ssr / n).clamp_min(1e-30))).clone().requires_grad_(True)
    log_omega = obj.log_omega().clone().requires_grad_(bool(names))
    params = [log_sigma] + ([log_omega] if names else [])
    opt = torch.optim.LBFGS(params, lr=1.0, max_iter=100, line_search_fn="strong_wolfe",
                            tolerance_grad=1e-12, tolerance_change=1e-15)

    def closure():
        opt.zero_grad(set_to_none=True)
        value = obj.neg2loglik(ssr, log_sigma, jac, log_omega.clamp_min(math.log(OMEGA_FLOOR)))
        value.backward()
        return value

    opt.step(closure)
    with torch.no_grad():
        log_omega.clamp_(min=math.log(OMEGA_FLOOR))
        for k, name in enumerate(names):
            obj.twin.log_omega[name][:] = log_omega[k]
        value = float(obj.neg2loglik(ssr, log_sigma, jac, log_omega))
    return torch.exp(2 * log_sigma.detach()), value


def fit_twin(factory, train: Trajectories, val: Trajectories, cfg: TrainConfig, *,
             initial=None, progress=None) -> FitResult:
    """Fit a twin candidate (see the module's docstring); ``initial`` maps states to
    ``hyarch.core.twin.Initial`` rules. The result's model carries ``twin_.fit_`` (a
    ``TwinFit``).

    ``cfg.restarts`` starts, kept by their likelihood: the full horizon from the declared
    values; the prefix curriculum first (``cfg.windows``); then the full horizon from the
    declared values moved at random, as the core spreads its replicas (each physical
    parameter's transformed value plus 0.7 N(0, 1)). The curriculum keeps an oscillator's
    phase; on a one-compartment oral dose it walks into the flip-flop minimum (absorption
    and elimination rates swapped), which the full horizon avoids."""
    start = time.perf_counter()
    deadline = start + cfg.max_seconds
    n = max(int(cfg.restarts), 1)
    plans = [(False, None)] + ([(True, None)] if n >= 2 and cfg.windows else [])
    plans += [(False, cfg.seed + k) for k in range(1, n - len(plans) + 1)]
    best: FitResult | None = None
    for k, (curriculum, jitter) in enumerate(plans):
        if best is not None and time.perf_counter() > deadline:
            break
        res = _fit_once(factory, train, val, cfg, initial, curriculum, deadline,
                        progress, k + 1, jitter)
        if best is None or res.model.twin_.fit_.neg2loglik < best.model.twin_.fit_.neg2loglik:
            best = res
    return replace(best, seconds=time.perf_counter() - start)


def _fit_once(factory, train, val, cfg, initial, curriculum: bool, deadline: float,
              progress, attempt: int, jitter: int | None = None) -> FitResult:
    from hyarch.core.fields import accurate_rollout
    from hyarch.core.progress import TrainingProgress
    from hyarch.core.twin import attach

    start = time.perf_counter()
    torch.manual_seed(cfg.seed)
    model = factory(replicas=1)
    if jitter is not None:
        g = torch.Generator().manual_seed(jitter)
        with torch.no_grad():
            for raw in model._raw.values():
                raw += 0.7 * torch.randn(raw.shape, generator=g)
    attach(model, train.ids, initial)
    scales = state_scales(train)
    names = model.individual_names
    say = progress or (lambda event: None)
    params = [p for p in model.parameters() if p.requires_grad]
    closure_weight = float(cfg.regularizers.get("closure_norm", 0.0)) if model.closures() else 0.0
    history: list[tuple[str, int, float, float]] = []
    iterations = 0
    # integrated finely enough that the solver's error is below the scoring tolerance at
    # the starting values (the same step doubling as scoring; its coarser side suffices)
    with torch.no_grad():
        _, acc = accurate_rollout(model, train, scales, method=cfg.method,
                                  substeps=cfg.substeps, max_substeps=64)
    if acc.substeps and acc.converged:
        cfg = replace(cfg, substeps=max(cfg.substeps, acc.substeps // 2))

    def state_scale(data):
        with torch.no_grad():
            x = rollout(model, data, method=cfg.method, substeps=cfg.substeps, states=True)
        s = x.reshape(-1, x.shape[-1]).std(dim=0)
        return torch.where(s > 1e-8, s, torch.ones_like(s))

    # 1. the curriculum: growing prefixes, each quantity in units of its own scale
    sigma2 = scales ** 2
    widths = [w for w in cfg.windows if w + 1 < train.length] if curriculum else []
    for k, width in enumerate(widths):
        say(TrainingProgress("windows", k, len(widths), fit=attempt))
        obj = _Objective(model, prefixes(train, width + 1), cfg)
        xs = state_scale(obj.data) if closure_weight else None
        loss, n = _lbfgs(params, lambda o=obj, s=xs: o.penalised(sigma2, closure_weight, s),
                         cfg.lbfgs_iters, deadline)
        iterations += n
        if not math.isfinite(loss):
            raise TrainingError(f"training diverged on the first {width + 1} points of each"
                                " trajectory: the loss is NaN or infinite")
        history.append((f"prefix{width + 1}", iterations, loss, math.nan))

    # 2. alternate the modes (A) and the variance components (B) on the full horizon
    obj = _Objective(model, train, cfg)
    xs = state_scale(train) if closure_weight else None
    prev, value, rounds = math.inf, math.inf, 0
    for rounds in range(1, MAX_ROUNDS + 1):
        say(TrainingProgress("full horizon", rounds - 1, MAX_ROUNDS, fit=attempt))
        loss, n = _lbfgs(params, lambda s2=sigma2: obj.penalised(s2, closure_weight, xs),
                         cfg.lbfgs_iters, deadline)
        iterations += n
        if not math.isfinite(loss):
            raise TrainingError("training diverged on the full horizon: the loss is NaN or"
                                " infinite")
        history.append(("modes", iterations, loss, math.nan))
        sigma2, value = _update_variances(obj, names)
        history.append(("variances", iterations, value, math.nan))
        if abs(prev - value) < TOL or time.perf_counter() > deadline:
            break
        prev = value
    n_closure = sum(p.numel() for p in model.neural_parameters())
    n_starts = sum(p.numel() for p in model.twin_.x0.values())
    model.twin_.fit_ = TwinFit(
        sigma={q: math.sqrt(float(v)) for q, v in zip(train.state_names, sigma2)},
        omega=model.twin_.omegas(), neg2loglik=value, n_obs=int(obj.n.sum()),
        n_estimated=(len(model.parameter_specs) + n_closure + len(names) + len(sigma2)
                     + n_starts),
        rounds=rounds, n_starts=n_starts)
    model.twin_.fit_ = replace(model.twin_.fit_, uncertainty=uncertainty(
        model, train, cfg, model.twin_.fit_.sigma))
    with torch.no_grad():
        train_loss = float(normalised_mse(obj.predict(), train, scales))
        v = float(normalised_mse(rollout(model, val, method=cfg.method,
                                         substeps=cfg.substeps), val, scales))
    return FitResult(model=model, scales=scales, train_loss=train_loss,
                     val_loss=v if math.isfinite(v) else math.inf, iterations=iterations,
                     seconds=time.perf_counter() - start,
                     stopped="converged" if abs(prev - value) < TOL else "rounds or time",
                     history=tuple(history))


def condition(model: HybridModel, data: Trajectories, points: int, cfg: TrainConfig,
              ) -> HybridModel:
    """A copy of a fitted twin that knows ``data``'s trajectories (new individuals) from
    their first ``points`` samples: their eta and fitted starts are the conditional modes
    given the population values, spreads and noise levels, which stay as fitted."""
    from hyarch.core.twin import attach

    fitted = model.twin_
    out = copy.deepcopy(model)
    twin = attach(out, data.ids, fitted.initial)
    with torch.no_grad():
        for name in out.individual_names:
            twin.log_omega[name].copy_(fitted.log_omega[name])
    sigma2 = torch.tensor([fitted.fit_.sigma[q] ** 2 for q in data.state_names])
    obj = _Objective(out, prefixes(data, points), cfg)
    if not twin.fitted_parameters():
        return out
    _lbfgs(twin.fitted_parameters(), lambda: obj.penalised(sigma2, 0.0, None),
           cfg.lbfgs_iters, time.perf_counter() + cfg.max_seconds)
    return out
