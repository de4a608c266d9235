"""Speed benchmark (issue 7): hyarch's core against plain torchdiffeq, on the same jobs.

    python benchmarks/speed.py            # the full run (about 20 minutes on 2 busy cores)
    python benchmarks/speed.py --quick    # shorter budgets, fewer sizes (a few minutes)
    python benchmarks/speed.py --only fit --budget 120
    python benchmarks/speed.py --quick --device cuda   # the same jobs on a GPU, named

Everything runs in one process with ``torch.set_num_threads(1)``, so that the ratios are
measured on the same machine at the same time. Three ways to train the same model:

(a) ``dopri5``: eager full-horizon training through ``torchdiffeq.odeint(method="dopri5")``
    with Adam, written the way a torchdiffeq user (or an HDTwinGen-style loop) would;
(b) ``curriculum``: plain torchdiffeq (``rk4`` on the observation grid) with the
    short-window curriculum of hyarch (windows of 2, 4, 8, 16 steps from every observed
    point, then the full horizon), Adam: the strong baseline;
(c) ``hyarch``: ``hyarch.core.train.fit`` with the space's own training configuration.

Jobs: the true-structure pendulum (seconds until omega0^2 is within 0.5%) and a small
APHYNITY hybrid, the ideal pendulum plus a 32x32 closure (seconds until the validation
loss, normalised MSE, is below a target). "s to target" is the first check (every 10
iterations for the baselines, every history entry of ``fit`` through its ``monitor``)
that meets the target: an oracle stop that no method could make without the truth.
"s total" is the time each method takes under its own stopping rule (the baselines:
curriculum stages that end after 50 iterations without a 1% gain, then full-horizon Adam
with early stopping, patience 200, or the budget), which is what a search pays. Then scaling tables: milliseconds per
training iteration (forward and backward of one full rollout) against trajectories,
horizon and number of states.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, str(ROOT))

from hyarch.core.candidate import load_model_class, make_factory  # noqa: E402
from hyarch.core.data import Trajectories, state_scales  # noqa: E402
from hyarch.core.fields import rollout  # noqa: E402
from hyarch.core.metrics import normalised_mse  # noqa: E402
from hyarch.core.model import HybridModel  # noqa: E402
from hyarch.core.train import TrainConfig, fit  # noqa: E402

FRICTION = ROOT / "search_spaces" / "damped_pendulum" / "friction.py"
DEVICE = torch.device("cpu")  # --device; every job's model and data live there
HYBRID = '''
import torch
from hyarch import Closure, HybridModel


class Model(HybridModel):
    """APHYNITY-style hybrid with a small closure."""

    def setup(self):
        self.omega0_sq = self.parameter(init=1.0, bounds=(0.01, 10.0))
        self.correction = Closure(inputs=("theta", "omega"), hidden=(HIDDEN, HIDDEN))

    def derivatives(self, t, s, u):
        return {
            "theta": s.omega,
            "omega": -self.omega0_sq * torch.sin(s.theta) + self.correction(s.theta, s.omega),
        }
'''


# ----------------------------------------------------------------------------- tables
def table(title: str, header: list[str], rows: list[list]) -> str:
    """A Markdown table: readable in a terminal and pasteable into docs/speed.md."""

    def fmt(x):
        if isinstance(x, float):
            if math.isnan(x):
                return "-"
            return f"{x:.3g}" if abs(x) < 1e4 else f"{x:.0f}"
        return str(x)

    cells = [[fmt(c) for c in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(header)]
    line = lambda r: "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |"  # noqa: E731
    out = [f"\n### {title}\n", line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out += [line(r) for r in cells]
    text = "\n".join(out)
    print(text, flush=True)
    return text


# ------------------------------------------------------------------ plain torch models
class PlainPendulum(nn.Module):
    """The models as a torchdiffeq user writes them: plain parameters, y (..., 2)."""

    def __init__(self, hidden: int = 0):
        super().__init__()
        self.omega0_sq = nn.Parameter(torch.tensor(1.0))
        self.alpha = nn.Parameter(torch.tensor(0.5)) if hidden == 0 else None
        self.net = None
        if hidden:
            self.net = nn.Sequential(nn.Linear(2, hidden), nn.Tanh(), nn.Linear(hidden, hidden),
                                     nn.Tanh(), nn.Linear(hidden, 1))
            nn.init.zeros_(self.net[-1].weight)
            nn.init.zeros_(self.net[-1].bias)

    def forward(self, t, y):
        theta, omega = y[..., 0], y[..., 1]
        acc = -self.omega0_sq * torch.sin(theta)
        if self.alpha is not None:
            acc = acc - self.alpha * omega
        if self.net is not None:
            acc = acc + self.net(y).squeeze(-1)
        return torch.stack([omega, acc], dim=-1)


def _windows(y: torch.Tensor, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(starts (N, S), targets (width + 1, N, S)) of every window of ``width`` steps."""
    w = y.unfold(1, width + 1, 1)  # (B, n, S, width+1)
    w = w.permute(3, 0, 1, 2).reshape(width + 1, -1, y.shape[-1])
    return w[0], w


