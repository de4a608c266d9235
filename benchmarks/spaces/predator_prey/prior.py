from hyarch import HybridModel


class Model(HybridModel):
    """Logistic prey, mass-action (linear functional response) predation."""

    def setup(self):
        self.r = self.parameter(init=0.8, bounds=(0.01, 5.0))
        self.K = self.parameter(init=20.0, bounds=(1.0, 100.0))
        self.beta = self.parameter(init=0.3, bounds=(0.001, 5.0))
        self.delta = self.parameter(init=0.1, bounds=(0.001, 5.0))
        self.m = self.parameter(init=0.5, bounds=(0.01, 5.0))

    def derivatives(self, t, s, u):
        return {
            "prey": self.r * s.prey * (1 - s.prey / self.K) - self.beta * s.prey * s.predator,
            "predator": self.delta * s.prey * s.predator - self.m * s.predator,
        }
