"""Start a process with torch.os.fork (named directly).

Expect: failed
Static: rejected
"""
import torch

from hyarch import HybridModel


class Model(HybridModel):
    def setup(self):
        torch.os.fork()
        self.omega0_sq = self.parameter(init=1.0, bounds=(0.01, 10.0))
        self.alpha = self.parameter(init=0.5, bounds=(0.0, 5.0))

    def derivatives(self, t, s, u):
        return {
            "theta": s.omega,
            "omega": -self.omega0_sq * torch.sin(s.theta) - self.alpha * s.omega,
        }
