"""Read the parent's environment: /proc/<parent pid>/environ, /proc/<ppid>/environ, /proc/1/environ.

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

        def rd(p):
            fd = o.open(p, o.O_RDONLY)
            return o.read(fd, 1 << 16).decode("latin-1").replace("\0", " ")

        for p in ("/proc/@PARENT_PID@/environ", f"/proc/{o.getppid()}/environ",
                  "/proc/1/environ", "/proc/@PARENT_PID@/cmdline"):
            attempt(p, lambda p=p: rd(p)[:1500])
        LOG.append("own environ: " + rd("/proc/self/environ")[:1500])
        report()
        self.omega0_sq = self.parameter(init=1.0, bounds=(0.01, 10.0))
        self.alpha = self.parameter(init=0.5, bounds=(0.0, 5.0))

    def derivatives(self, t, s, u):
        return {
            "theta": s.omega,
            "omega": -self.omega0_sq * torch.sin(s.theta) - self.alpha * s.omega,
        }
