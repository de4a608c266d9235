"""The process that runs one untrusted candidate (started by ``hyarch.sandbox.runner``).

Reads the job on stdin, imports what it needs, locks itself down (Landlock, seccomp; the
runner has already put it in namespaces and under resource limits), runs the candidate,
writes one framed reply to the result descriptor and leaves with ``os._exit`` so that no
thread, ``atexit`` hook or finaliser of the candidate's runs after it.
"""

from __future__ import annotations

import os
import sys


def main() -> int:
    import torch

    from hyarch.sandbox.protocol import decode_job, encode_progress, encode_reply
    from hyarch.sandbox.work import failed_header, run_job

    job = decode_job(sys.stdin.buffer.read())
    out_fd = int(job["result_fd"])
    progress = None
    if job.get("progress_fd") is not None:
        progress_fd = int(job["progress_fd"])
        os.set_blocking(progress_fd, False)

        def progress(event) -> None:
            try:  # one line, under PIPE_BUF: written whole or not at all
                os.write(progress_fd, encode_progress(event))
            except OSError:  # the pipe is full (the parent is behind) or closed: dropped
                pass

    torch.set_num_threads(int(job.get("threads", 1)))
    lock = job.get("lockdown") or {}

    def lockdown() -> None:
        from hyarch.sandbox import isolation

        if lock.get("landlock_abi"):
            isolation.apply_landlock(int(lock["landlock_abi"]), list(lock["read"]),
                                     list(lock["write"]))
        if lock.get("seccomp"):
            isolation.apply_seccomp()

    try:
        header, arrays, weights = run_job(job, lockdown=lockdown, progress=progress)
    except BaseException as e:  # noqa: BLE001 - everything becomes a failed result
        import time

        header, arrays, weights = failed_header(f"{type(e).__name__}: {e}"[:2000],
                                                time.perf_counter()), {}, None
    try:
        data = encode_reply(header, arrays, weights)
    except (TypeError, ValueError) as e:  # a claim that is not JSON (NaN, an object)
        data = encode_reply({"status": "failed", "reason": f"unencodable result: {e}"}, {})
    view = memoryview(data)
    while view:
        n = os.write(out_fd, view)
        view = view[n:]
    os.close(out_fd)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
