from hyarch import HybridModel


class Model(HybridModel):
    """Classical Lotka-Volterra on pelt counts (thousands, years)."""

    def setup(self):
        self.alpha = self.parameter(init=0.5, bounds=(0.01, 5.0))
        self.beta = self.parameter(init=0.02, bounds=(1e-4, 1.0))
        self.gamma = self.parameter(init=0.8, bounds=(0.01, 5.0))
        self.delta = self.parameter(init=0.02, bounds=(1e-4, 1.0))

    def derivatives(self, t, s, u):
        return {
            "hare": self.alpha * s.hare - self.beta * s.hare * s.lynx,
            "lynx": self.delta * s.hare * s.lynx - self.gamma * s.lynx,
        }
