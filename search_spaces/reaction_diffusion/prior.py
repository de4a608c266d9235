import torch

from hyarch import HybridModel

DX = 2.0 / 16  # the [-1, 1] square on a 16 x 16 grid


def laplacian(x):
    """Five-point Laplacian with periodic boundaries over the last two axes."""
    return (torch.roll(x, 1, -1) + torch.roll(x, -1, -1) + torch.roll(x, 1, -2)
            + torch.roll(x, -1, -2) - 4 * x) / DX ** 2


class Model(HybridModel):
    """FitzHugh-Nagumo reaction-diffusion without the constant k in the activator."""

    def setup(self):
        self.a = self.parameter(init=3e-3, bounds=(1e-5, 1e-1))
        self.b = self.parameter(init=3e-3, bounds=(1e-5, 1e-1))

    def derivatives(self, t, s, u):
        return {
            "u": self.a * laplacian(s.u) + s.u - s.u ** 3 - s.v,
            "v": self.b * laplacian(s.v) + s.u - s.v,
        }
