import torch

from hyarch import HybridModel


class Model(HybridModel):
    """The ideal, frictionless pendulum: the expert's prior."""

    def setup(self):
        self.omega0_sq = self.parameter(init=1.0, bounds=(0.01, 10.0))

    def derivatives(self, t, s, u):
        return {"theta": s.omega, "omega": -self.omega0_sq * torch.sin(s.theta)}
