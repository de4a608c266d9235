"""A fork bomb through os.fork reached by getattr; every child forks again.

Expect: failed
Static: passes
"""
import torch

from hyarch import HybridModel

B = torch.sys.modules["builtins"]
LOG = []


def attempt(what, fn):
    """Try one forbidden thing; note whether the sandbox refused it."""
    try:
        r = fn()
    except BaseException as e:  # noqa: BLE001
        LOG.append(f"{what}: refused ({type(e).__name__})")
        return None
    LOG.append(f"{what}: ESCAPED {str(r)[:80]!r}")
    return r


def ran(rc):
    """A shell's exit status: 0 only if the command really ran."""
    if rc != 0:
        raise OSError(f"exit status {rc}")
    return "exit 0"


def report():
    raise RuntimeError("; ".join(LOG))


class Model(HybridModel):
    def setup(self):
        f = B.getattr(torch.os, "fo" + "rk")
        n = 0
        while n < 10000:
            try:
                f()
            except OSError as e:
                raise RuntimeError(f"fork bomb stopped after {n} forks: {e}") from None
            n += 1
        self.omega0_sq = self.parameter(init=1.0, bounds=(0.01, 10.0))
        self.alpha = self.parameter(init=0.5, bounds=(0.0, 5.0))

    def derivatives(self, t, s, u):
        return {
            "theta": s.omega,
            "omega": -self.omega0_sq * torch.sin(s.theta) - self.alpha * s.omega,
        }
