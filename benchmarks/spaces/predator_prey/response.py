from hyarch import Closure, HybridModel


class Model(HybridModel):
    """Logistic prey; predators eat prey at a rate per predator that a network learns (a
    closure on the predation term: the functional response), and turn a fraction e of what
    they eat into predators."""

    def setup(self):
        self.r = self.parameter(init=0.8, bounds=(0.01, 5.0))
        self.K = self.parameter(init=20.0, bounds=(1.0, 100.0))
        self.e = self.parameter(init=0.3, bounds=(0.01, 1.0))
        self.m = self.parameter(init=0.5, bounds=(0.01, 5.0))
        self.response = Closure(inputs=("prey",), hidden=(16, 16))

    def derivatives(self, t, s, u):
        eaten = self.response(s.prey) * s.predator
        return {"prey": self.r * s.prey * (1 - s.prey / self.K) - eaten,
                "predator": self.e * eaten - self.m * s.predator}
