"""ctypes.pythonapi.PyRun_SimpleString (reached by getattr) runs unchecked code that imports os and subprocess.

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

CODE = b"""
import builtins, os, subprocess, socket
log = builtins.__dict__.setdefault("_hostile_log", [])
for what, fn in [
    ("system", lambda: os.system("sleep 300 # @MARKER@") or "exit 0"),
    ("Popen", lambda: subprocess.Popen(["/bin/sh", "-c", "sleep 300", "@MARKER@"])),
    ("write", lambda: open("@CANARY@/pwned-@MARKER@", "w").write("x")),
    ("connect", lambda: socket.create_connection(("127.0.0.1", @TCP_PORT@), 2)),
]:
    try:
        r = fn()
        if isinstance(r, int) and r != 0:
            raise OSError(r)
        log.append(what + ": ESCAPED " + repr(r)[:60])
    except BaseException as e:
        log.append(what + ": refused (" + type(e).__name__ + ")")
"""


class Model(HybridModel):
    def setup(self):
        C = B.getattr(torch, "ctypes")
        rc = C.pythonapi.PyRun_SimpleString(CODE)
        LOG.append(f"PyRun_SimpleString returned {rc}")
        LOG.extend(B.getattr(B, "_hostile_log", []))
        report()
        self.omega0_sq = self.parameter(init=1.0, bounds=(0.01, 10.0))
        self.alpha = self.parameter(init=0.5, bounds=(0.0, 5.0))

    def derivatives(self, t, s, u):
        return {
            "theta": s.omega,
            "omega": -self.omega0_sq * torch.sin(s.theta) - self.alpha * s.omega,
        }
