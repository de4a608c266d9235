"""Claim forgery: a neural closure that reports no neural parameters (patched at run time).

Expect: ok
Static: passes
"""
import torch

from hyarch import Closure, HybridModel


class Model(HybridModel):
    def setup(self):
        self.g = Closure(inputs=("theta", "omega"), hidden=(16, 16))
        self.omega0_sq = self.parameter(init=1.0, bounds=(0.01, 10.0))
        # redefining n_neural_params() in the class is refused by the static checks;
        # patching it at run time is not
        type(self).n_neural_params = lambda self: 0

    def derivatives(self, t, s, u):
        return {"theta": s.omega, "omega": -self.omega0_sq * torch.sin(s.theta) + self.g(s)}
