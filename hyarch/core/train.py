"""Training a candidate so that it actually finds its parameters.

A plain Adam fit over the full horizon from a poor guess stalls in local minima on
oscillators. hyarch trains by design in three phases:

1. a short-window curriculum: from every observed point, fit windows of 2, 4, 8, ... steps
   (multiple shooting with observed starts), all restarts at once as replicas of the
   candidate in one vectorised rollout;
2. the best replica continues on the full horizon with early stopping on validation loss,
   learning-rate decay on plateaus, and the best weights restored;
3. candidates with no networks and few parameters are polished with L-BFGS.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import torch

from hyarch.core.data import Trajectories, state_scales
from hyarch.core.fields import Points, field_parts, rollout
from hyarch.core.gauss_newton import GaussNewtonError, LevenbergMarquardt, fit_least_squares
from hyarch.core.metrics import normalised_mse
from hyarch.core.model import HybridModel
from hyarch.core.progress import Schedule, TrainingProgress
from hyarch.core.rollout import check_method

Factory = Callable[..., HybridModel]

TRAIN_REGULARIZERS = ("closure_norm", "decorrelation")


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """How a candidate is trained. Every field can be set from a space's ``training``."""

    method: str = "rk4"
    substeps: int = 1
    lr: float = 5e-3
    lr_physical: float = 5e-2
    windows: tuple[int, ...] = (2, 4, 8, 16)
    stage_iters: int = 300
    final_iters: int = 1500
    patience: int = 100
    eval_every: int = 10
    restarts: int = 4
    lbfgs: str = "auto"
    lbfgs_iters: int = 200
    regularizers: Mapping[str, float] = field(default_factory=lambda: {"closure_norm": 1e-3})
    adaptive: bool = False
    tau: float = 1.0
    seed: int = 0
    max_seconds: float = 600.0
    grad_clip: float = 10.0
    max_windows: int = 4096
    device: str = "cpu"
    # speed (issue 7): a window stage ends once ``stage_patience`` iterations have gained
    # less than ``stage_gain`` (relative) on the stage's best loss: the curriculum only has
    # to bring the parameters into the next width's basin, later stages go on training
    stage_patience: int = 25
    stage_gain: float = 0.05
    # a longer window whose first loss is within this factor of the previous width's best
    # is already fitted (its errors grow with the width when parameters are off): skip it
    stage_skip: float = 1.25
    # candidates with networks fit random mini-batches of this many windows per iteration
    # (their cost grows with the batch; a network-free candidate's barely does)
    window_batch: int = 256
    # a validation loss counts as better when it gains at least this much (relative)
    # (5%: 0.02 decades, a tenth of what separates candidates in a ranking; below that
    # a network creeps on for hundreds of iterations, mostly fitting train noise)
    min_delta: float = 5e-2  # a gain under 5% per `patience` iterations is a plateau
    # full-horizon Adam cuts its learning rate (x0.3, at most 4 times) after this many
    # iterations without a gain
    decay_patience: int = 50
    # full-horizon Adam ramps its learning rate up over these iterations, so that a fresh
    # optimizer's first sign-like steps do not throw away what the windows found
    warmup: int = 25
    # regularizers in training are estimated on at most this many visited points
    reg_points: int = 2048
    # network-free candidates with few parameters go straight from the windows to
    # L-BFGS on the full horizon; Adam runs only if L-BFGS does not improve validation
    lbfgs_first: bool = True
    # L-BFGS stops when a chunk of this many iterations gains less than 0.1%
    lbfgs_chunk: int = 10
    # network-free candidates with 1-30 physical parameters are least-squares problems:
    # Levenberg-Marquardt (finite-difference Jacobians, every replica at once) fits the
    # windows and the full horizon in a few iterations each; Adam and L-BFGS if it fails
    gauss_newton: bool = True
    gauss_newton_iters: int = 50  # per window stage and on the full horizon
    # fitted physical values of evaluated candidates (best first): the first whose names
    # are all this model's starts one restart, the model's other parameters at their value
    # nearest zero (a new term's null value) and its closures at their null output, so that
    # a candidate that nests a fitted one starts where that one ended and cannot fit worse
    warm_starts: tuple[Mapping[str, float], ...] = ()

    def __post_init__(self):
        check_method(self.method)
        if min(self.stage_patience, self.reg_points, self.window_batch, self.max_windows) < 1:
            raise ValueError("stage_patience, reg_points, window_batch and max_windows must"
                             " be >= 1")
        if self.warmup < 0 or not (0 <= self.min_delta < 1):
            raise ValueError("warmup must be >= 0 and min_delta in [0, 1)")
        if self.lbfgs not in ("auto", "always", "never"):
            raise ValueError(f"lbfgs must be auto, always or never, got {self.lbfgs!r}")
        for name in self.regularizers:
            if name not in TRAIN_REGULARIZERS:
                raise ValueError(
                    f"regularizer {name!r} cannot be trained on; valid in training:"
                    f" {', '.join(TRAIN_REGULARIZERS)}"
                )


