"""How far a training has come: steps done out of the steps its schedule plans.

``fit`` reports a ``TrainingProgress`` at each phase change and every fraction of a second;
the sandboxed child sends it to the parent, which shows it (``hyarch.report.progress``).
The estimate reads the schedule: each phase plans its iteration cap (a window stage's
``stage_iters``, the full horizon's ``final_iters``, L-BFGS's ``lbfgs_iters``, ...) and a
phase that stops early (a plateau, convergence) gives back the steps it did not take, so
``planned`` only shrinks as training learns it needs less. Stdlib only: the parent reads it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

# what a child may name as its phase; the parent drops any other name
PHASES = ("windows", "full horizon", "l-bfgs", "predicting", "distilling", "profiling")
UNITS = {"predicting": "split"}  # what ``done`` counts where it is not optimizer steps
MAX_STEPS = 10**9  # more than any schedule plans; a larger count is not believed


@dataclass(frozen=True)
class TrainingProgress:
    """One report: ``phase`` (one of ``PHASES``), ``done`` optimizer steps of ``planned``
    (done plus the most the rest of the schedule may take), ``fit`` 2 when the candidate
    is fitted a second time (a finer integrator, see ``sandbox.work``)."""

    phase: str
    done: int = 0
    planned: int = 0
    fit: int = 1

    @property
    def fraction(self) -> float | None:
        return min(self.done / self.planned, 1.0) if self.planned > 0 else None


def remaining_seconds(done: int, planned: int, elapsed: float) -> float | None:
    """Seconds left at the rate so far (``elapsed`` for ``done`` steps); None before the
    first step, where there is no rate yet."""
    if done <= 0 or planned <= done or elapsed <= 0:
        return 0.0 if planned and done >= planned else None
    return elapsed / done * (planned - done)


class Schedule:
    """Counts a fit's steps against its plan and reports them (throttled) to ``report``.

    ``expect(phases)`` says what the rest of the schedule will be, as (name, step cap)
    pairs in order; ``begin(name, cap)`` starts a phase (dropping the expected ones up to
    and including the first of that name); ``step(n)`` counts steps; ``end()`` reports
    the finished fit."""

    def __init__(self, report: Callable[[TrainingProgress], None] | None, *,
                 min_interval: float = 0.25) -> None:
        self.report = report
        self.min_interval = min_interval
        self.done = 0
        self.phase: str | None = None
        self._cap = 0  # the current phase's step cap
        self._in_phase = 0
        self._later: list[tuple[str, int]] = []
        self._last = -float("inf")

    @property
    def planned(self) -> int:
        return (self.done + max(self._cap - self._in_phase, 0)
                + sum(cap for _, cap in self._later))

    def expect(self, phases: list[tuple[str, int]]) -> None:
        self._later = [(name, max(int(cap), 0)) for name, cap in phases]

    def begin(self, name: str, cap: int) -> None:
        names = [n for n, _ in self._later]
        if name in names:
            del self._later[:names.index(name) + 1]
        self.phase, self._cap, self._in_phase = name, max(int(cap), 0), 0
        self._emit(force=True)

    def step(self, n: int = 1) -> None:
        self.done += n
        self._in_phase += n
        self._emit()

    def end(self) -> None:
        self._later, self._cap, self._in_phase = [], 0, 0
        self._emit(force=True)

    def _emit(self, force: bool = False) -> None:
        if self.report is None or self.phase is None:
            return
        now = time.monotonic()
        if not force and now - self._last < self.min_interval:
            return
        self._last = now
        self.report(TrainingProgress(self.phase, self.done, self.planned))
