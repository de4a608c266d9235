"""``LLMProposer``: candidates written by an LLM from the rendered prompts.

Each round asks for ``n`` samples, one request each (``n=`` in one request is not honoured
by every OpenAI-compatible server). A sample whose call fails after its retries, or whose
reply holds no usable code, comes back as a failed ``Proposal`` with its reason: the
search records it and goes on. Only ``LLMConfigError`` (bad key, unknown model) escapes,
because no later round could succeed either.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from hyarch.agent.base import Feedback, PoolEntry, Proposal, Proposer
from hyarch.agent.extract import extract_code
from hyarch.agent.llm import LLMClient, LLMConfig, LLMError
from hyarch.agent.prompting import propose_messages, refine_messages, repair_messages
from hyarch.spaces.schema import Llm
from hyarch.spaces.space import Space


class LLMProposer(Proposer):
    """Proposals from an LLM. ``max_pool`` / ``max_failures``: how much history a refine
    prompt shows; ``repair_attempts``: None takes the space's ``llm.repair_attempts``."""

    def __init__(self, client: LLMClient, *, max_pool: int = 8, max_failures: int = 4,
                 repair_attempts: int | None = None) -> None:
        self.client = client
        self.max_pool = max_pool
        self.max_failures = max_failures
        self.repair_attempts = repair_attempts

    @property
    def name(self) -> str:  # type: ignore[override]
        return self.client.name

    @classmethod
    def from_config(cls, *, model: str, base_url: str | None = None,
                    api_key: str | None = None, settings: Llm | None = None,
                    log: Callable[[dict[str, Any]], None] | None = None,
                    **config: Any) -> LLMProposer:
        """A proposer for ``model`` at ``base_url`` (or ``OPENAI_BASE_URL``), with a space's
        ``llm`` settings (temperature, max_tokens, timeout, prices, repair_attempts) and
        ``config`` overriding ``LLMConfig`` fields. Raises ``LLMConfigError`` when no
        endpoint is configured."""
        kw: dict[str, Any] = {}
        repair_attempts = None
        if settings is not None:
            kw = {"temperature": settings.temperature, "max_tokens": settings.max_tokens,
                  "timeout": settings.timeout, "prices": dict(settings.prices)}
            repair_attempts = settings.repair_attempts
        kw.update(config)
        cfg = LLMConfig.resolve(model, base_url, api_key=api_key, **kw)
        return cls(LLMClient(cfg, log=log), repair_attempts=repair_attempts)

    def propose(self, space: Space, feedback: Feedback, n: int) -> list[Proposal]:
        if feedback.pool:
            messages, parents = refine_messages(space, feedback, max_pool=self.max_pool,
                                                max_failures=self.max_failures)
            purpose = "refine"
        else:
            messages = propose_messages(space, feedback, max_failures=self.max_failures)
            parents = ()
            purpose = "propose"
        return [self._ask(messages, purpose=f"{purpose}:round{feedback.round}",
                          parents=parents) for _ in range(max(0, n))]

    def repair(self, space: Space, failed: PoolEntry, attempt: int) -> Proposal | None:
        attempts = (self.repair_attempts if self.repair_attempts is not None
                    else space.spec.llm.repair_attempts)
        if attempt > attempts or not failed.source:
            return None
        messages = repair_messages(space, failed, attempt, attempts)
        return self._ask(messages, purpose=f"repair:{failed.id}:{attempt}",
                         parents=(failed.id,), repair_of=failed.id)

    def _ask(self, messages: list[dict[str, str]], *, purpose: str,
             parents: tuple[str, ...], repair_of: str | None = None) -> Proposal:
        common: dict[str, Any] = {"proposer": self.name, "parents": parents,
                                  "messages": tuple(messages), "repair_of": repair_of}
        try:
            done = self.client.complete(messages, purpose=purpose)
        except LLMError as e:
            return Proposal(source=None, reason=f"the LLM call failed: {e}",
                            usage={"prompt_tokens": None, "completion_tokens": None,
                                   "total_tokens": 0, "cost": None, "latency": round(e.latency, 3),
                                   "attempts": e.attempts}, **common)
        got = extract_code(done.text)
        reason = got.reason
        if reason and done.finish_reason == "length":
            reason += " (the reply was cut off at max_tokens)"
        return Proposal(source=got.source, reason=reason, reply=done.text, usage=done.usage,
                        **common)


def make_llm_proposer(space: Space, *, model: str | None = None, base_url: str | None = None,
                      log: Callable[[dict[str, Any]], None] | None = None,
                      **config: Any) -> LLMProposer:
    """An ``LLMProposer`` configured from the space's ``llm`` section, the command line and
    the environment (``OPENAI_BASE_URL``, ``OPENAI_API_KEY``). Raises ``LLMConfigError``
    when no endpoint is configured."""
    spec = space.spec.llm
    return LLMProposer.from_config(model=model or spec.model, base_url=base_url, settings=spec,
                                   log=log, **config)
