"""What every proposer is given and returns.

The search sees train and validation numbers only: ``PoolEntry.from_result`` copies
exactly those fields, so test and OOD figures cannot reach a prompt or a proposer.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

from hyarch.spaces.space import Space

SEEN_SPLITS = ("train", "val")


@dataclass(frozen=True)
class Proposal:
    """New candidate code, or a failed proposal with its reason (no usable code)."""

    source: str | None
    proposer: str
    parents: tuple[str, ...] = ()
    reason: str | None = None
    messages: tuple[dict[str, str], ...] = ()  # the prompt, where an LLM wrote it
    reply: str | None = None
    choices: dict[str, Any] = field(default_factory=dict)  # structural choices (offline)
    repair_of: str | None = None  # id of the failed candidate this repairs
    usage: dict[str, Any] = field(default_factory=dict)  # tokens, cost
    # the call to the LLM failed (unreachable, timed out, an unusable reply): no candidate,
    # never counted against the budget nor shown in a prompt
    transport_error: str | None = None
    cut_off: bool = False  # the reply hit max_tokens (its code may be incomplete)


@dataclass(frozen=True)
class PoolEntry:
    """An evaluated candidate as a proposer may see it: train/val numbers only."""

    id: str
    source: str
    proposer: str
    status: str
    reason: str | None = None
    parents: tuple[str, ...] = ()
    parameters: dict[str, float] = field(default_factory=dict)
    val_nmse: float | None = None
    train_nmse: float | None = None
    val_per_state: dict[str, float | None] = field(default_factory=dict)
    regularizers: dict[str, float | None] = field(default_factory=dict)
    closure_share: float | None = None
    n_neural_params: int | None = None
    verdict: str | None = None  # approved / rejected / pinned
    notes: tuple[str, ...] = ()
    traceback: str | None = None
    choices: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_result(cls, cid: str, source: str, meta: dict[str, Any],
                    result: dict[str, Any] | None, review: dict[str, Any] | None = None
                    ) -> PoolEntry:
        from hyarch.record import Evaluation

        ev = Evaluation.from_dict(result or {"status": "pending"})
        val, train = ev.split("val"), ev.split("train")
        review = review or {}
        return cls(
            id=cid, source=source, proposer=meta.get("proposer", "?"),
            status=ev.status.value, reason=ev.reason,
            parents=tuple(meta.get("parents", ())),
            parameters=dict(ev.parameters),
            val_nmse=val.nmse if val else None, train_nmse=train.nmse if train else None,
            val_per_state={n: nmse for n, _, nmse in (val.per_state if val else ())},
            regularizers=dict(ev.regularizers), closure_share=ev.closure_share,
            n_neural_params=ev.n_neural_params,
            verdict=review.get("verdict"), notes=tuple(review.get("notes", ())),
            traceback=ev.traceback,
            choices=dict(meta.get("choices") or {}),
        )


@dataclass(frozen=True)
class Feedback:
    """What the next round is proposed from."""

    round: int
    pool: tuple[PoolEntry, ...] = ()  # best so far (ranked), pinned ones included
    failures: tuple[PoolEntry, ...] = ()  # recent failures with their reasons
    rejected: tuple[PoolEntry, ...] = ()  # rejected by the reviewer, with the reason
    notes: tuple[str, ...] = ()  # the reviewer's general notes
    distilled: tuple[dict[str, Any], ...] = ()  # closure distillations, as evidence
    # new hypothesis terms from good distillations: {state, name, expr, parameters, ...}
    grammar: tuple[dict[str, Any], ...] = ()


class Proposer(ABC):
    """Proposes candidate files. Subclasses: ``LLMProposer``, ``OfflineProposer``."""

    name: str = "proposer"
    # proposals take long (an LLM call): the loop asks on a helper thread and records
    # evaluations that finish meanwhile. A proposer that says so must not need observe()
    # and propose() to be serialised.
    asynchronous: bool = False

    @abstractmethod
    def propose(self, space: Space, feedback: Feedback, n: int) -> list[Proposal]:
        """Return up to ``n`` proposals (failed ones included, with a reason)."""

    def repair(self, space: Space, failed: PoolEntry, attempt: int) -> Proposal | None:
        """A fixed version of a failed candidate, or None when this proposer cannot."""
        return None

    def retry_duplicate(self, space: Space, proposal: Proposal, earlier: PoolEntry,
                        attempt: int) -> Proposal | None:
        """A new proposal in place of ``proposal``, whose code repeats the evaluated
        ``earlier``; None when this proposer cannot (the repeat is then dropped, at no
        cost to the budget)."""
        return None

    def set_deadline(self, deadline: float | None) -> None:  # noqa: B027
        """When the search's time runs out (``time.monotonic()``), for proposers that wait."""

    def observe(self, proposal: Proposal, entry: PoolEntry) -> None:  # noqa: B027
        """Learn from an evaluated proposal (the offline proposer tells its sampler)."""

    def exhausted(self) -> str | None:
        """Why this proposer has nothing new left to propose (the search then ends with
        this reason), or None while it may still have. Asked after a round that gave
        nothing new, with nothing in flight."""
        return None
