"""ctypes reached by getattr(torch, 'ctypes'): libc system(), fork(), raw fork/clone syscalls, daemon().

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

        def child_sleeps(pid):
            if pid == 0:
                libc.sleep(300)
                libc._exit(0)
            if pid < 0:
                raise OSError(C.get_errno(), "refused")
            return pid

        attempt("system", lambda: ran(B.getattr(libc, "sys" + "tem")(b"sleep 300 # @MARKER@")))
        attempt("fork", lambda: child_sleeps(B.getattr(libc, "fo" + "rk")()))
        attempt("raw fork", lambda: child_sleeps(libc.syscall(57)))
        attempt("raw clone", lambda: child_sleeps(libc.syscall(56, 17, 0, 0, 0, 0)))
        attempt("raw execve", lambda: ran(libc.syscall(59, b"/bin/sh", None, None)))
        report()
        self.omega0_sq = self.parameter(init=1.0, bounds=(0.01, 10.0))
        self.alpha = self.parameter(init=0.5, bounds=(0.0, 5.0))

    def derivatives(self, t, s, u):
        return {
            "theta": s.omega,
            "omega": -self.omega0_sq * torch.sin(s.theta) - self.alpha * s.omega,
        }
