"""Memory exhaustion: allocate and touch 256 MB blocks until refused.

Expect: failed
Static: passes
Memory: 2048
"""
import torch

from hyarch import HybridModel


class Model(HybridModel):
    def setup(self):
        hog = []
        while True:
            hog.append(torch.ones(32 * 1024 * 1024, dtype=torch.float64))
        self.omega0_sq = self.parameter(init=1.0, bounds=(0.01, 10.0))
        self.alpha = self.parameter(init=0.5, bounds=(0.0, 5.0))

    def derivatives(self, t, s, u):
        return {
            "theta": s.omega,
            "omega": -self.omega0_sq * torch.sin(s.theta) - self.alpha * s.omega,
        }
