"""A search session's settings and how it ended: frozen records, no behaviour."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hyarch.spaces.space import Space


class SearchError(Exception):
    """The search cannot start or go on (bad configuration, run folder clash)."""


@dataclass(frozen=True, kw_only=True)
class SearchConfig:
    """A search session's settings (CLI flags and the space's budget/llm sections)."""

    space: str | Space | None  # a name or YAML path, or a loaded Space (kept as it is)
    run_dir: Path
    budget: int | None = None  # candidates; default from the space
    minutes: float | None = None
    tokens: int | None = None
    cost: float | None = None
    per_round: int | None = None
    patience_rounds: int | None = None
    workers: int = 1
    resume: bool = False
    join: bool = False  # another worker on a shared search: the run may or may not exist
    review_every: int | None = None
    device: str = "cpu"
    llm: str | None = None
    base_url: str | None = None
    llm_timeout: float | None = None  # seconds per LLM call; default from the space's llm
    max_tokens: int | None = None  # per LLM reply; default from the space's llm
    temperature: float | None = None  # default from the space's llm
    llm_format: str | None = None  # code or structured; default from the space's llm
    storage: str | None = None
    seed: int = 0
    timeout: float | None = None  # per candidate; default from the space's training budget
    memory_mb: int = 6144
    threads: int = 1  # CPU threads per evaluation (each worker's sandboxed child)
    distill: bool = True  # distil trained closures; good ones become new candidates
    overrides: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RunSummary:
    """How a search session ended."""

    run_dir: Path
    candidates: int
    ok: int
    failed: int
    best_id: str | None
    best: dict[str, Any] | None
    stopped: str
    seconds: float
    tokens: int = 0
    cost: float = 0.0
    interrupted: bool = False  # Ctrl-C or SIGTERM: the CLI exits 130
    in_flight: tuple[str, ...] = ()  # candidates unfinished when interrupted (re-run on resume)
    pending: int = 0  # candidates written but not finished (in flight when the run stopped)
    # the search could not go on (the LLM endpoint unreachable): the CLI exits non-zero and
    # the run resumes where it stopped
    error: str | None = None
    dropped: tuple[str, ...] = ()  # queued distilled candidates the budget left no room for