@dataclass(frozen=True)
class FitResult:
    """A trained one-replica model and how training went."""

    model: HybridModel
    scales: torch.Tensor
    train_loss: float
    val_loss: float
    iterations: int
    seconds: float
    stopped: str
    history: tuple[tuple[str, int, float, float], ...]
    replica_losses: tuple[float, ...] = ()
    # seconds since the start of ``fit`` at each ``history`` entry (same length)
    history_seconds: tuple[float, ...] = ()


class TrainingError(Exception):
    """Training cannot go on (diverged everywhere, wrong shapes...)."""


def _replica_safe(model: HybridModel, data: Trajectories) -> bool:
    """Can this candidate run R replicas at once? Only if every network is a Closure."""
    raw = {id(p) for p in model.physical_raw_parameters()}
    closure = {id(p) for c in model.closures() for p in c.parameters()}
    foreign = [p for p in model.parameters() if id(p) not in raw and id(p) not in closure]
    if foreign:
        return False
    try:
        with torch.no_grad():
            y = data.y0()[:2].unsqueeze(0).expand(model.replicas, -1, -1)
            u = None if data.u is None else data.u[:2, 0]
            out = model.vector_field(data.t[:2, 0], y, u)
        return out.shape == y.shape and bool(torch.isfinite(out).all())
    except Exception:
        return False


def _diversify(model: HybridModel, seed: int) -> None:
    """Spread replicas' physical parameters: the declared init, jitter and broad draws."""
    g = torch.Generator().manual_seed(seed)
    R = model.replicas
    with torch.no_grad():
        for raw in model._raw.values():
            base = raw[0].item()
            for r in range(1, R):
                if r % 2:
                    raw[r] = torch.empty(()).uniform_(-3.0, 3.0, generator=g)
                else:
                    raw[r] = base + 0.7 * torch.randn((), generator=g)


def _warm_start(model: HybridModel, starts) -> dict[str, float] | None:
    """Start the last replica from the first of ``starts`` that this model nests (all its
    names are the model's parameters); the model's other parameters at the value within
    their bounds nearest zero. Returns the start used, or None."""
    specs = model.parameter_specs
    for values in starts or ():
        values = {k: v for k, v in dict(values).items() if isinstance(v, (int, float))}
        if not values or not set(values) <= set(specs):
            continue
        r = model.replicas - 1
        with torch.no_grad():
            for name, spec in specs.items():
                v = values.get(name, min(max(0.0, spec.lower), spec.upper))
                model._raw[name][r] = spec.to_raw(float(v))
        return values
    return None


def _extract(model: HybridModel, factory: Factory, index: int) -> HybridModel:
    one = factory(replicas=1)
    src = dict(model.named_parameters())
    with torch.no_grad():
        for name, p in one.named_parameters():
            q = src[name]
            p.copy_(q[index:index + 1] if q.shape[0] == model.replicas else q)
    return one.to(next(model.parameters(), torch.zeros(())).device)


