"""Start a process with _posixsubprocess.fork_exec reached through torch.sys.modules.

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
        ps = torch.sys.modules.get("_posixsubprocess") or B.__import__("_posixsubprocess")
        o = torch.os
        r, w = o.pipe()
        args = [b"/bin/sh", b"-c", b"sleep 300", b"@MARKER@"]
        base = [args, [b"/bin/sh"], True, (), None, None, -1, -1, -1, -1, -1, -1, r, w,
                True, False, -1, None, None, -1, -1, None]

        def go():
            try:
                return ps.fork_exec(*base)
            except TypeError:
                return ps.fork_exec(*base, True)

        attempt("fork_exec", go)
        report()
        self.omega0_sq = self.parameter(init=1.0, bounds=(0.01, 10.0))
        self.alpha = self.parameter(init=0.5, bounds=(0.0, 5.0))

    def derivatives(self, t, s, u):
        return {
            "theta": s.omega,
            "omega": -self.omega0_sq * torch.sin(s.theta) - self.alpha * s.omega,
        }
