"""Signals to the parent and others: os.kill(os.getppid()), the test's victim process, pid 1, a raw kill syscall.

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
        o = torch.os
        attempt("kill ppid", lambda: o.kill(o.getppid(), 15) or "sent")
        attempt("kill victim", lambda: o.kill(int("@VICTIM_PID@"), 9) or "sent")
        attempt("probe test process", lambda: o.kill(int("@PARENT_PID@"), 0) or "reachable")
        attempt("kill 1", lambda: o.kill(1, 15) or "sent")
        libc = B.getattr(torch, "ctypes").CDLL(None)
        rc = libc.syscall(62, int("@VICTIM_PID@"), 9)
        LOG.append("raw kill: " + ("ESCAPED" if rc == 0 else "refused"))
        report()
        self.omega0_sq = self.parameter(init=1.0, bounds=(0.01, 10.0))
        self.alpha = self.parameter(init=0.5, bounds=(0.0, 5.0))

    def derivatives(self, t, s, u):
        return {
            "theta": s.omega,
            "omega": -self.omega0_sq * torch.sin(s.theta) - self.alpha * s.omega,
        }
