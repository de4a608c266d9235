"""A hang: an infinite loop in derivatives.

Expect: failed
Static: passes
Timeout: 6
"""

from hyarch import HybridModel


class Model(HybridModel):
    def setup(self):
        self.omega0_sq = self.parameter(init=1.0, bounds=(0.01, 10.0))
        self.alpha = self.parameter(init=0.5, bounds=(0.0, 5.0))

    def derivatives(self, t, s, u):
        while True:
            pass