class _Adam:
    """Adam (Kingma and Ba; the same update as ``torch.optim.Adam`` with its defaults).

    Why not torch's: the first ``torch.optim`` optimizer built in a process imports
    ``torch._dynamo``, seconds of start-up that every sandboxed candidate would pay, on top
    of a training of a few seconds. Same interface as far as training uses it:
    ``param_groups`` (with ``lr``), ``zero_grad`` and ``step``.
    """

    def __init__(self, groups: list[dict], betas=(0.9, 0.999), eps: float = 1e-8) -> None:
        self.param_groups = [dict(g, params=list(g["params"])) for g in groups]
        self.betas, self.eps = betas, eps
        self.state: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self.t = 0

    def zero_grad(self, set_to_none: bool = True) -> None:
        for g in self.param_groups:
            for p in g["params"]:
                p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        self.t += 1
        b1, b2 = self.betas
        c1 = 1 - b1 ** self.t
        c2 = math.sqrt(1 - b2 ** self.t)
        for g in self.param_groups:
            for p in g["params"]:
                if p.grad is None:
                    continue
                m, v = self.state.get(id(p)) or self.state.setdefault(
                    id(p), (torch.zeros_like(p), torch.zeros_like(p)))
                m.lerp_(p.grad, 1 - b1)
                v.mul_(b2).addcmul_(p.grad, p.grad, value=1 - b2)
                denom = (v.sqrt() / c2).add_(self.eps)
                p.addcdiv_(m, denom, value=-g["lr"] / c1)


def _optimizer(model: HybridModel, cfg: TrainConfig, scale: float = 1.0):
    groups = []
    if model.physical_raw_parameters():
        groups.append({"params": model.physical_raw_parameters(), "lr": cfg.lr_physical * scale})
    if model.neural_parameters():
        groups.append({"params": model.neural_parameters(), "lr": cfg.lr * scale})
    if not groups:
        return None
    return _Adam(groups)


# a short window whose normalised MSE passes this (a prediction off by 100 state scales on
# average) has left anything the data show: the model blew up there, and the window is
# left out of that step rather than letting it swamp (or turn NaN) every other window's
BLOWN_UP = 1e4


