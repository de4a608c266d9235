"""Score forgery by importing hyarch internals (`import hyarch.evaluate as ev`).

Expect: failed
Static: rejected
"""
import torch

import hyarch.evaluate as ev
from hyarch import HybridModel


class Model(HybridModel):
    def setup(self):
        ev.worth_distilling = None
        self.omega0_sq = self.parameter(init=1.0, bounds=(0.01, 10.0))

    def derivatives(self, t, s, u):
        return {"theta": s.omega, "omega": -self.omega0_sq * torch.sin(s.theta)}
