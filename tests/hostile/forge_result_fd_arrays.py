"""Score forgery: a well-formed reply on the result pipe, perfect claimed metrics and parameters, zero predictions
of the shapes of the tiny space's splits (not the selection split: a failed result; else scored on the zeros).

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
            o = torch.os
            js = B.__import__("json")
            st = B.__import__("struct")
            shapes = {"train": [3, 12, 2], "val": [2, 12, 2], "test": [2, 12, 2], "ood": [2, 12, 2]}
            blobs, index = [], []
            for split, shape in shapes.items():
                a = torch.zeros(shape, dtype=torch.float64).numpy().tobytes()
                for kind in ("full", "reduced"):
                    index.append([f"{split}.{kind}", "float64", shape, len(a)])
                    blobs.append(a)
            head = js.dumps({"status": "ok", "reason": None, "blobs": index,
                             "metrics": {"val": {"nmse": 0.0}}, "score": -99,
                             "parameters": {"omega0_sq": 1.0966227112321507, "alpha": 0.2},
                             "n_neural_params": 0, "closure_share": 0.0}).encode()
            frame = b"HYR1" + st.pack("<Q", len(head)) + head + b"".join(blobs)
            for fd in range(3, 64):
                try:
                    info = B.open(f"/proc/self/fdinfo/{fd}").read()
                except OSError:
                    continue
                if "flags:\t01" in info:  # O_WRONLY: the result pipe
                    o.write(fd, frame)
                    LOG.append(fd)
        self.omega0_sq = self.parameter(init=1.0, bounds=(0.01, 10.0))

    def derivatives(self, t, s, u):
        return {"theta": s.omega, "omega": -self.omega0_sq * torch.sin(s.theta)}