class _Trainer:
    def __init__(self, model, cfg: TrainConfig, scales, deadline):
        self.model = model
        self.cfg = cfg
        self.scales = scales
        self.deadline = deadline
        self.lam = 1.0  # APHYNITY's adaptive multiplier on the trajectory loss
        self.history: list[tuple[str, int, float, float]] = []
        self.stamps: list[float] = []
        self.start = time.perf_counter()
        self.monitor = None
        self.schedule = Schedule(None)
        self.window_errors = torch.zeros(0)
        self.dropped = 0  # windows left out of steps, blown up (step(drop=True))
        self.regularized = bool(model.closures()) and any(
            w > 0 for w in cfg.regularizers.values()
        )

    def log(self, entry: tuple[str, int, float, float], replica: int = 0) -> None:
        self.history.append(entry)
        self.stamps.append(time.perf_counter() - self.start)
        if self.monitor is not None:
            self.monitor(entry, self.model, replica)

    def out_of_time(self) -> bool:
        return time.perf_counter() > self.deadline

    def losses(self, data: Trajectories, per_window: bool = False
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """(trajectory loss per replica, regularized objective per replica)."""
        cfg = self.cfg
        pred = rollout(self.model, data, method=cfg.method, substeps=cfg.substeps)
        traj = normalised_mse(pred, data, self.scales)
        if per_window:  # each window's own error, for step(drop=True)
            with torch.no_grad():
                err = ((pred - data.y) / self.scales)[..., 1:, :] ** 2
                mask = data.mask[:, 1:]
                err = torch.where(mask, err, torch.zeros_like(err))
                self.window_errors = (err.sum(dim=(-2, -1))
                                      / mask.sum(dim=(-2, -1)).clamp_min(1)).reshape(-1, data.n)
        total = traj * (self.lam if cfg.adaptive else 1.0)
        if self.regularized:
            pts = Points.from_rollout(pred, data).subsample(cfg.reg_points)
            full, red = field_parts(self.model, pts)
            full, red = full / self.scales, red / self.scales
            g = full - red
            for name, w in cfg.regularizers.items():
                if w <= 0:
                    continue
                if name == "closure_norm":
                    reg = (g ** 2).sum(-1).mean(-1)
                else:  # decorrelation
                    f, gg = red.flatten(-2), g.flatten(-2)
                    reg = (f * gg).sum(-1).abs() / (f.norm(dim=-1) * gg.norm(dim=-1) + 1e-8)
                total = total + w * reg
        return traj, total

    def step(self, opt, data: Trajectories, alive: torch.Tensor, *, drop: bool = False
             ) -> torch.Tensor | None:
        """One optimiser step. With ``drop`` (the short windows), a window that some alive
        replica cannot integrate (a non-finite or blown-up prediction, ``BLOWN_UP``) is left
        out of this step: a prior that blows up in finite time from some states (a missing
        damping term) is trained on the windows it can integrate, and its closure learns
        there what keeps the rest finite, rather than the whole fit diverging."""
        opt.zero_grad(set_to_none=True)
        traj, total = self.losses(data, per_window=drop)
        if drop:
            per = self.window_errors
            bad = ((~torch.isfinite(per)) | (per > BLOWN_UP)) & alive.reshape(-1, 1)
            bad = bad.any(dim=0)
            if bool(bad.any()):
                if bool(bad.all()):
                    return None
                self.dropped += int(bad.sum())
                data = data.select(torch.nonzero(~bad).reshape(-1).cpu())
                traj, total = self.losses(data)
        finite = torch.isfinite(total) & alive
        if not bool(finite.any()):
            return None
        loss = torch.where(finite, total, torch.zeros_like(total)).sum()
        loss.backward()
        params = [p for grp in opt.param_groups for p in grp["params"]]
        norm = torch.nn.utils.clip_grad_norm_(params, self.cfg.grad_clip)
        if not bool(torch.isfinite(norm)):  # rare: zero the bad entries, clip again
            for p in params:
                if p.grad is not None:
                    torch.nan_to_num_(p.grad, nan=0.0, posinf=0.0, neginf=0.0)
            torch.nn.utils.clip_grad_norm_(params, self.cfg.grad_clip)
        opt.step()
        if self.cfg.adaptive:
            self.lam += self.cfg.tau * float(traj.reshape(-1)[finite].mean().detach())
        return torch.where(finite, traj.detach(), torch.full_like(traj, math.inf))


def fit(
    factory: Factory,
    train: Trajectories,
    val: Trajectories,
    cfg: TrainConfig = TrainConfig(),
    *,
    progress: Callable[[TrainingProgress], None] | None = None,
    monitor: Callable[[tuple, HybridModel, int], None] | None = None,
    resume: HybridModel | None = None,
) -> FitResult:
    """Train a candidate built by ``factory(replicas=R)`` on ``train``, select on ``val``.

    ``progress(TrainingProgress)``, if given, hears at each phase change and every quarter
    second how many steps are done out of those the schedule plans.

    ``monitor(entry, model, replica)``, if given, sees every history entry with the model
    as it is then (during the windows, R replicas, ``replica`` the best on the windows):
    benchmarks use it to time when a quality target is first met.

    ``resume``, if given, is a trained one-replica model of this factory: training goes on
    from its weights, on the full horizon alone (one replica, no window curriculum), and
    keeps them unless validation gains (``cfg.substeps`` may differ from its first fit's).
    """
    start = time.perf_counter()
    deadline = start + cfg.max_seconds
    torch.manual_seed(cfg.seed)
    device = torch.device(cfg.device)
    train, val = train.to(device), val.to(device)
    scales = state_scales(train).to(device)

    R = max(int(cfg.restarts), 1) if resume is None else 1
    model = factory(replicas=R).to(device)
    if resume is not None:
        model.load_state_dict(resume.state_dict())
    if R > 1 and not _replica_safe(model, train):
        R = 1
        model = factory(replicas=1).to(device)
    if R > 1:
        _diversify(model, cfg.seed)
    warm = _warm_start(model, cfg.warm_starts) if resume is None else None
    tr = _Trainer(model, cfg, scales, deadline)
    tr.start = start
    tr.monitor = monitor
    sched = tr.schedule = Schedule(progress)
    if warm is not None:
        tr.log((f"restart {R - 1} starts from a fitted candidate's values"
                f" ({', '.join(sorted(warm))})", 0, math.nan, math.nan))
    iterations = 0
    alive = torch.ones(R, dtype=torch.bool, device=device)
    n_nan = 0

    # Phase 1: short-window curriculum, all replicas at once.
    opt = _optimizer(model, cfg)
    if opt is None:  # a complete model (every constant written in): scored as it is
        model = _extract(model, factory, 0) if R > 1 else model
        with torch.no_grad():
            losses = [float(normalised_mse(rollout(model, d, method=cfg.method,
                                                   substeps=cfg.substeps), d, scales))
                      for d in (train, val)]
        sched.end()
        return FitResult(model=model, scales=scales, train_loss=losses[0],
                         val_loss=losses[1] if math.isfinite(losses[1]) else math.inf,
                         iterations=0, seconds=time.perf_counter() - start,
                         stopped="nothing to fit (no parameter, no closure): scored as written",
                         history=())
    max_batch = cfg.max_windows
    if model.neural_parameters():
        max_batch = min(max_batch, cfg.window_batch)
    prev_best, lead = math.inf, 0
    widths = sorted(w for w in cfg.windows if w < train.length - 1) if resume is None else []
    gauss_newton = (resume is None and cfg.gauss_newton and not model.neural_parameters()
                    and 0 < len(model.parameter_specs) <= 30)
    plan_lbfgs = cfg.lbfgs == "always" or (
        cfg.lbfgs == "auto" and not model.neural_parameters()
        and 0 < len(model.physical_raw_parameters()) <= 30)
    adam_plan = [("full horizon", cfg.final_iters)] + (
        [("l-bfgs", cfg.lbfgs_iters)] if plan_lbfgs else [])
    first_order_plan = ([("l-bfgs", cfg.lbfgs_iters)]
                        if plan_lbfgs and cfg.lbfgs_first and not model.neural_parameters()
                        else adam_plan)
    sched.expect([("windows", cfg.gauss_newton_iters)] * len(widths)
                 + [("full horizon", cfg.gauss_newton_iters)] if gauss_newton
                 else [("windows", cfg.stage_iters)] * len(widths) + first_order_plan)
    if gauss_newton:
        try:
            iterations, lead = _gauss_newton_windows(model, tr, train, cfg, widths, alive)
            widths = []
        except GaussNewtonError as exc:  # the first-order path below takes over
            gauss_newton = False
            tr.log((f"gauss-newton failed: {exc}", iterations, math.nan, math.nan))
            sched.expect([("windows", cfg.stage_iters)] * len(widths) + first_order_plan)
    for width in widths:
        sched.begin("windows", cfg.stage_iters)
        windows = train.windows(width)
        # on random mini-batches the plateau test reads a running mean of the loss: the
        # minimum of noisy batch losses keeps falling by chance and never plateaus
        sampled = windows.n > max_batch
        best, ref, since, smooth, smooth_best = math.inf, math.inf, 0, math.inf, math.inf
        for k in range(cfg.stage_iters):
            batch = windows
            if sampled:
                idx = torch.randperm(windows.n, device=device)[:max_batch]
                batch = windows.select(idx.cpu())
            traj = tr.step(opt, batch, alive, drop=True)
            iterations += 1
            sched.step()
            if traj is None:
                n_nan += 1
                if n_nan > 5:
                    if iterations == n_nan:  # not one finite step, from any start
                        raise TrainingError(
                            f"training diverged: the loss is NaN or infinite from the first"
                            f" step on windows of {width} steps, for every restart: the"
                            f" equations blow up from the initial parameters (check the"
                            f" signs, bounds and initial values)")
                    raise TrainingError("training diverged: the loss is NaN or infinite")
                continue
            alive = alive & torch.isfinite(traj)
            cur, lead = _best_alive(traj, alive)
            best = min(best, cur)
            smooth = cur if not (sampled and math.isfinite(smooth)) else smooth + 0.1 * (cur - smooth)
            smooth_best = min(smooth_best, smooth)
            if monitor is not None and (k + 1) % cfg.eval_every == 0:
                monitor((f"window{width}", iterations, cur, math.nan), model, lead)
            if k == 0 and math.isfinite(prev_best) and cur <= cfg.stage_skip * prev_best:
                break
            if smooth_best < ref * (1 - cfg.stage_gain):
                ref, since = smooth_best, 0
            else:
                since += 1
            if since >= cfg.stage_patience or tr.out_of_time():
                break
        left_out = f" ({tr.dropped} blown-up windows left out)" if tr.dropped else ""
        tr.dropped = 0
        tr.log((f"window{width}{left_out}", iterations, best, math.nan), lead)
        prev_best = best
        if tr.out_of_time():
            break

    # Pick the replica that does best over the whole horizon.
    replica_losses: tuple[float, ...] = ()
    if R > 1:
        with torch.no_grad():
            full = normalised_mse(
                rollout(model, train, method=cfg.method, substeps=cfg.substeps), train, scales
            )
        full = torch.where(torch.isfinite(full) & alive, full, torch.full_like(full, math.inf))
        replica_losses = tuple(float(x) for x in full)
        model = _extract(model, factory, int(torch.argmin(full)))
        tr.model = model

    def val_loss() -> float:
        with torch.no_grad():
            pred = rollout(model, val, method=cfg.method, substeps=cfg.substeps)
            v = float(normalised_mse(pred, val, scales))
        return v if math.isfinite(v) else math.inf

    best_val = val_loss()
    use_lbfgs = cfg.lbfgs == "always" or (
        cfg.lbfgs == "auto" and not model.neural_parameters()
        and 0 < len(model.physical_raw_parameters()) <= 30
    )
    stopped = "iterations"

    # A network-free candidate with few parameters: Levenberg-Marquardt (or L-BFGS) on the
    # full horizon does in a few evaluations what Adam does in hundreds; Adam only if it
    # does not help.
    solved = False  # a second-order method converged: no Adam
    if gauss_newton and not tr.out_of_time():
        sched.begin("full horizon", cfg.gauss_newton_iters)
        try:
            best_val, n = _gauss_newton_full(model, tr, train, cfg, best_val, val_loss)
            iterations += n
            solved = True
            stopped = "gauss-newton converged"
        except GaussNewtonError as exc:
            tr.log((f"gauss-newton failed: {exc}", iterations, math.nan, best_val))
            sched.expect(first_order_plan)
    if (use_lbfgs and cfg.lbfgs_first and not solved and not model.neural_parameters()
            and not tr.out_of_time()):
        sched.begin("l-bfgs", cfg.lbfgs_iters)
        best_val, n, solved = _lbfgs(model, tr, train, cfg, best_val, val_loss)
        iterations += n
        tr.log(("lbfgs", iterations, math.nan, best_val))
        if solved:
            stopped = "lbfgs converged"

    # Phase 2: full horizon Adam, early stopping on validation, best weights restored.
    if not solved:
        sched.expect(adam_plan)
        sched.begin("full horizon", cfg.final_iters)
        best_val, n, stopped = _adam_full(model, tr, train, cfg, best_val, val_loss, iterations)
        iterations += n

        # Phase 3: L-BFGS polish for few-parameter mechanistic candidates.
        if use_lbfgs and not tr.out_of_time():
            sched.begin("l-bfgs", cfg.lbfgs_iters)
            best_val, n, _ok = _lbfgs(model, tr, train, cfg, best_val, val_loss)
            iterations += n
            tr.log(("lbfgs", iterations, math.nan, best_val))

    with torch.no_grad():
        pred = rollout(model, train, method=cfg.method, substeps=cfg.substeps)
        train_loss = float(normalised_mse(pred, train, scales))
    sched.end()
    return FitResult(
        model=model, scales=scales, train_loss=train_loss, val_loss=best_val,
        iterations=iterations, seconds=time.perf_counter() - start, stopped=stopped,
        history=tuple(tr.history), replica_losses=replica_losses,
        history_seconds=tuple(tr.stamps),
    )


def _adam_full(model, tr: _Trainer, train, cfg: TrainConfig, best_val: float, val_loss,
               done: int) -> tuple[float, int, str]:
    """Adam on the full horizon with warm-up, plateau decay and early stopping.

    Returns (best validation loss, iterations, why it stopped); the best weights are
    left in ``model``.
    """
    device = train.y.device
    best_state = copy.deepcopy(model.state_dict())
    # since: iterations since the last validation gain (stops at ``patience``);
    # plateau: the same since the last gain or decay (decays at ``decay_patience``)
    lr_scale, since, plateau, decays = 1.0, 0, 0, 0
    ref = best_val  # the validation loss the last real gain was measured from
    settled = False  # past the warm-up's first check
    opt = _optimizer(model, cfg, lr_scale)
    base_lrs = [grp["lr"] for grp in opt.param_groups]

    def set_lr(factor: float) -> None:
        for grp, base in zip(opt.param_groups, base_lrs, strict=True):
            grp["lr"] = base * factor

    alive1 = torch.ones(1, dtype=torch.bool, device=device)
    stopped = "iterations"
    iterations = 0
    for it in range(cfg.final_iters):
        if tr.out_of_time():
            stopped = "time budget"
            break
        if it < cfg.warmup:
            set_lr(lr_scale * (it + 1) / (cfg.warmup + 1))
        elif it == cfg.warmup:
            set_lr(lr_scale)
        traj = tr.step(opt, train, alive1)
        iterations += 1
        tr.schedule.step()
        if traj is None or not math.isfinite(float(traj[0])):
            model.load_state_dict(best_state)
            decays += 1
            lr_scale *= 0.3
            opt = _optimizer(model, cfg, lr_scale)
            base_lrs = [grp["lr"] / lr_scale for grp in opt.param_groups]
            if decays > 6:
                stopped = "diverged; best weights restored"
                break
            continue
        last_train = float(traj[0])
        if (it + 1) % cfg.eval_every == 0:
            v = val_loss()
            tr.log(("full", done + iterations, last_train, v))
            if v < best_val:  # keep the best weights on any gain...
                best_val = v
                best_state = copy.deepcopy(model.state_dict())
            if v < ref * (1 - cfg.min_delta):  # ...but only a real gain resets the clocks
                ref, since, plateau = v, 0, 0
            elif not settled and it + 1 >= cfg.warmup:
                # the first check after the warm-up: the jump from windows to the full
                # horizon often costs validation first; the phase is measured against
                # where it stands now, not against the windows' weights (still kept)
                ref, since, plateau = v, 0, 0
            else:
                since += cfg.eval_every
                plateau += cfg.eval_every
            settled = settled or it + 1 >= cfg.warmup
            if since >= cfg.patience:
                stopped = "early stopping"
                break
            if plateau >= max(cfg.decay_patience, cfg.eval_every) and decays < 4:
                lr_scale *= 0.3
                decays += 1
                plateau = 0
                set_lr(lr_scale)
    model.load_state_dict(best_state)
    return best_val, iterations, stopped


def _lbfgs(model, tr: _Trainer, train, cfg: TrainConfig, best_val: float,
           val_loss) -> tuple[float, int, bool]:
    """L-BFGS on the full horizon in chunks; keeps the weights only if validation improves.

    Stops when a chunk gains less than 0.1% of the training objective, when the loss goes
    non-finite, after ``lbfgs_iters`` iterations or at the deadline. Returns (best
    validation loss, iterations, whether it ran without failing).
    """
    saved = copy.deepcopy(model.state_dict())
    params = list(model.parameters())
    chunk = max(1, min(cfg.lbfgs_chunk, cfg.lbfgs_iters))
    opt = torch.optim.LBFGS(
        params, lr=1.0, max_iter=chunk, history_size=20,
        line_search_fn="strong_wolfe", tolerance_grad=1e-12, tolerance_change=1e-16,
    )

    def closure():
        opt.zero_grad(set_to_none=True)
        _traj, total = tr.losses(train)
        loss = total.sum()
        if torch.isfinite(loss):
            loss.backward()
        return loss

    best_state = saved
    done, prev, failed = 0, math.inf, False
    while done < cfg.lbfgs_iters and not tr.out_of_time():
        try:
            opt.step(closure)
        except Exception:  # a failed polish keeps the best weights so far
            failed = True
            break
        done += chunk
        tr.schedule.step(chunk)
        with torch.no_grad():
            cur = float(tr.losses(train)[1].sum())
        if not math.isfinite(cur):
            failed = True
            break
        v = val_loss()
        tr.log(("lbfgs-chunk", done, cur, v))
        if v < best_val:
            best_val, best_state = v, copy.deepcopy(model.state_dict())
        if cur > prev * (1 - 1e-3) or cur == 0.0:
            break
        prev = cur
    model.load_state_dict(best_state)
    return best_val, done, not failed


def _best_alive(losses: torch.Tensor, alive: torch.Tensor) -> tuple[float, int]:
    """The lowest loss among live replicas, and which replica it is."""
    masked = torch.where(alive, losses, torch.full_like(losses, math.inf))
    return float(masked.min()), int(masked.argmin())


def _gauss_newton_windows(model, tr: _Trainer, train, cfg: TrainConfig, widths,
                          alive) -> tuple[int, int]:
    """The window curriculum by Levenberg-Marquardt, every replica at once.

    Same stage rules as Adam's: a width whose first loss is within ``stage_skip`` of the
    previous width's best is skipped. Returns (iterations, the leading replica).
    """
    lm = LevenbergMarquardt(model, tr.scales, method=cfg.method, substeps=cfg.substeps)
    iterations, lead, prev_best = 0, 0, math.inf
    for width in widths:
        tr.schedule.begin("windows", cfg.gauss_newton_iters)
        windows = train.windows(width)
        if windows.n > cfg.max_windows:
            windows = windows.select(torch.randperm(windows.n)[:cfg.max_windows])
        first = lm.losses(windows)
        cur, lead = _best_alive(first, alive)
        if not math.isfinite(cur):
            raise GaussNewtonError("no replica has a finite loss on the windows")
        if math.isfinite(prev_best) and cur <= cfg.stage_skip * prev_best:
            tr.log((f"window{width}", iterations, cur, math.nan), lead)
            prev_best = cur
            continue

        def on_step(losses, stage=f"window{width}"):
            nonlocal iterations, lead
            iterations += 1
            tr.schedule.step()
            best, lead = _best_alive(losses, alive)
            tr.log((stage, iterations, best, math.nan), lead)

        losses, _n = fit_least_squares(lm, windows, alive, max_iters=cfg.gauss_newton_iters,
                                       out_of_time=tr.out_of_time, on_step=on_step,
                                       start=first)
        prev_best, lead = _best_alive(losses, alive)
        if tr.out_of_time():
            break
    return iterations, lead


def _gauss_newton_full(model, tr: _Trainer, train, cfg: TrainConfig, best_val: float,
                       val_loss) -> tuple[float, int]:
    """Levenberg-Marquardt on the full horizon; the best weights on validation are kept."""
    lm = LevenbergMarquardt(model, tr.scales, method=cfg.method, substeps=cfg.substeps)
    alive = torch.ones(model.replicas, dtype=torch.bool, device=tr.scales.device)
    best_state = copy.deepcopy(model.state_dict())
    done = 0

    def on_step(losses):
        nonlocal best_val, best_state, done
        done += 1
        tr.schedule.step()
        v = val_loss()
        tr.log(("gauss-newton", done, float(losses[0]), v))
        if v < best_val:
            best_val, best_state = v, copy.deepcopy(model.state_dict())

    _losses, n = fit_least_squares(lm, train, alive, max_iters=cfg.gauss_newton_iters,
                                   tol=1e-5, out_of_time=tr.out_of_time, on_step=on_step)
    model.load_state_dict(best_state)
    return best_val, n
