"""The candidates being evaluated: a thread pool whose threads each wait on one sandboxed
child process, and the bookkeeping of what is in flight."""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any

from hyarch.agent.base import PoolEntry, Proposal

Finished = tuple[str, Proposal | None, PoolEntry]


class Evaluations:
    """``launch(cid)`` evaluates a candidate (in the sandbox) and returns its result;
    ``record(cid, proposal, result_or_exception)`` stores a finished one and returns it as
    a ``Finished`` triple. ``len()`` is the number in flight."""

    def __init__(self, workers: int, launch: Callable[[str], Any],
                 record: Callable[[str, Proposal | None, Any], Finished]) -> None:
        self.workers = max(workers, 1)
        self._launch = launch
        self._record = record
        self._pool = ThreadPoolExecutor(max_workers=self.workers)
        self._inflight: dict[Future, tuple[str, Proposal | None]] = {}

    def __len__(self) -> int:
        return len(self._inflight)

    @property
    def busy(self) -> bool:
        return len(self._inflight) >= self.workers

    def ids(self) -> list[str]:
        return [cid for cid, _ in self._inflight.values()]

    def submit(self, pending: list[tuple[str, Proposal | None]]) -> None:
        for cid, prop in pending:
            self._inflight[self._pool.submit(self._launch, cid)] = (cid, prop)

    def ready(self) -> list[Finished]:
        """The evaluations that have finished, recorded, without waiting."""
        return [self._collect(f) for f in [f for f in self._inflight if f.done()]]

    def wait(self, pending: list[tuple[str, Proposal | None]], *, drain: bool = False
             ) -> list[Finished]:
        """Submit ``pending`` and return what finished: once a worker is free (the loop then
        proposes more), or once everything in flight is done when ``drain``."""
        self.submit(pending)
        finished: list[Finished] = []
        if pending and not drain and not self.busy:
            return finished  # a worker is still free: propose more first
        while self._inflight:
            done_set, _ = wait(set(self._inflight), timeout=0.5, return_when=FIRST_COMPLETED)
            finished += [self._collect(fut) for fut in done_set]
            if finished and not drain and not self.busy:
                break
        return finished

    def _collect(self, fut: Future) -> Finished:
        cid, prop = self._inflight.pop(fut)
        try:
            res = fut.result()
        except Exception as e:  # noqa: BLE001 - the harness failed: a failed candidate
            res = e
        return self._record(cid, prop, res)

    def stop(self, grace: float = 8.0) -> None:
        """Ctrl-C: kill every evaluation, again while a worker thread may still be starting
        one, until the threads have returned (or ``grace`` seconds have passed), so that
        the process exits within seconds."""
        from hyarch.sandbox.runner import kill_all

        for fut in self._inflight:
            fut.cancel()
        deadline = time.monotonic() + grace
        while True:
            kill_all()
            left = [f for f in self._inflight if not f.done()]
            if not left or time.monotonic() >= deadline:
                return
            wait(left, timeout=0.1)

    def shutdown(self, *, interrupted: bool) -> None:
        self._pool.shutdown(wait=not interrupted, cancel_futures=True)
