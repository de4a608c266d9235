from hyarch import HybridModel


class Model(HybridModel):
    """One-compartment model, first-order absorption and elimination (per kg of body weight);
    absorption and clearance vary between subjects. Initial values: Pinheiro and Bates'
    starting estimates (log ka 0.5, log ke -2.5, log Cl -3)."""

    def setup(self):
        self.ka = self.parameter(init=1.65, bounds=(0.05, 20.0), individual=True,
                                 description="absorption rate", unit="1/h")
        self.ke = self.parameter(init=0.082, bounds=(0.005, 2.0),
                                 description="elimination rate", unit="1/h")
        self.Cl = self.parameter(init=0.05, bounds=(0.001, 1.0), individual=True,
                                 description="clearance", unit="L/h/kg")

    def derivatives(self, t, s, u):
        volume = self.Cl / self.ke
        return {
            "gut": -self.ka * s.gut,
            "conc": self.ka * s.gut / volume - self.ke * s.conc,
        }