@dataclass
class Run:
    name: str
    seconds_to_target: float = math.nan
    seconds_to_touch: float = math.nan  # first check with omega0_sq on target, fit or not
    seconds: float = 0.0
    iterations: int = 0
    final: dict = field(default_factory=dict)

    @property
    def its_per_s(self) -> float:
        return self.iterations / self.seconds if self.seconds else math.nan


def plain_train(kind: str, train: Trajectories, val: Trajectories, *, hidden: int,
                target, budget: float, lr: float = 0.05, touch=None) -> Run:
    """Baselines (a) ``dopri5`` and (b) ``curriculum`` on plain torchdiffeq.

    ``target(model, val_loss) -> bool`` is checked every 10 iterations (and at the end of
    every curriculum stage); the clock stops at the first success.
    """
    import torchdiffeq

    torch.manual_seed(0)
    train, val = train.to(DEVICE), val.to(DEVICE)
    model = PlainPendulum(hidden).to(DEVICE)
    scales = state_scales(train)
    t = train.t[0]
    groups = [{"params": [p for n, p in model.named_parameters() if not n.startswith("net")],
               "lr": lr}]
    if hidden:
        groups.append({"params": list(model.net.parameters()), "lr": 5e-3})
    opt = torch.optim.Adam(groups)
    method = "dopri5" if kind == "dopri5" else "rk4"

    def solve(y0, grid):
        return torchdiffeq.odeint(model, y0, grid, method=method)

    def val_loss() -> float:
        with torch.no_grad():
            pred = solve(val.y[:, 0], val.t[0]).movedim(0, 1)
        return float(normalised_mse(pred, val, scales))

    run = Run(kind)
    start = time.perf_counter()
    schedule = [(w, 300) for w in (2, 4, 8, 16)] if kind == "curriculum" else []
    schedule.append((None, 10**9))
    done = False
    for width, iters in schedule:
        if width is None:
            y0, target_y, grid = train.y[:, 0], train.y.movedim(0, 1), t
            if kind == "curriculum":  # a calmer full-horizon stage, as a careful user would
                for grp in opt.param_groups:
                    grp["lr"] *= 0.2
        else:
            y0, target_y = _windows(train.y, width)
            grid = t[: width + 1] - t[0]
        best, since = math.inf, 0
        best_val, val_since = math.inf, 0
        for _ in range(iters):
            if time.perf_counter() - start > budget:
                done = True
                break
            opt.zero_grad()
            pred = solve(y0, grid)
            loss = (((pred - target_y) / scales)[1:] ** 2).mean()
            loss.backward()
            opt.step()
            run.iterations += 1
            cur = float(loss.detach())
            if width is not None:  # the stage rule of hyarch before issue 7: 1% gains
                best, since = (cur, 0) if cur < best * 0.99 else (best, since + 1)
                if since >= 50:
                    break
            if run.iterations % 10 == 0:
                if touch is not None and math.isnan(run.seconds_to_touch) and touch(model):
                    run.seconds_to_touch = time.perf_counter() - start
                if math.isnan(run.seconds_to_target) and target(model, val_loss):
                    run.seconds_to_target = time.perf_counter() - start
                if width is None:  # early stopping on validation, patience 200
                    v = val_loss()
                    best_val, val_since = ((v, 0) if v < best_val * (1 - 1e-3)
                                           else (best_val, val_since + 10))
                    if val_since >= 200:
                        break
        if done:
            break
    run.seconds = time.perf_counter() - start
    run.final = {"omega0_sq": float(model.omega0_sq), "val": val_loss()}
    return run


