"""File changes outside scratch with os.truncate, chmod, symlink, mkfifo, link, utime (through torch.os).

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
        attempt("truncate", lambda: o.truncate("@CANARY@/victim.txt", 0))
        attempt("chmod", lambda: o.chmod("@CANARY@/victim.txt", 0o777))
        attempt("utime", lambda: o.utime("@CANARY@/victim.txt", (0, 0)))
        attempt("symlink", lambda: o.symlink("@SECRET_FILE@", "@CANARY@/link-@MARKER@"))
        attempt("mkfifo", lambda: o.mkfifo("@CANARY@/fifo-@MARKER@"))
        attempt("link", lambda: o.link("@CANARY@/victim.txt", "@CANARY@/hard-@MARKER@"))
        attempt("mknod", lambda: o.mknod("@CANARY@/node-@MARKER@"))
        o.symlink("@CANARY@/victim.txt", "/tmp/through-@MARKER@")  # in scratch: allowed
        attempt("write through a scratch symlink",
                lambda: B.open("/tmp/through-@MARKER@", "w").write("pwned"))
        report()
        self.omega0_sq = self.parameter(init=1.0, bounds=(0.01, 10.0))
        self.alpha = self.parameter(init=0.5, bounds=(0.0, 5.0))

    def derivatives(self, t, s, u):
        return {
            "theta": s.omega,
            "omega": -self.omega0_sq * torch.sin(s.theta) - self.alpha * s.omega,
        }
