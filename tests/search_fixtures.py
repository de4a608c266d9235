"""A tiny searchable space (prior, hypotheses, closures) for the search-loop tests."""

from __future__ import annotations

import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PRIOR = ROOT / "search_spaces" / "damped_pendulum" / "prior.py"
FRICTION = ROOT / "search_spaces" / "damped_pendulum" / "friction.py"

SPACE = f"""\
name: tiny_search
description: A damped pendulum, small enough to search in a test.
states:
  theta: {{description: angle, unit: rad}}
  omega: {{description: angular velocity, unit: rad/s}}
data:
  simulator:
    name: damped_pendulum
    options: {{points: 12, dt: 0.5, radius: [1.3, 2.3]}}
    trajectories: {{train: 3, val: 2, test: 2}}
    ood: {{trajectories: 2, options: {{radius: [2.3, 2.8]}}}}
truth: {{omega0_sq: 1.0966227112321507, alpha: 0.2}}
prior: {PRIOR}
hypotheses:
  omega:
    - {{name: linear_friction, expr: "-alpha * s.omega",
       parameters: {{alpha: {{init: 0.5, bounds: [0.0, 5.0]}}}}}}
    - {{name: constant_torque, expr: "tau0", parameters: {{tau0: {{init: 0.0, bounds: [-1.0, 1.0]}}}}}}
closures:
  - {{state: omega, inputs: [theta, omega], hidden: [[8, 8]]}}
training:
  windows: [2, 4]
  stage_iters: 15
  final_iters: 20
  patience: 10
  restarts: 1
  lbfgs: never
  max_seconds: 60
budget: {{candidates: 4, per_round: 2}}
"""


HYBRID = '''import torch
from hyarch import Closure, HybridModel


class Model(HybridModel):
    def setup(self):
        self.omega0_sq = self.parameter(init=1.0, bounds=(0.01, 10.0))
        self.g = Closure(inputs=("theta", "omega"), hidden=(8, 8))

    def derivatives(self, t, s, u):
        return {"theta": s.omega, "omega": -self.omega0_sq * torch.sin(s.theta) + self.g(s)}
'''


def write_space(tmp_path: Path) -> Path:
    path = tmp_path / "tiny_search.yaml"
    path.write_text(textwrap.dedent(SPACE))
    return path
