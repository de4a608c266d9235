"""The one way hyarch runs candidate code: an isolated child, scored by the parent.

``run_candidate(space, source)`` checks the code statically, sends the child the training
data, a selection split for early stopping and only the *starts* (initial states, time
grids, inputs) of the splits it will be scored on, runs it under the isolation of
``hyarch.sandbox.isolation`` with resource limits and a wall-clock kill, reads back a
size-capped reply and computes every score itself. A child that hangs, eats memory,
crashes, returns malformed or mis-shaped predictions or tries something forbidden becomes
a failed result with a reason; the parent never raises for the candidate's sake.

``isolation="none"`` runs the same work in the caller's process, for trusted code and
debugging only (``--no-sandbox``); the search never uses it.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hyarch.core.progress import TrainingProgress
from hyarch.sandbox.checks import CheckError, check_source
from hyarch.sandbox.protocol import (
    MAX_HEADER,
    MAX_PROGRESS_BYTES,
    MAX_PROGRESS_LINE,
    MAX_WEIGHTS,
    ReplyError,
    decode_progress,
    decode_reply,
    number,
    text,
)

SECRET_MARKERS = ("KEY", "TOKEN", "SECRET", "PASSWORD", "PASSWD", "CREDENTIAL", "AUTH",
                  "COOKIE", "SESSION", "PRIVATE", "_URL", "DSN", "URI")
# the child's environment is built from this list, never copied from the parent's
ENV_ALLOW = ("LANG", "LC_ALL", "LC_CTYPE", "OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE",
             "CUDA_VISIBLE_DEVICES", "TZ")
STDERR_KEPT = 4000
ISOLATIONS = ("auto", "none")


@dataclass(frozen=True, kw_only=True)
class Limits:
    timeout: float = 600.0  # seconds of wall clock
    memory_mb: int = 6144  # address space
    threads: int = 1
    scratch_mb: int = 256  # the private /tmp, and the largest file the child may write
    open_files: int = 256


@dataclass(frozen=True)
class SandboxResult:
    result: dict[str, Any]
    weights: bytes | None = None
    seconds: float = 0.0
    returncode: int | None = None
    stderr_tail: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    predictions: dict[str, np.ndarray] = field(default_factory=dict)


def failed(reason: str, seconds: float = 0.0, **extra) -> dict[str, Any]:
    return {
        "status": "failed", "reason": reason, "parameters": {}, "param_rel_error": {},
        "metrics": {}, "reduced": {}, "regularizers": {}, "closure_share": None,
        "n_neural_params": None, "seconds": round(seconds, 3), **extra,
    }


# -- secrets -----------------------------------------------------------------------------


def secret_values() -> list[str]:
    """Values in the parent's environment that must never appear in anything a candidate
    returns: API keys, tokens, passwords, URLs (which may carry credentials)."""
    out = []
    for k, v in os.environ.items():
        if any(m in k.upper() for m in SECRET_MARKERS) and len(v) >= 6:
            out.append(v)
    return sorted(set(out), key=len, reverse=True)


def scrub(s: str, limit: int = 2000) -> str:
    """Cut, make printable and redact the parent's secrets from an untrusted string."""
    s = text(s, limit)
    for v in secret_values():
        if v in s:
            s = s.replace(v, "[redacted]")
    return s


def clean_env(threads: int, scratch: str) -> dict[str, str]:
    env = {k: os.environ[k] for k in ENV_ALLOW if k in os.environ}
    env.update(PATH="/usr/bin:/bin", HOME=scratch, TMPDIR=scratch, PYTHONHASHSEED="0",
               PYTHONDONTWRITEBYTECODE="1", MPLCONFIGDIR=scratch,
               TORCHINDUCTOR_CACHE_DIR=os.path.join(scratch, "inductor"))
    for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[k] = str(threads)
    return env


# -- the job -------------------------------------------------------------------------------


