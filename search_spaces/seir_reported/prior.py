from hyarch import HybridModel


class Model(HybridModel):
    """SEIR with a constant contact rate, seen through reported cases."""

    def setup(self):
        self.beta0 = self.parameter(init=0.3, bounds=(0.01, 2.0), description="contact rate",
                                    unit="1/day")
        self.sigma = self.parameter(init=0.2, bounds=(0.01, 2.0),
                                    description="1 / incubation period", unit="1/day")
        self.gamma = self.parameter(init=0.15, bounds=(0.01, 2.0),
                                    description="1 / infectious period", unit="1/day")
        self.rho = self.parameter(init=0.5, bounds=(0.01, 1.0),
                                  description="fraction of new cases reported")

    def derivatives(self, t, s, u):
        susceptible = 1 - s.E - s.I - s.R
        infection = self.beta0 * susceptible * s.I
        return {"E": infection - self.sigma * s.E,
                "I": self.sigma * s.E - self.gamma * s.I,
                "R": self.gamma * s.I}

    def observe(self, s, u):
        return {"cases": self.rho * self.sigma * s.E}
