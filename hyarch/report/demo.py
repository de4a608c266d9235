"""A small run folder made without the search loop: to try review and report, and for tests.

``make_demo_run`` trains the pendulum prior (as the baseline), the prior plus friction, the
APHYNITY-style hybrid and a drag variant with a short schedule, adds one candidate that
fails, and records them in the run's Optuna study as the search would.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from hyarch.runs import Run

DRAG = '''\
import torch

from hyarch import Closure, HybridModel


class Model(HybridModel):
    """The prior plus quadratic drag and a small closure on d(omega)/dt."""

    def setup(self):
        self.omega0_sq = self.parameter(init=1.0, bounds=(0.01, 10.0))
        self.c_drag = self.parameter(init=0.1, bounds=(0.0, 5.0))
        self.correction = Closure(inputs=("theta", "omega"), hidden=(16, 16))

    def derivatives(self, t, s, u):
        return {
            "theta": s.omega,
            "omega": -self.omega0_sq * torch.sin(s.theta)
            - self.c_drag * s.omega * torch.abs(s.omega)
            + self.correction(s.theta, s.omega),
        }
'''

# A pendulum small enough to train the demo in seconds (tests, a first look).
QUICK_SPACE = """\
name: quick_pendulum
description: A damped pendulum, small enough for a demo run in seconds.
states:
  theta: {description: angle from the downward vertical, unit: rad}
  omega: {description: angular velocity, unit: rad/s}
data:
  simulator:
    name: damped_pendulum
    options: {points: 16, dt: 0.5, radius: [1.3, 2.3]}
    trajectories: {train: 4, val: 3, test: 3}
    ood: {trajectories: 3, options: {radius: [2.3, 2.8]}}
    seed: 0
truth:
  omega0_sq: 1.0966227112321507
  alpha: 0.2
training:
  windows: [2, 4]
  stage_iters: 20
  final_iters: 40
  patience: 20
  restarts: 1
  lbfgs: never
  regularizers: {closure_norm: 1.0e-3}
"""

BROKEN = '''\
import torch

from hyarch import HybridModel


class Model(HybridModel):
    """Forgets to return theta's derivative."""

    def setup(self):
        self.omega0_sq = self.parameter(init=1.0, bounds=(0.01, 10.0))

    def derivatives(self, t, s, u):
        return {"omega": -self.omega0_sq * torch.sin(s.theta)}
'''


def _pendulum_file(name: str) -> str:
    from hyarch.spaces.loader import builtin_dir

    return (builtin_dir("search_spaces") / "damped_pendulum" / f"{name}.py").read_text()


def demo_candidates(with_drag: bool = True) -> list[dict[str, Any]]:
    """(id, source, meta) of the demo candidates, in proposal order."""
    out = [
        {"id": "c0000", "source": _pendulum_file("prior"),
         "meta": {"proposer": "baseline", "parents": [], "round": 0, "label": "prior"}},
        {"id": "c0001", "source": _pendulum_file("aphynity"),
         "meta": {"proposer": "llm", "parents": ["c0000"], "round": 1}},
        {"id": "c0002", "source": _pendulum_file("friction"),
         "meta": {"proposer": "offline", "parents": ["c0000"], "round": 1}},
        {"id": "c0003", "source": BROKEN,
         "meta": {"proposer": "llm", "parents": ["c0002"], "round": 2}},
    ]
    if with_drag:
        out.append({"id": "c0004", "source": DRAG,
                    "meta": {"proposer": "offline", "parents": ["c0002"], "round": 2}})
    return out


def make_demo_run(path: str | Path, space_ref: str | Path | None = "damped_pendulum", *,
                  overrides: dict[str, Any] | None = None, with_drag: bool = True,
                  study: bool = True) -> Run:
    """Write a finished demo run at ``path`` (trains 3 or 4 small models on the CPU, each
    in the sandbox as the search does), with weights, stored predictions and results.

    ``space_ref=None`` uses a tiny pendulum space written into the run folder (seconds).
    """
    from hyarch.evaluate import evaluate_source
    from hyarch.runs import atomic_write
    from hyarch.spaces.loader import load_space

    if space_ref is None:
        space_ref = Path(path) / "space.yaml"
        space_ref.parent.mkdir(parents=True, exist_ok=True)
        space_ref.write_text(QUICK_SPACE)
    space = load_space(space_ref)
    run = Run(path)
    run.write_config({"name": Path(path).name, "space": str(space.path),
                      "proposer": "demo", "seed": 0})
    for c in demo_candidates(with_drag):
        src = c["source"]
        meta = {**c["meta"], "code_hash": hashlib.sha256(src.encode()).hexdigest()[:16]}
        d = run.write_proposal(c["id"], src, meta)
        out = evaluate_source(space, src, filename=str(d / "model.py"),
                              overrides=dict(overrides or {}))
        if out.weights is not None:  # trained in the sandbox: the weights come back as bytes
            atomic_write(d / "weights.pt", out.weights)
        if out.predictions:  # what reports and review plot (they never run candidate code)
            run.write_predictions(c["id"], out.predictions)
        run.write_result(c["id"], out.result)
    if study:
        record_study(run)
    return run


def record_study(run: Run) -> None:
    """One trial per finished candidate in the run's journal, as the search records them."""
    from hyarch.ranking.study import open_study, record

    study = open_study(run)
    for rec in run.finished():
        record(study, rec.id, rec.meta, rec.result or {})