def _public_spec(space) -> str:
    """The space's specification without the truth and without where the data came from
    (a simulator's true parameters, a CSV's path)."""
    d = space.spec.model_dump(mode="json")
    d["truth"] = {}
    d["data"] = {"simulator": {"name": "withheld"}}
    d["baselines"] = {}
    d["prior"] = None
    return json.dumps(d)


def build_job(space, source: str, *, filename: str, device: str,
              overrides: dict[str, Any] | None, threads: int, post: dict | None
              ) -> tuple[dict[str, Any], dict[str, tuple[int, ...]]]:
    from hyarch.sandbox.work import traj_to_job

    fit, selection = space.fit_and_selection()
    scored = {**space.splits, "selection": selection}
    condition = {name: space.conditioning(name) for name in space.splits}
    condition = {k: v for k, v in condition.items() if v}
    predict = {name: traj_to_job(tr, starts_only=True, keep=condition.get(name, 1))
               for name, tr in scored.items()}
    expected = {}
    for name, tr in scored.items():
        shape = tuple(tr.y.shape)
        expected[f"{name}.full"] = shape
        expected[f"{name}.reduced"] = shape
        if name in condition:
            expected[f"{name}.population"] = shape
    job = {"source": source, "filename": filename, "device": device, "threads": threads,
           "overrides": dict(overrides or {}), "spec": _public_spec(space),
           "scales": space.scales(), "fit": traj_to_job(fit), "selection": traj_to_job(selection),
           "predict": predict, "condition": condition, "post": post or {}}
    return job, expected


# -- running it ----------------------------------------------------------------------------

_NOTICE_LOCK = threading.Lock()
_NOTICE_SHOWN = False


def isolation_notice() -> list[str]:
    """What this machine's isolation lacks (empty when every layer works)."""
    from hyarch.sandbox.isolation import detect

    return list(detect().notes)


def _warn_once() -> None:
    global _NOTICE_SHOWN
    with _NOTICE_LOCK:
        if _NOTICE_SHOWN:
            return
        _NOTICE_SHOWN = True
    for note in isolation_notice():
        print(f"hyarch: sandbox: {note}", file=sys.stderr)


def package_dir() -> str:
    import hyarch

    return os.path.dirname(os.path.realpath(hyarch.__file__))


def run_candidate(
    space, source: str, *, filename: str = "model.py", limits: Limits = Limits(),
    device: str = "cpu", overrides: dict[str, Any] | None = None,
    post: dict[str, Any] | None = None, isolation: str = "auto", check_only: bool = False,
    progress: Callable[[TrainingProgress], None] | None = None,
) -> SandboxResult:
    """Static checks, then train in the child and score its predictions here.

    ``space`` is a ``Space`` (or a name or path, loaded here). ``post`` asks the child for
    post-training steps on the trained model (``{"distill": {...}, "profile": {...}}``);
    their output comes back in ``extra``. ``check_only`` builds the model and runs one
    derivative evaluation (the contract check) without training. ``progress``, if given,
    is called (from another thread, in order, before this returns) with each report the
    child makes on how its training goes; what the child writes there never reaches the
    result, and a ``progress`` that raises is not called again."""
    if not hasattr(space, "splits"):
        from hyarch.spaces.loader import load_space

        space = load_space(space)
    if isolation not in ISOLATIONS:
        raise ValueError(f"unknown isolation {isolation!r}; valid: {', '.join(ISOLATIONS)}")
    start = time.perf_counter()
    try:
        check_source(source, filename)
    except CheckError as e:
        return SandboxResult(failed(str(e), time.perf_counter() - start),
                             seconds=time.perf_counter() - start)
    job, expected = build_job(space, source, filename=filename, device=device,
                              overrides=overrides, threads=limits.threads, post=post)
    job["check_only"] = check_only
    job["time_limit"] = limits.timeout  # optional post-training work stops short of it
    if isolation == "none":
        return _in_process(space, job, expected, start, progress)
    _warn_once()
    with tempfile.TemporaryDirectory(prefix="hyarch-sandbox-") as scratch:
        return _run_child(space, job, expected, limits, scratch, start, device, progress)


