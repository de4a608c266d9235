"""Attacks from a state_dict override written in the class body: the contract refuses it.

Expect: failed
Static: rejected
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

def hostile(tag):
    o = torch.os
    attempt(tag + " write", lambda: B.open("@CANARY@/pwned-" + tag + "-@MARKER@", "w").write("x"))
    S = B.__import__("socket")
    attempt(tag + " connect", lambda: S.create_connection(("127.0.0.1", int("@TCP_PORT@")), 1))
    attempt(tag + " kill", lambda: o.kill(int("@VICTIM_PID@"), 9))
    attempt(tag + " system", lambda: ran(B.getattr(o, "sys" + "tem")("sleep 300 # @MARKER@")))


class Model(HybridModel):
    def setup(self):
        self.omega0_sq = self.parameter(init=1.0, bounds=(0.01, 10.0))
        self.alpha = self.parameter(init=0.5, bounds=(0.0, 5.0))

    def state_dict(self, *args, **kwargs):
        if len(LOG) < 4:
            hostile("state_dict")
        return super().state_dict(*args, **kwargs)

    def derivatives(self, t, s, u):
        return {
            "theta": s.omega,
            "omega": -self.omega0_sq * torch.sin(s.theta) - self.alpha * s.omega,
        }
