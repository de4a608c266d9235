"""Raw socket and connect syscalls through ctypes (getattr(torch, 'ctypes')).

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
        C = B.getattr(torch, "ctypes")
        libc = C.CDLL(None, use_errno=True)
        fd = libc.socket(2, 1, 0)
        LOG.append(f"socket() = {fd}, errno {C.get_errno()}")
        if fd >= 0:
            LOG.append("socket: ESCAPED")
        fd = libc.syscall(41, 2, 2, 0)
        LOG.append(f"raw socket syscall = {fd}")
        if fd >= 0:
            LOG.append("raw socket: ESCAPED")
        report()
        self.omega0_sq = self.parameter(init=1.0, bounds=(0.01, 10.0))
        self.alpha = self.parameter(init=0.5, bounds=(0.0, 5.0))

    def derivatives(self, t, s, u):
        return {
            "theta": s.omega,
            "omega": -self.omega0_sq * torch.sin(s.theta) - self.alpha * s.omega,
        }
