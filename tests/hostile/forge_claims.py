"""Claim forgery: a neural closure that reports no neural parameters and a zero closure share.

Expect: ok
Static: passes
"""
import torch

from hyarch import Closure, HybridModel


class Model(HybridModel):
    def setup(self):
        self.g = Closure(inputs=("theta", "omega"), hidden=(16, 16))
        self.omega0_sq = self.parameter(init=1.0, bounds=(0.01, 10.0))

    def n_neural_params(self):
        return 0

    def derivatives(self, t, s, u):
        return {"theta": s.omega, "omega": -self.omega0_sq * torch.sin(s.theta) + self.g(s)}