def _in_process(space, job, expected, start, progress=None) -> SandboxResult:
    from hyarch.sandbox.protocol import encode_reply
    from hyarch.sandbox.work import run_job

    header, arrays, weights = run_job(job, progress=progress)
    return _score(space, decode_reply(encode_reply(header, arrays, weights), expected),
                  time.perf_counter() - start, None, "", None, job["source"])


def _run_child(space, job, expected, limits: Limits, scratch: str, start: float,
               device: str, progress=None) -> SandboxResult:
    from hyarch.sandbox import isolation as iso
    from hyarch.sandbox.protocol import encode_job

    caps = iso.detect()
    pkg = package_dir()
    inner_scratch = "/tmp" if caps.bwrap else scratch
    read_fd, write_fd = os.pipe()
    job["result_fd"] = write_fd
    child_fds = [write_fd]
    progress_read = None
    if progress is not None:
        progress_read, progress_write = os.pipe()
        job["progress_fd"] = progress_write
        child_fds.append(progress_write)
    job["lockdown"] = {"landlock_abi": caps.landlock_abi, "seccomp": caps.seccomp,
                       "read": iso.read_roots(pkg) + ["/dev/null", "/dev/urandom", "/proc/self",
                                                      "/proc/cpuinfo", "/sys/devices/system/cpu"]
                       + (["/dev", "/sys"] if device.startswith("cuda") else []),
                       "write": [inner_scratch]}
    boot = ("import importlib.util as u, sys;"
            f"s = u.spec_from_file_location('hyarch', {os.path.join(pkg, '__init__.py')!r},"
            f" submodule_search_locations=[{pkg!r}]);"
            "m = u.module_from_spec(s); sys.modules['hyarch'] = m; s.loader.exec_module(m);"
            "from hyarch.sandbox.child import main; main()")
    argv = [sys.executable, "-I", "-B", "-c", boot]
    env = clean_env(limits.threads, inner_scratch)
    if caps.bwrap:
        argv = iso.bwrap_command(caps.bwrap, pkg, limits.scratch_mb, device.startswith("cuda"))
        argv += [a for k, v in env.items() for a in ("--setenv", k, v)]
        argv += ["--", sys.executable, "-I", "-B", "-c", boot]

    def limit():
        mem = limits.memory_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        cpu = int(limits.timeout * max(limits.threads, 1)) + 30
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 5))
        fsize = limits.scratch_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
        resource.setrlimit(resource.RLIMIT_NOFILE, (limits.open_files, limits.open_files))
        if not caps.bwrap:
            iso.set_parent_death_signal()

    payload = encode_job(job)
    cap = sum(int(np.prod(s)) * 8 for s in expected.values()) + MAX_HEADER + MAX_WEIGHTS + 4096
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, env=env, pass_fds=tuple(child_fds),
                                preexec_fn=limit, start_new_session=True, cwd=scratch)
    except OSError as e:
        for fd in [read_fd, *child_fds] + ([progress_read] if progress_read is not None else []):
            os.close(fd)
        return SandboxResult(failed(f"the evaluation process could not start: {e}"))
    for fd in child_fds:
        os.close(fd)
    with _LIVE_LOCK:
        _LIVE.add(proc)
    reply_box: list[bytes] = []
    over = threading.Event()
    reader = threading.Thread(target=lambda: reply_box.append(_read_capped(read_fd, cap, over)),
                              daemon=True)
    reader.start()
    err_box: list[bytes] = []
    err_reader = threading.Thread(target=lambda: err_box.append(_tail(proc.stderr)),
                                  daemon=True)
    err_reader.start()
    writer = threading.Thread(target=_feed, args=(proc, payload), daemon=True)
    writer.start()
    watcher, returned = None, threading.Event()
    if progress_read is not None:
        watcher = threading.Thread(target=_read_progress,
                                   args=(progress_read, progress, returned), daemon=True)
        watcher.start()
    timed_out = False
    deadline = time.monotonic() + limits.timeout
    try:
        while True:
            try:
                proc.wait(timeout=0.2)
                break
            except subprocess.TimeoutExpired:
                if over.is_set():
                    _kill(proc)
                    break
                if time.monotonic() > deadline:
                    timed_out = True
                    _kill(proc)
                    break
    finally:
        if proc.returncode is None:  # the whole group: nothing it started survives
            _kill(proc)
        with _LIVE_LOCK:
            _LIVE.discard(proc)
    reader.join(timeout=10)
    err_reader.join(timeout=10)
    if watcher is not None:  # every report is delivered before the result is returned
        watcher.join(timeout=10)
        returned.set()  # (and none after it, whatever still holds the pipe open)
    seconds = time.perf_counter() - start
    stderr = scrub((err_box[0] if err_box else b"").decode(errors="replace"), STDERR_KEPT)
    rc = proc.returncode
    if timed_out:
        return SandboxResult(failed(f"timed out after {limits.timeout:g} s (the wall-clock"
                                    " limit)", seconds), seconds=seconds, returncode=rc,
                             stderr_tail=stderr)
    if over.is_set():
        return SandboxResult(failed(f"the evaluation process returned more than {cap} bytes"
                                    " (the result size limit)", seconds), seconds=seconds,
                             returncode=rc, stderr_tail=stderr)
    data = reply_box[0] if reply_box else b""
    if not data:
        return SandboxResult(failed(_why_no_result(rc, stderr, limits), seconds),
                             seconds=seconds, returncode=rc, stderr_tail=stderr)
    try:
        reply = decode_reply(data, expected)
    except ReplyError as e:
        return SandboxResult(failed(str(e), seconds), seconds=seconds, returncode=rc,
                             stderr_tail=stderr)
    return _score(space, reply, seconds, rc, stderr, limits, job["source"])


