"""A hang that ignores SIGTERM/SIGINT/SIGHUP and sleeps in C.

Expect: failed
Static: passes
Timeout: 6
"""
import torch

from hyarch import HybridModel


class Model(HybridModel):
    def setup(self):
        sig = torch.sys.modules["signal"]
        for s in (sig.SIGTERM, sig.SIGINT, sig.SIGHUP):
            sig.signal(s, sig.SIG_IGN)
        torch.sys.modules["time"].sleep(10_000)
        self.omega0_sq = self.parameter(init=1.0, bounds=(0.01, 10.0))
        self.alpha = self.parameter(init=0.5, bounds=(0.0, 5.0))

    def derivatives(self, t, s, u):
        return {
            "theta": s.omega,
            "omega": -self.omega0_sq * torch.sin(s.theta) - self.alpha * s.omega,
        }
