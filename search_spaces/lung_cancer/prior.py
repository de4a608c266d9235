import torch

from hyarch import HybridModel


class Model(HybridModel):
    """Gompertz growth, chemotherapy kill and drug clearance; no radiotherapy effect."""

    def setup(self):
        self.rho = self.parameter(init=0.01, bounds=(1e-4, 0.5))
        self.K = self.parameter(init=5000.0, bounds=(100.0, 1e5))
        self.beta_c = self.parameter(init=0.01, bounds=(1e-4, 1.0))

    def derivatives(self, t, s, u):
        v = torch.clamp(s.v, min=1e-6)  # the log needs a positive volume
        return {
            "v": (self.rho * torch.log(self.K / v) - self.beta_c * s.c) * s.v,
            "c": -s.c / 2 + u.chemo,
        }
