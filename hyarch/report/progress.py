"""Progress of long commands on stderr: which training runs, how far it is, how long is left.

On a terminal, a rich bar per training with the phase, the steps, the elapsed time and an
estimate of the time left; elsewhere (a pipe, a log file, CI) one line when a training
starts, one per phase, one every ``heartbeat`` seconds in a long phase, and one when it
ends, with how long it took. The estimate is the training schedule's (``core.progress``):
steps done out of the steps planned, at the rate measured here, on this side's clock.

    with ProgressDisplay() as show:
        with show.task("prior", kind="baseline", index=1, total=3) as task:
            out = evaluate_source(space, source, progress=task)
            task.finish(Evaluation.from_dict(out.result).status.value)
"""

from __future__ import annotations

import sys
import threading
import time
from typing import IO

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from hyarch.core.progress import UNITS, TrainingProgress, remaining_seconds

MAX_LINES = 40  # per task on a non-terminal: a child switching phases cannot flood the log


def duration(seconds: float) -> str:
    """``7 s``, ``2 min 05 s``, ``1 h 02 min``."""
    s = int(round(max(seconds, 0.0)))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


class ProgressDisplay:
    """Where progress is shown; ``live`` (default: whether ``stream`` is a terminal) picks
    the rich display over plain lines."""

    def __init__(self, *, stream: IO[str] | None = None, live: bool | None = None,
                 heartbeat: float = 30.0) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.live = self.stream.isatty() if live is None else live
        self.heartbeat = heartbeat
        self.lock = threading.Lock()
        self._bars: Progress | None = None

    def __enter__(self) -> ProgressDisplay:
        if self.live:
            self._bars = Progress(
                TextColumn("{task.description}"), BarColumn(),
                TextColumn("{task.fields[steps]}"), TimeElapsedColumn(),
                TextColumn("{task.fields[left]}"),
                console=Console(file=self.stream), transient=False)
            self._bars.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._bars is not None:
            self._bars.stop()
            self._bars = None

    def task(self, name: str, *, kind: str = "", index: int | None = None,
             total: int | None = None) -> Task:
        """One training (or any long step) to show; ``kind``, ``index`` and ``total`` make
        its label ``baseline 1/3 prior``."""
        count = f" {index}/{total}" if index is not None and total is not None else ""
        label = f"{kind}{count} {name}".strip()
        return Task(self, label)

    def say(self, line: str) -> None:
        with self.lock:
            if self._bars is not None:
                self._bars.console.print(escape(line), highlight=False)
            else:
                print(f"hyarch: {line}", file=self.stream, flush=True)


class Task:
    """A callable for ``evaluate_source(progress=...)`` that shows its reports; a context
    manager that says when it started and how long it took."""

    def __init__(self, display: ProgressDisplay, label: str) -> None:
        self.display = display
        self.label = label
        self.start = time.monotonic()
        self.lines = 0
        self.status: str | None = None
        self._key: tuple[int, str] | None = None
        self._fit_start = self.start  # this side's clock when the current fit began
        self._fit_done = 0
        self._last_done = 0
        self._last_line = self.start
        self._bar: TaskID | None = None

    def __enter__(self) -> Task:
        self.start = self._last_line = time.monotonic()
        bars = self.display._bars
        if bars is not None:
            with self.display.lock:
                self._bar = bars.add_task(escape(self.label), total=None, steps="starting",
                                          left="")
        else:
            self._line("starting")
        return self

    def __exit__(self, exc_type, *_exc) -> None:
        took = duration(time.monotonic() - self.start)
        status = self.status or ("done" if exc_type is None else "interrupted"
                                 if issubclass(exc_type, KeyboardInterrupt) else "stopped")
        bars = self.display._bars
        if bars is not None and self._bar is not None:
            with self.display.lock:
                bars.update(self._bar, description=escape(f"{self.label}: {status}"),
                            total=1, completed=1, steps=f"in {took}", left="")
                bars.stop_task(self._bar)
        else:
            self.display.say(f"{self.label}: {status} in {took}")

    def finish(self, status: str) -> None:
        """The outcome the closing line reports (``ok``, ``failed``)."""
        self.status = status

    def __call__(self, event: TrainingProgress) -> None:
        now = time.monotonic()
        key = (event.fit, event.phase)
        with self.display.lock:
            # a new fit, or a count that starts again (predicting counts splits): a new rate
            if self._key is None or event.fit != self._key[0] or event.done < self._last_done:
                self._fit_start, self._fit_done = now, event.done
            changed = key != self._key
            self._key, self._last_done = key, event.done
        left = remaining_seconds(event.done - self._fit_done, event.planned - self._fit_done,
                                 now - self._fit_start) if event.planned else None
        phase = event.phase + (" (refit)" if event.fit == 2 else "")
        unit = UNITS.get(event.phase, "step")
        bound = "at most " if unit == "step" else ""
        steps = f"{unit} {event.done} of {bound}{event.planned}" if event.planned else ""
        bars = self.display._bars
        if bars is not None and self._bar is not None:
            with self.display.lock:
                bars.update(self._bar, description=escape(f"{self.label}: {phase}"),
                            total=event.planned or None, completed=event.done,
                            steps=steps, left="" if left is None else f"~{duration(left)} left")
            return
        if not changed and now - self._last_line < self.display.heartbeat:
            return
        parts = [phase] + ([steps] if steps else []) + [
            f"{duration(now - self.start)} elapsed"]
        if left is not None and event.done > self._fit_done:
            parts.append(f"about {duration(left)} left")
        self._line(", ".join(parts))

    def _line(self, text: str) -> None:
        if self.lines >= MAX_LINES:
            return
        self.lines += 1
        self._last_line = time.monotonic()
        if self.lines == MAX_LINES:
            text += " (no more progress lines for this one)"
        self.display.say(f"{self.label}: {text}")