def hyarch_train(source: str, space, cfg: TrainConfig, target, val_target=None) -> Run:
    """hyarch's ``fit``; its ``monitor`` checks the target at every history entry."""
    cls = load_model_class(source, "<bench>")
    factory = make_factory(cls, space.states, space.inputs, space.scales(), space.shapes)
    cfg = replace(cfg, device=str(DEVICE))
    train, val_data = space.train.to(DEVICE), space.val.to(DEVICE)
    scales = state_scales(train)
    run = Run("hyarch")

    class View:  # what ``target`` reads: one replica's omega0_sq
        omega0_sq = torch.tensor(0.0)

    def monitor(entry, model, replica):
        if not math.isnan(run.seconds_to_target):
            return
        View.omega0_sq = torch.tensor(model.physical_values(replica)["omega0_sq"])

        def val() -> float:
            if not math.isnan(entry[3]):  # fit measured it already
                return entry[3]
            with torch.no_grad():
                loss = normalised_mse(rollout(model, val_data), val_data, scales)
            return float(loss.reshape(-1)[replica])

        if val_target is None and math.isnan(run.seconds_to_touch):
            if abs(float(View.omega0_sq) - space.truth["omega0_sq"]) <= (
                    0.005 * space.truth["omega0_sq"]):
                run.seconds_to_touch = time.perf_counter() - start
        if target(View, val):
            run.seconds_to_target = time.perf_counter() - start

    start = time.perf_counter()
    res = fit(factory, train, val_data, cfg, monitor=monitor)
    run.seconds = time.perf_counter() - start
    run.iterations = res.iterations
    values = res.model.physical_values()
    run.final = {"omega0_sq": values["omega0_sq"], "val": res.val_loss}
    return run


# ------------------------------------------------------------------------- fit jobs
def fit_jobs(budget: float, quick: bool, which: str = "fit") -> list[str]:
    from hyarch.spaces.loader import load_space

    space = load_space("damped_pendulum")
    truth = space.truth["omega0_sq"]
    out = []

    def touch(model):
        return abs(float(model.omega0_sq) - truth) / truth <= 0.005

    def param_target(model, val):  # on target *and* fitting: a transient pass does not count
        return touch(model) and val is not None and val() <= 1e-4

    rows = []
    if which == "hybrid":
        runs = []
    else:
        runs = [plain_train(k, space.train, space.val, hidden=0, target=param_target, budget=budget,
                            touch=touch) for k in ("dopri5", "curriculum")]
        runs.append(hyarch_train(FRICTION.read_text(), space, space.train_config(), param_target))
    for r in runs:
        err = abs(r.final["omega0_sq"] - truth) / truth
        rows.append([r.name, r.seconds_to_target, r.seconds_to_touch, r.seconds, r.iterations,
                     r.its_per_s, 100 * err, r.final["val"]])
    if runs:
        out.append(table(
            "True-structure pendulum (omega0_sq, alpha): time to omega0^2 error <= 0.5%"
            " with val nmse <= 1e-4",
            ["method", "s to target", "s to first touch", "s total", "iterations", "it/s",
             "final err %", "final val nmse"], rows))
        _ratios(runs)
    if which == "true":
        return out

    hidden = 32
    source = HYBRID.replace("HIDDEN", str(hidden))
    val_target = 1e-3

    def val_target_fn(_model, val):
        return val() <= val_target

    rows = []
    runs = [plain_train(k, space.train, space.val, hidden=hidden, target=val_target_fn,
                        budget=budget) for k in ("dopri5", "curriculum")]
    runs.append(hyarch_train(source, space, space.train_config(), val_target_fn, val_target))
    for r in runs:
        err = abs(r.final["omega0_sq"] - truth) / truth
        rows.append([r.name, r.seconds_to_target, r.seconds, r.iterations, r.its_per_s,
                     100 * err, r.final["val"]])
    out.append(table(
        f"Hybrid: ideal pendulum + {hidden}x{hidden} closure: time to val nmse <= {val_target:g}",
        ["method", "s to target", "s total", "iterations", "it/s", "omega0_sq err %",
         "final val nmse"], rows))
    _ratios(runs)
    return out


