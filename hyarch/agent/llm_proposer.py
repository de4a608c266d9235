"""``LLMProposer``: candidates written by an LLM from the rendered prompts.

Each round asks for ``n`` samples, one request each (``n=`` in one request is not honoured
by every OpenAI-compatible server), each with its own ``seed`` derived from the search's
seed, the round and the sample: samples differ even on a deterministic server, and a run
can be reproduced on a server that honours seeds. A reply that holds no usable code comes
back as a failed ``Proposal`` with its reason (a candidate that failed). A call that fails
(unreachable, timed out, an unusable reply) comes back with ``transport_error`` set: the
search does not count it as a candidate and never shows it in a prompt. Only
``LLMConfigError`` (bad key, unknown model) escapes, because no later round could succeed
either.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from typing import Any

from hyarch.agent import structured
from hyarch.agent.base import Feedback, PoolEntry, Proposal, Proposer
from hyarch.agent.extract import extract_code
from hyarch.agent.llm import LLMClient, LLMConfig, LLMError
from hyarch.agent.prompting import (
    duplicate_messages,
    propose_messages,
    refine_messages,
    repair_messages,
    structured_messages,
)
from hyarch.spaces.schema import Llm
from hyarch.spaces.space import Space


class LLMProposer(Proposer):
    """Proposals from an LLM. ``max_pool`` / ``max_failures``: how much history a refine
    prompt shows; ``repair_attempts``: None takes the space's ``llm.repair_attempts``."""

    asynchronous = True  # LLM calls run beside the evaluations; observe() is a no-op

    def __init__(self, client: LLMClient, *, max_pool: int = 8, max_failures: int = 4,
                 repair_attempts: int | None = None, seed: int = 0,
                 format: str = "code") -> None:
        if format not in ("code", "structured"):
            raise ValueError(f"unknown LLM format {format!r}: code or structured")
        self.client = client
        self.format = format
        self.max_pool = max_pool
        self.max_failures = max_failures
        self.repair_attempts = repair_attempts
        self.seed = seed
        self._retries = 0

    def set_deadline(self, deadline: float | None) -> None:
        self.client.deadline = deadline

    def sample_seed(self, purpose: str, index: int = 0) -> int:
        """The request's seed: a function of the search seed, the call's purpose (round,
        repair of which candidate) and the sample's index; a 31-bit integer, which every
        server takes."""
        return zlib.crc32(f"{self.seed}:{purpose}:{index}".encode()) & 0x7FFFFFFF

    @property
    def name(self) -> str:  # type: ignore[override]
        return self.client.name

    @classmethod
    def from_config(cls, *, model: str, base_url: str | None = None,
                    api_key: str | None = None, settings: Llm | None = None,
                    log: Callable[[dict[str, Any]], None] | None = None, seed: int = 0,
                    format: str | None = None, **config: Any) -> LLMProposer:
        """A proposer for ``model`` at ``base_url`` (or ``OPENAI_BASE_URL``), with a space's
        ``llm`` settings (temperature, max_tokens, timeout, prices, repair_attempts) and
        ``config`` overriding ``LLMConfig`` fields. Raises ``LLMConfigError`` when no
        endpoint is configured."""
        kw: dict[str, Any] = {}
        repair_attempts = None
        fmt = format or (settings.format if settings is not None else "code")
        if settings is not None:
            kw = {"temperature": settings.temperature, "max_tokens": settings.max_tokens,
                  "timeout": settings.timeout, "prices": dict(settings.prices)}
            repair_attempts = settings.repair_attempts
        kw.update({k: v for k, v in config.items() if v is not None})
        cfg = LLMConfig.resolve(model, base_url, api_key=api_key, **kw)
        return cls(LLMClient(cfg, log=log), repair_attempts=repair_attempts, seed=seed,
                   format=fmt)

    def propose(self, space: Space, feedback: Feedback, n: int) -> list[Proposal]:
        if self.format == "structured":
            messages, parents = structured_messages(space, feedback, max_pool=self.max_pool,
                                                    max_failures=self.max_failures)
            tag = f"form:round{feedback.round}"
            return [self._ask(messages, purpose=tag, parents=parents, space=space,
                              seed=self.sample_seed(tag, i)) for i in range(max(0, n))]
        if feedback.pool:
            messages, parents = refine_messages(space, feedback, max_pool=self.max_pool,
                                                max_failures=self.max_failures)
            purpose = "refine"
        else:
            messages = propose_messages(space, feedback, max_failures=self.max_failures)
            parents = ()
            purpose = "propose"
        tag = f"{purpose}:round{feedback.round}"
        return [self._ask(messages, purpose=tag, parents=parents,
                          seed=self.sample_seed(tag, i)) for i in range(max(0, n))]

    def repair(self, space: Space, failed: PoolEntry, attempt: int) -> Proposal | None:
        attempts = (self.repair_attempts if self.repair_attempts is not None
                    else space.spec.llm.repair_attempts)
        if attempt > attempts or not failed.source:
            return None
        tag = f"repair:{failed.id}:{attempt}"
        if self.format == "structured":
            # a form that failed: the form's prompt with this failure at the top of the list
            messages, _ = structured_messages(space, Feedback(round=0, failures=(failed,)),
                                              max_failures=1)
            return self._ask(messages, purpose=tag, parents=(failed.id,), repair_of=failed.id,
                             seed=self.sample_seed(tag), space=space)
        messages = repair_messages(space, failed, attempt, attempts)
        return self._ask(messages, purpose=tag, parents=(failed.id,), repair_of=failed.id,
                         seed=self.sample_seed(tag))

    def retry_duplicate(self, space: Space, proposal: Proposal, earlier: PoolEntry,
                        attempt: int) -> Proposal | None:
        attempts = (self.repair_attempts if self.repair_attempts is not None
                    else space.spec.llm.repair_attempts)
        if attempt > attempts or not proposal.messages or proposal.reply is None:
            return None
        messages = duplicate_messages(list(proposal.messages), proposal.reply, earlier)
        tag = f"duplicate:{earlier.id}:{attempt}"
        # samples that repeat the same candidate carry the same conversation: the count of
        # such retries tells their seeds apart
        self._retries += 1
        return self._ask(messages, purpose=tag, parents=proposal.parents,
                         repair_of=proposal.repair_of, seed=self.sample_seed(tag, self._retries),
                         space=space if self.format == "structured" else None)

    def _ask(self, messages: list[dict[str, str]], *, purpose: str,
             parents: tuple[str, ...], repair_of: str | None = None,
             seed: int | None = None, space: Space | None = None) -> Proposal:
        """One call. With ``space`` (the structured format) the reply is a form, asked for
        with the form's JSON schema and rendered by the template."""
        common: dict[str, Any] = {"proposer": self.name, "parents": parents,
                                  "messages": tuple(messages), "repair_of": repair_of}
        extra = {"response_format": structured.response_format(space)} if space else {}
        try:
            done = self.client.complete(messages, purpose=purpose, seed=seed, **extra)
        except LLMError as e:
            return Proposal(source=None, transport_error=str(e),
                            usage={"prompt_tokens": None, "completion_tokens": None,
                                   "total_tokens": 0, "cost": None, "latency": round(e.latency, 3),
                                   "attempts": e.attempts}, **common)
        cut_off = done.finish_reason == "length" or done.clipped
        if space is not None:
            try:
                source, choices = structured.fill(space, structured.parse(done.text))
            except structured.FormError as e:
                reason = f"the form was not filled correctly: {e}"
                if cut_off:
                    reason += " (the reply was cut off at max_tokens)"
                return Proposal(source=None, reason=reason, reply=done.text, usage=done.usage,
                                cut_off=cut_off, **common)
            return Proposal(source=source, reply=done.text, usage=done.usage, cut_off=cut_off,
                            choices={**choices, "_format": "structured"}, **common)
        got = extract_code(done.text)
        reason = got.reason
        if reason and cut_off:
            reason += " (the reply was cut off at max_tokens)"
        return Proposal(source=got.source, reason=reason, reply=done.text, usage=done.usage,
                        cut_off=cut_off, **common)


def make_llm_proposer(space: Space, *, model: str | None = None, base_url: str | None = None,
                      log: Callable[[dict[str, Any]], None] | None = None,
                      **config: Any) -> LLMProposer:
    """An ``LLMProposer`` configured from the space's ``llm`` section, the command line and
    the environment (``OPENAI_BASE_URL``, ``OPENAI_API_KEY``). Raises ``LLMConfigError``
    when no endpoint is configured."""
    spec = space.spec.llm
    return LLMProposer.from_config(model=model or spec.model, base_url=base_url, settings=spec,
                                   log=log, **config)
