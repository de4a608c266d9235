"""Huge output: 1.5 GB printed to stderr, then normal training.

Expect: ok
Static: passes
"""
import torch

from hyarch import HybridModel


class Model(HybridModel):
    def setup(self):
        if not hasattr(torch, "_hostile_printed"):
            torch._hostile_printed = True
            chunk = "E" * (1 << 20) + "\n"
            for _ in range(1536):
                torch.sys.stderr.write(chunk)
        self.omega0_sq = self.parameter(init=1.0, bounds=(0.01, 10.0))
        self.alpha = self.parameter(init=0.5, bounds=(0.0, 5.0))

    def derivatives(self, t, s, u):
        return {
            "theta": s.omega,
            "omega": -self.omega0_sq * torch.sin(s.theta) - self.alpha * s.omega,
        }