def _ratios(runs: list[Run]) -> None:
    """hyarch against the plain-torchdiffeq curriculum, by both clocks."""
    cur, hy = runs[1], runs[2]
    for label, a, b in (("to the target", cur.seconds_to_target, hy.seconds_to_target),
                        ("in total", cur.seconds, hy.seconds)):
        if math.isfinite(a) and math.isfinite(b) and b > 0:
            print(f"hyarch vs plain-torchdiffeq curriculum {label}: {a / b:.2f}x", flush=True)


# ---------------------------------------------------------------------- scaling jobs
class Diffusion(HybridModel):
    """1-D reaction-diffusion on a periodic grid: N states in one field state."""

    def setup(self):
        self.d = self.parameter(init=0.1, bounds=(0.001, 1.0))
        self.k = self.parameter(init=0.5, bounds=(0.01, 5.0))

    def derivatives(self, t, s, u):
        x = s.u
        lap = torch.roll(x, 1, -1) + torch.roll(x, -1, -1) - 2 * x
        return {"u": self.d * lap - self.k * x}


def _pendulum_data(B: int, T: int) -> Trajectories:
    g = torch.Generator().manual_seed(0)
    cls = load_model_class(FRICTION.read_text(), "<friction>")
    model = cls(("theta", "omega"))
    model.set_physical({"omega0_sq": 1.0966, "alpha": 0.2})
    d = torch.randn(B, 2, generator=g)
    y0 = d / d.norm(dim=-1, keepdim=True) * (1.3 + torch.rand(B, 1, generator=g))
    t = (torch.arange(T) * 0.5).expand(B, -1)
    seed = Trajectories.from_arrays(t, torch.zeros(B, T, 2), states=("theta", "omega"))
    with torch.no_grad():
        y = rollout(model, seed, y0=y0)
    return Trajectories.from_arrays(t, y, states=("theta", "omega"))


def _diffusion_data(N: int, B: int = 8, T: int = 40) -> Trajectories:
    g = torch.Generator().manual_seed(0)
    x = torch.linspace(0, 2 * math.pi, N + 1)[:-1]
    y0 = torch.sin(x[None] + 6 * torch.rand(B, 1, generator=g)) + 0.1
    model = Diffusion(("u",), shapes={"u": (N,)})
    t = (torch.arange(T) * 0.1).expand(B, -1)
    seed = Trajectories.from_arrays(t, torch.zeros(B, T, N), states=("u",),
                                    shapes={"u": (N,)})
    with torch.no_grad():
        y = rollout(model, seed, y0=y0)
    return Trajectories.from_arrays(t, y, states=("u",), shapes={"u": (N,)})


def _sync() -> None:
    if DEVICE.type == "cuda":
        torch.cuda.synchronize(DEVICE)


def _ms_per_iter(step, reps: int) -> float:
    step()  # warm-up
    _sync()
    start = time.perf_counter()
    for _ in range(reps):
        step()
    _sync()
    return 1000 * (time.perf_counter() - start) / reps


