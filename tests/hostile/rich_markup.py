"""A failure message full of rich markup ([/oops], [link]) and ANSI/OSC escapes.

Expect: failed
Static: passes
"""
import torch

from hyarch import HybridModel


class Model(HybridModel):
    def setup(self):
        raise ValueError("[/oops] [bold red]boom[/] \x1b[31mred\x1b[0m \x1b]0;pwned\x07"
                         " [link=https://example.invalid]x[/link] \r\x00 [/]")
        self.omega0_sq = self.parameter(init=1.0, bounds=(0.01, 10.0))
        self.alpha = self.parameter(init=0.5, bounds=(0.0, 5.0))

    def derivatives(self, t, s, u):
        return {
            "theta": s.omega,
            "omega": -self.omega0_sq * torch.sin(s.theta) - self.alpha * s.omega,
        }
