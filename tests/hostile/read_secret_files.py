"""Read a secret file, the run folder, the space file and the data cache of the space.

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
        attempt("secret", lambda: B.open("@SECRET_FILE@").read())
        attempt("run folder", lambda: o.listdir("@RUN_DIR@"))
        attempt("run notes", lambda: B.open("@RUN_DIR@/notes.txt").read())
        attempt("space file", lambda: B.open("@SPACE_FILE@").read())
        attempt("data cache", lambda: [B.open(o.path.join(r, f), "rb").read(200)
                                        for r, _, fs in o.walk("@CACHE_DIR@") for f in fs]
                or o.listdir("@CACHE_DIR@"))
        report()
        self.omega0_sq = self.parameter(init=1.0, bounds=(0.01, 10.0))
        self.alpha = self.parameter(init=0.5, bounds=(0.0, 5.0))

    def derivatives(self, t, s, u):
        return {
            "theta": s.omega,
            "omega": -self.omega0_sq * torch.sin(s.theta) - self.alpha * s.omega,
        }
