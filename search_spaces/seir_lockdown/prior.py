from hyarch import HybridModel


class Model(HybridModel):
    """SEIR with a constant contact rate: the lockdown input is ignored."""

    def setup(self):
        self.beta0 = self.parameter(init=0.3, bounds=(0.01, 2.0))
        self.sigma = self.parameter(init=0.3, bounds=(0.01, 2.0))
        self.gamma = self.parameter(init=0.2, bounds=(0.01, 2.0))

    def derivatives(self, t, s, u):
        infection = self.beta0 * s.S * s.I
        return {
            "S": -infection,
            "E": infection - self.sigma * s.E,
            "I": self.sigma * s.E - self.gamma * s.I,
            "R": self.gamma * s.I,
        }
