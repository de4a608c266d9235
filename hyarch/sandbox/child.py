"""The child process that trains one untrusted candidate.

Reads a job (JSON) on stdin, loads the space, installs a runtime guard (an audit hook that
refuses file writes, sockets, subprocesses and non-library file reads), evaluates the
candidate and writes one JSON reply to the result pipe (fd given in the job). Anything
that goes wrong becomes a failed result; a crash or kill is read by the parent.
"""

from __future__ import annotations

import base64
import io
import json
import os
import sys


def _install_guard(allowed_read_roots: tuple[str, ...], scratch: str) -> dict:
    state = {"active": False}
    blocked_events = {
        "socket.connect", "socket.bind", "socket.__new__", "subprocess.Popen", "os.system",
        "os.exec", "os.posix_spawn", "os.spawn", "os.fork", "os.forkpty", "os.kill",
        "os.remove", "os.rename", "os.rmdir", "os.mkdir", "shutil.rmtree", "os.chdir",
        "ctypes.dlopen", "urllib.Request", "http.client.connect", "webbrowser.open",
    }

    def hook(event, args):
        if not state["active"]:
            return
        if event in blocked_events:
            raise PermissionError(f"sandbox: {event} is not allowed in a candidate")
        if event == "open":
            path, mode, flags = (list(args) + [None, None, None])[:3]
            writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
                isinstance(flags, int) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT))
            if isinstance(path, (str, bytes)) and scratch and os.path.realpath(
                    os.fsdecode(path)).startswith(scratch):
                return  # the process's private scratch folder (torch's caches)
            if writing:
                raise PermissionError(f"sandbox: writing {path!r} is not allowed in a candidate")
            if isinstance(path, (str, bytes)):
                p = os.path.realpath(os.fsdecode(path))
                if not p.startswith(allowed_read_roots):
                    raise PermissionError(
                        f"sandbox: reading {p!r} is not allowed in a candidate")

    sys.addaudithook(hook)
    return state


def main() -> int:
    job = json.loads(sys.stdin.read())
    out_fd = int(job["result_fd"])
    reply: dict = {}
    try:
        import torch

        torch.set_num_threads(int(job.get("threads", 1)))
        from hyarch.evaluate import evaluate_source, failed, worth_distilling
        from hyarch.spaces.loader import load_space

        space = load_space(job["space"])
        roots = tuple({os.path.dirname(os.path.dirname(torch.__file__)),
                       os.path.dirname(os.path.dirname(__import__("hyarch").__file__)),
                       sys.prefix, sys.base_prefix, "/usr/lib", "/usr/share", "/proc/self",
                       "/sys/devices/system/cpu", "/dev/null", "/dev/urandom"})
        import tempfile

        import torch._dynamo  # noqa: F401 - torch imports it lazily on the first optimizer step

        scratch = os.path.realpath(tempfile.gettempdir())
        guard = _install_guard(roots, scratch if job.get("scratch") else "")
        distill = None
        if job.get("distill"):
            try:
                from hyarch.distill import distill_candidate as distill
            except ImportError:  # pysindy/scikit-learn not installed: no distillation
                distill = None
        guard["active"] = True
        try:
            out = evaluate_source(space, job["source"], filename=job.get("filename", "model.py"),
                                  device=job.get("device", "cpu"),
                                  overrides=job.get("overrides") or {})
            reply = {"result": out.result}
            if (distill is not None and out.model is not None
                    and out.result.get("status") == "ok" and out.model.closures()
                    and worth_distilling(out.result)):
                try:  # what did the networks learn? (train/val states only)
                    entries = distill(space, job["source"], out.model)
                    reply["distilled"] = entries
                except Exception as e:  # noqa: BLE001 - distillation is a bonus, never fatal
                    reply["distill_error"] = f"{type(e).__name__}: {e}"
        finally:
            guard["active"] = False
        if out.model is not None and out.result.get("status") == "ok":
            buf = io.BytesIO()
            torch.save({k: v.detach().cpu() for k, v in out.model.state_dict().items()}, buf)
            reply["weights"] = base64.b64encode(buf.getvalue()).decode()
    except MemoryError:
        reply = {"result": failed("the candidate ran out of memory (MemoryError)")}
    except BaseException as e:  # noqa: BLE001 - everything becomes a failed result
        from hyarch.evaluate import failed

        reply = {"result": failed(f"{type(e).__name__}: {e}")}
    data = json.dumps(reply, default=str).encode()
    with os.fdopen(out_fd, "wb") as fh:
        fh.write(data)
    return 0


if __name__ == "__main__":
    sys.exit(main())
