"""Running one candidate evaluation in a child process with limits.

Limits: wall-clock timeout (the process group is killed), address-space limit, capped
threads, an environment without API keys or tokens. A child that hangs, runs out of
memory, crashes or is killed becomes a failed result with a reason; the parent never
raises for the candidate's sake.
"""

from __future__ import annotations

import base64
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hyarch.sandbox.checks import CheckError, check_source

SECRET_MARKERS = ("KEY", "TOKEN", "SECRET", "PASSWORD", "CREDENTIAL", "AUTH")


@dataclass(frozen=True, kw_only=True)
class Limits:
    timeout: float = 600.0  # seconds of wall clock
    memory_mb: int = 6144  # address space
    threads: int = 1


@dataclass(frozen=True)
class SandboxResult:
    result: dict[str, Any]
    weights: bytes | None = None
    seconds: float = 0.0
    returncode: int | None = None
    stderr_tail: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def clean_env(threads: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not any(m in k.upper() for m in SECRET_MARKERS)}
    for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[k] = str(threads)
    env["PYTHONHASHSEED"] = "0"
    env.pop("OPENAI_BASE_URL", None)
    return env


def _fail(reason: str, seconds: float, **kw) -> SandboxResult:
    from hyarch.evaluate import failed

    return SandboxResult(failed(reason, seconds), seconds=seconds, **kw)


def run_candidate(
    space_path: str | Path, source: str, *, filename: str = "model.py", limits: Limits = Limits(),
    device: str = "cpu", overrides: dict[str, Any] | None = None, distill: bool = False,
) -> SandboxResult:
    """Static checks, then train and score ``source`` in a child process."""
    start = time.perf_counter()
    try:
        check_source(source, filename)
    except CheckError as e:
        return _fail(str(e), time.perf_counter() - start)
    scratch = tempfile.TemporaryDirectory(prefix="hyarch-sandbox-")
    try:
        return _run(space_path, source, filename, limits, device, overrides, scratch.name, start,
                    distill)
    finally:
        scratch.cleanup()


def _run(space_path, source, filename, limits, device, overrides, scratch, start, distill):
    read_fd, write_fd = os.pipe()
    job = {"space": str(space_path), "source": source, "filename": filename,
           "device": device, "overrides": overrides or {}, "threads": limits.threads,
           "result_fd": write_fd, "scratch": scratch, "distill": distill}
    env = clean_env(limits.threads)
    env.update(TMPDIR=scratch, TORCHINDUCTOR_CACHE_DIR=os.path.join(scratch, "inductor"))

    def limit():
        os.setsid()
        mem = limits.memory_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))

    proc = subprocess.Popen(
        [sys.executable, "-m", "hyarch.sandbox.child"], stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env,
        pass_fds=(write_fd,), preexec_fn=limit,
    )
    os.close(write_fd)
    with _LIVE_LOCK:
        _LIVE.add(proc)
    chunks: list[bytes] = []
    reader = threading.Thread(target=lambda: chunks.append(_read_all(read_fd)), daemon=True)
    reader.start()
    err_chunks: list[bytes] = []
    err_reader = threading.Thread(target=lambda: err_chunks.append(proc.stderr.read()),
                                  daemon=True)
    err_reader.start()
    try:
        proc.stdin.write(json.dumps(job).encode())
        proc.stdin.close()
    except BrokenPipeError:
        pass
    timed_out = False
    try:
        proc.wait(timeout=limits.timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        _kill(proc)
    reader.join(timeout=10)
    err_reader.join(timeout=10)
    with _LIVE_LOCK:
        _LIVE.discard(proc)
    seconds = time.perf_counter() - start
    stderr = (err_chunks[0] if err_chunks else b"").decode(errors="replace")[-2000:]
    if timed_out:
        return _fail(f"timed out after {limits.timeout:g} s (the wall-clock limit)", seconds,
                     returncode=proc.returncode, stderr_tail=stderr)
    data = chunks[0] if chunks else b""
    if not data:
        rc = proc.returncode
        if rc is not None and rc < 0:
            sig = signal.Signals(-rc).name
            why = f"the evaluation process was killed by {sig}"
            if -rc in (signal.SIGKILL, signal.SIGSEGV, signal.SIGABRT):
                why += f" (likely the {limits.memory_mb} MB memory limit)"
        else:
            why = f"the evaluation process exited with code {rc} and no result"
            if "MemoryError" in stderr or "std::bad_alloc" in stderr or "DefaultCPUAllocator" in stderr:
                why = f"the candidate exceeded the {limits.memory_mb} MB memory limit"
        last = stderr.strip().splitlines()[-1:] if stderr.strip() else []
        return _fail(why + (f": {last[0]}" if last else ""), seconds,
                     returncode=rc, stderr_tail=stderr)
    try:
        reply = json.loads(data)
    except json.JSONDecodeError:
        return _fail("the evaluation process returned an unreadable result", seconds,
                     returncode=proc.returncode, stderr_tail=stderr)
    result = reply["result"]
    reason = str(result.get("reason") or "")
    if "DefaultCPUAllocator" in reason or "bad_alloc" in reason or "out of memory" in reason:
        result["reason"] = (f"the candidate exceeded the {limits.memory_mb} MB memory limit"
                            f" ({reason[:200]})")
    weights = base64.b64decode(reply["weights"]) if reply.get("weights") else None
    extra = {k: reply[k] for k in ("distilled", "distill_error") if k in reply}
    return SandboxResult(result, weights, seconds, proc.returncode, stderr, extra)


_LIVE: set[subprocess.Popen] = set()
_LIVE_LOCK = threading.Lock()


def kill_all() -> None:
    """Kill every evaluation still running (on Ctrl-C)."""
    with _LIVE_LOCK:
        procs = list(_LIVE)
    for p in procs:
        _kill(p)


def _read_all(fd: int) -> bytes:
    parts = []
    with os.fdopen(fd, "rb") as fh:
        while True:
            b = fh.read(1 << 16)
            if not b:
                break
            parts.append(b)
    return b"".join(parts)


def _kill(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()
