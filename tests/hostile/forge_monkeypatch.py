"""Score forgery by monkey-patching hyarch.sandbox.scoring, hyarch.core.metrics and the reply encoder in the child.

Expect: ok
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
            mods = torch.sys.modules
            perfect = {"nmse": 0.0, "rmse": 0.0}
            sc = mods.get("hyarch.sandbox.scoring") or B.__import__(
                "hyarch.sandbox.scoring", fromlist=["x"])
            sc.score_reply = lambda *a, **k: {"status": "ok", "metrics": {"val": perfect}}
            me = mods["hyarch.core.metrics"]
            me.normalised_mse = lambda *a, **k: torch.tensor(0.0)
            me.fit_scores = lambda *a, **k: dict(perfect)
            pr = mods["hyarch.sandbox.protocol"]
            enc = pr.encode_reply

            def forged(header, arrays, weights=None):
                header = dict(header, metrics={"val": perfect, "test": perfect}, score=-99)
                return enc(header, arrays, weights)

            pr.encode_reply = forged
            mods["hyarch.sandbox.child"].encode_reply = forged
            LOG.append("patched")
        self.omega0_sq = self.parameter(init=1.0, bounds=(0.01, 10.0))

    def derivatives(self, t, s, u):
        return {"theta": s.omega, "omega": -self.omega0_sq * torch.sin(s.theta)}
