"""Train and score one candidate on a space: the record every proposer's code ends as.

Every caller (the search, ``hyarch evaluate``, baselines, tuning, distillation,
identifiability, ``validate --fit-prior``) goes through ``hyarch.sandbox.runner``: the
candidate runs in an isolated child and the scores are computed here, from its predictions.
"""

from __future__ import annotations

import sys
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hyarch.core.progress import TrainingProgress
from hyarch.sandbox.runner import Limits, SandboxResult, failed, run_candidate
from hyarch.spaces.space import Space

__all__ = ["Limits", "SandboxResult", "evaluate", "evaluate_source", "failed"]


def evaluate_source(
    space: Space, source: str, *, filename: str = "model.py", device: str = "cpu",
    overrides: dict[str, Any] | None = None, post: dict[str, Any] | None = None,
    limits: Limits | None = None, sandbox: bool = True,
    progress: Callable[[TrainingProgress], None] | None = None,
) -> SandboxResult:
    """Train and score candidate code. Never raises for a bad candidate: a failed record.

    ``sandbox=False`` runs it in this process (trusted code and debugging only).
    ``progress`` hears how training goes (``hyarch.report.progress`` shows it).
    A bad training configuration is not the candidate's fault: its ValueError propagates.
    """
    space.train_config(device=device, **(overrides or {}))  # a bad setting: ValueError here
    return run_candidate(space, source, filename=filename, limits=limits or Limits(),
                         device=device, overrides=overrides, post=post,
                         isolation="auto" if sandbox else "none", progress=progress)


def evaluate(space: Space | str | Path, file: str | Path, **kw) -> dict[str, Any]:
    """Public entry: train and score the candidate file ``file`` on ``space`` (isolated)."""
    from hyarch.spaces.loader import load_space

    sp = space if isinstance(space, Space) else load_space(space)
    path = Path(file)
    return evaluate_source(sp, path.read_text(), filename=str(path), **kw).result


class _CallableModule(types.ModuleType):
    """Importing this module rebinds ``hyarch.evaluate`` from the public function to the
    module, so the module itself forwards calls: ``hyarch.evaluate(space, file)`` works
    whatever was imported first."""

    def __call__(self, space: Space | str | Path, file: str | Path, **kw) -> dict[str, Any]:
        return evaluate(space, file, **kw)


sys.modules[__name__].__class__ = _CallableModule
