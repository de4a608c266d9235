"""A thread writes garbage to the result pipe all through training, racing the real reply.

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
        if not LOG:
            o = torch.os

            def spam():
                fds = []
                for fd in range(3, 64):
                    try:
                        if "flags:\t01" in B.open(f"/proc/self/fdinfo/{fd}").read():
                            fds.append(fd)
                    except OSError:
                        pass
                while True:
                    for fd in fds:
                        try:
                            o.write(fd, b"garbage" * 100)
                        except OSError:
                            return
                    B.__import__("time").sleep(0.01)

            torch.threading.Thread(target=spam, daemon=True).start()
            LOG.append("started")
        self.omega0_sq = self.parameter(init=1.0, bounds=(0.01, 10.0))
        self.alpha = self.parameter(init=0.5, bounds=(0.0, 5.0))

    def derivatives(self, t, s, u):
        return {
            "theta": s.omega,
            "omega": -self.omega0_sq * torch.sin(s.theta) - self.alpha * s.omega,
        }
