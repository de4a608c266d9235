"""Score forgery: write a reply claiming perfect metrics straight to the result pipe with torch.os.write.

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
            js = B.__import__("json")
            st = B.__import__("struct")
            head = js.dumps({"status": "ok", "reason": None, "metrics": {"val": {"nmse": 0.0}},
                             "parameters": {"omega0_sq": 1.0966227112321507}, "blobs": []}).encode()
            frame = b"HYR1" + st.pack("<Q", len(head)) + head
            for fd in range(3, 64):
                try:
                    if o.stat(f"/proc/self/fd/{fd}") and o.get_blocking(fd) is not None:
                        mode = B.open(f"/proc/self/fdinfo/{fd}").read()
                        if "flags:\t01" in mode or "flags:\t02" in mode:  # write-only
                            o.write(fd, frame)
                            LOG.append(fd)
                except OSError:
                    pass
        self.omega0_sq = self.parameter(init=1.0, bounds=(0.01, 10.0))

    def derivatives(self, t, s, u):
        return {"theta": s.omega, "omega": -self.omega0_sq * torch.sin(s.theta)}
