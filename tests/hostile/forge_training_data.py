"""Score forgery: return the training (fit/selection) observations as the predictions, found with gc and patched into the child's rollout.

Expect: any
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
            gc = torch.sys.modules["gc"]
            fits = [o["y"] for o in gc.get_objects()
                    if isinstance(o, dict) and "y" in o and "t" in o and "state_names" in o]
            LOG.append(len(fits))
            work = torch.sys.modules["hyarch.sandbox.work"]
            real = work.rollout

            def memorised(model, data, **kw):
                out = real(model, data, **kw)
                for y in fits:  # the observed trajectories, stretched to the asked shape
                    if y.shape[1:] == out.shape[1:] and float(y[:, 1:].abs().sum()) > 0:
                        return y[torch.arange(out.shape[0]) % y.shape[0]].to(out.dtype)
                return out

            work.rollout = memorised
        self.omega0_sq = self.parameter(init=1.0, bounds=(0.01, 10.0))

    def derivatives(self, t, s, u):
        return {"theta": s.omega, "omega": -self.omega0_sq * torch.sin(s.theta)}
