from hyarch import HybridModel


class Model(HybridModel):
    """Classical Lotka-Volterra: exponential prey growth, mass-action predation."""

    def setup(self):
        self.alpha = self.parameter(init=0.8, bounds=(0.01, 5.0))
        self.beta = self.parameter(init=0.3, bounds=(0.01, 5.0))
        self.delta = self.parameter(init=0.3, bounds=(0.01, 5.0))
        self.gamma = self.parameter(init=0.8, bounds=(0.01, 5.0))

    def derivatives(self, t, s, u):
        return {
            "prey": self.alpha * s.prey - self.beta * s.prey * s.predator,
            "predator": self.delta * s.prey * s.predator - self.gamma * s.predator,
        }