def _iteration_costs(model: HybridModel, data: Trajectories, reps: int, dopri: bool):
    """ms per iteration: hyarch rk4, plain torchdiffeq rk4 and (optionally) dopri5."""
    import torchdiffeq

    model, data = model.to(DEVICE), data.to(DEVICE)
    scales = state_scales(data)
    params = list(model.parameters())

    def hy():
        loss = normalised_mse(rollout(model, data), data, scales)
        torch.autograd.grad(loss, params)

    def f(t, y):
        return model.vector_field(t.expand(y.shape[0]), y, None)

    def td(method):
        def run():
            with model.cached_parameters():  # the same field, only the integrator differs
                pred = torchdiffeq.odeint(f, data.y[:, 0], data.t[0], method=method)
            pred = pred.movedim(0, 1)
            loss = normalised_mse(pred, data, scales)
            torch.autograd.grad(loss, params)
        return run

    out = [_ms_per_iter(hy, reps), _ms_per_iter(td("rk4"), reps)]
    out.append(_ms_per_iter(td("dopri5"), max(1, reps // 3)) if dopri else math.nan)
    return out


def scaling_jobs(quick: bool) -> list[str]:
    reps = 3 if quick else 5
    cls = load_model_class(FRICTION.read_text(), "<friction>")
    out = []
    header = ["hyarch rk4 ms/it", "torchdiffeq rk4 ms/it", "torchdiffeq dopri5 ms/it",
              "rk4 ratio"]
    rows = []
    for B in ((10, 100, 1000) if quick else (10, 30, 100, 300, 1000)):
        data = _pendulum_data(B, 40)
        c = _iteration_costs(cls(("theta", "omega")), data, reps, dopri=B <= 100)
        rows.append([B, *c, c[1] / c[0]])
    out.append(table("Cost per training iteration vs trajectories (pendulum, 40 points)",
                     ["trajectories", *header], rows))
    rows = []
    for T in ((40, 100, 400) if quick else (40, 100, 200, 400)):
        data = _pendulum_data(25, T)
        c = _iteration_costs(cls(("theta", "omega")), data, reps, dopri=T <= 100)
        rows.append([T, *c, c[1] / c[0]])
    out.append(table("Cost per training iteration vs horizon (pendulum, 25 trajectories)",
                     ["points", *header], rows))
    rows = []
    for N in ((2, 32, 256) if quick else (2, 8, 32, 128, 256)):
        data = _diffusion_data(N)
        model = Diffusion(("u",), shapes={"u": (N,)})
        c = _iteration_costs(model, data, reps, dopri=N <= 32)
        rows.append([N, *c, c[1] / c[0]])
    out.append(table("Cost per training iteration vs states (1-D diffusion grid, 8 x 40)",
                     ["states", *header], rows))
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="short budgets and fewer sizes")
    p.add_argument("--budget", type=float, default=None,
                   help="seconds per baseline training run (default 300, --quick 90)")
    p.add_argument("--only", choices=("fit", "true", "hybrid", "scaling"), default=None,
                   help="fit = true + hybrid")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1 (all three methods)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    global DEVICE
    DEVICE = torch.device(args.device)
    if DEVICE.type == "cuda" and not torch.cuda.is_available():
        p.error(f"--device {args.device}: this torch build has no CUDA device")
    name = torch.cuda.get_device_name(DEVICE) if DEVICE.type == "cuda" else "cpu"
    budget = args.budget or (90.0 if args.quick else 300.0)
    print(f"torch {torch.__version__}, {args.threads} thread(s), device {DEVICE} ({name}),"
          f" baseline budget {budget:g} s", flush=True)
    if args.only in (None, "fit", "true", "hybrid"):
        fit_jobs(budget, args.quick, args.only or "fit")
    if args.only in (None, "scaling"):
        scaling_jobs(args.quick)


if __name__ == "__main__":
    main()
