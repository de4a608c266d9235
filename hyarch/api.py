"""Small library entry points that need more than one room of the house."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def leaderboard(run: Any) -> list[dict[str, Any]]:
    """A run's candidates, best first, by the one ranking rule (``hyarch.ranking.rule``):
    the ``hyarch leaderboard --json`` records. ``run`` is a path, ``hyarch.load_run(...)``
    or what ``hyarch.search(...)`` returned."""
    from hyarch.ranking.leaderboard import leaderboard_json
    from hyarch.runs import Run, load_run

    if hasattr(run, "run_dir"):  # a RunSummary
        run = run.run_dir
    return leaderboard_json(run if isinstance(run, Run) else load_run(Path(run)))