def _why_no_result(rc: int | None, stderr: str, limits: Limits) -> str:
    if rc is not None and rc < 0:
        try:
            sig = signal.Signals(-rc).name
        except ValueError:
            sig = f"signal {-rc}"
        why = f"the evaluation process was killed by {sig}"
        if -rc == signal.SIGXCPU:
            why += " (the CPU-time limit)"
        elif -rc == signal.SIGXFSZ:
            why += f" (it wrote a file larger than {limits.scratch_mb} MB)"
        elif -rc in (signal.SIGKILL, signal.SIGSEGV, signal.SIGABRT):
            why += f" (likely the {limits.memory_mb} MB memory limit)"
    else:
        why = f"the evaluation process exited with code {rc} and no result"
        if any(m in stderr for m in ("MemoryError", "std::bad_alloc", "DefaultCPUAllocator")):
            why = f"the candidate exceeded the {limits.memory_mb} MB memory limit"
    last = stderr.strip().splitlines()[-1:] if stderr.strip() else []
    return why + (f": {last[0][:300]}" if last else "")


def _score(space, reply, seconds, rc, stderr, limits: Limits | None = None,
           source: str | None = None) -> SandboxResult:
    from hyarch.sandbox.scoring import score_reply

    if reply.header.get("checked") is True and reply.header.get("status") == "ok":
        return SandboxResult({"status": "ok", "reason": None, "checked": True}, None, seconds,
                             rc, stderr)

    result = score_reply(space, reply, seconds, source)
    # provenance: how this evaluation was isolated (the record says so, not only a warning)
    if limits is None:
        result["isolation"] = "none (in process)"
    else:
        from hyarch.sandbox.isolation import detect

        result["isolation"] = detect().describe()
    from hyarch.record import Evaluation

    result = Evaluation.from_dict(result).to_dict()  # the typed record's schema, always
    reason = str(result.get("reason") or "")
    if limits and any(m in reason for m in ("DefaultCPUAllocator", "bad_alloc", "out of memory")):
        result["reason"] = (f"the candidate exceeded the {limits.memory_mb} MB memory limit"
                            f" ({reason[:200]})")
    post = reply.header.get("post") if result["status"] == "ok" else None
    extra = _post_extra(post)
    weights = reply.weights if result["status"] == "ok" else None
    preds = reply.arrays if result["status"] == "ok" else {}
    return SandboxResult(result, weights, seconds, rc, stderr, extra, preds)


