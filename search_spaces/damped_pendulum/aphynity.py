import torch

from hyarch import Closure, HybridModel


class Model(HybridModel):
    """APHYNITY-style hybrid: the ideal pendulum plus an additive closure on d(omega)/dt."""

    def setup(self):
        self.omega0_sq = self.parameter(init=1.0, bounds=(0.01, 10.0))
        self.correction = Closure(inputs=("theta", "omega"), hidden=(64, 64))

    def derivatives(self, t, s, u):
        return {
            "theta": s.omega,
            "omega": -self.omega0_sq * torch.sin(s.theta) + self.correction(s.theta, s.omega),
        }
