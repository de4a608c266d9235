"""Huge output: an exception whose message is 300 MB.

Expect: failed
Static: passes
Memory: 6144
"""
import torch

from hyarch import HybridModel


class Model(HybridModel):
    def setup(self):
        raise ValueError("A" * 300_000_000)
        self.omega0_sq = self.parameter(init=1.0, bounds=(0.01, 10.0))
        self.alpha = self.parameter(init=0.5, bounds=(0.0, 5.0))

    def derivatives(self, t, s, u):
        return {
            "theta": s.omega,
            "omega": -self.omega0_sq * torch.sin(s.theta) - self.alpha * s.omega,
        }