def _post_extra(post: Any) -> dict[str, Any]:
    """Post-training output, as untrusted JSON: re-encoded and bounded, strings scrubbed."""
    if not isinstance(post, dict):
        return {}
    out = {}
    for k in ("distilled", "distill_error", "profile", "profile_error"):
        if k in post:
            out[k] = _clean(post[k])
    return out


def _clean(x: Any, depth: int = 0) -> Any:
    if depth > 8:
        return None
    if isinstance(x, str):
        return scrub(x, 20000)
    if isinstance(x, bool) or x is None:
        return x
    if isinstance(x, (int, float)):
        return number(x) if isinstance(x, float) else x
    if isinstance(x, list):
        return [_clean(v, depth + 1) for v in x[:200]]
    if isinstance(x, dict):
        return {scrub(str(k), 200): _clean(v, depth + 1) for k, v in list(x.items())[:200]}
    return None


def _feed(proc: subprocess.Popen, payload: bytes) -> None:
    try:
        proc.stdin.write(payload)
        proc.stdin.close()
    except (BrokenPipeError, OSError, ValueError):
        pass


def _read_capped(fd: int, cap: int, over: threading.Event) -> bytes:
    parts, n = [], 0
    with os.fdopen(fd, "rb") as fh:
        while True:
            b = fh.read(1 << 16)
            if not b:
                break
            n += len(b)
            if n > cap:
                over.set()
                return b""
            parts.append(b)
    return b"".join(parts)


def _read_progress(fd: int, deliver: Callable[[TrainingProgress], None] | None,
                   returned: threading.Event) -> None:
    """Read the child's progress pipe until it closes, ``MAX_PROGRESS_BYTES`` at most
    (then close it: the child's later reports fail, its training goes on), and pass each
    valid report to ``deliver``. An over-long line is skipped to its end; anything that is
    not a report is dropped; a ``deliver`` that raises is not called again."""
    total, pending, skipping = 0, b"", False
    with os.fdopen(fd, "rb", buffering=0) as fh:
        while total < MAX_PROGRESS_BYTES:
            try:
                chunk = fh.read(min(1 << 16, MAX_PROGRESS_BYTES - total))
            except OSError:
                return
            if not chunk:
                return
            total += len(chunk)
            *lines, pending = (pending + chunk).split(b"\n")
            for line in lines:
                if skipping:  # the end of a line that was already too long
                    skipping = False
                    continue
                event = decode_progress(line)
                if event is None or deliver is None or returned.is_set():
                    continue
                try:
                    deliver(event)
                except Exception:  # noqa: BLE001 - showing progress never fails an evaluation
                    deliver = None
            if len(pending) > MAX_PROGRESS_LINE:
                pending, skipping = b"", True


def _tail(stream) -> bytes:
    """Drain a stream and keep only its last bytes (a candidate may print gigabytes)."""
    keep = b""
    while True:
        b = stream.read(1 << 16)
        if not b:
            return keep
        keep = (keep + b)[-STDERR_KEPT * 2:]


_LIVE: set[subprocess.Popen] = set()
_LIVE_LOCK = threading.Lock()


def kill_all() -> None:
    """Kill every evaluation still running (on Ctrl-C)."""
    with _LIVE_LOCK:
        procs = list(_LIVE)
    for p in procs:
        _kill(p)


def _kill(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        pass


def check_candidate(space, source: str, filename: str = "model.py") -> str | None:
    """The contract check (build the model, one derivative) in the sandbox: None when it
    passes, else the reason."""
    res = run_candidate(space, source, filename=filename, limits=Limits(timeout=120),
                        check_only=True)
    return None if res.result.get("status") == "ok" else str(res.result.get("reason"))


def run_file(space, path: str | Path, **kw) -> SandboxResult:
    p = Path(path)
    return run_candidate(space, p.read_text(), filename=str(p), **kw)
