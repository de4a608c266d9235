"""A search's budgets, which survive ``--resume``: candidates (claimed through the study),
minutes (``elapsed.json``), tokens and cost (``llm.jsonl``)."""

from __future__ import annotations

from dataclasses import dataclass

from hyarch.runs import Run, read_jsonl


@dataclass(frozen=True)
class Budget:
    candidates: int
    minutes: float | None = None
    tokens: int | None = None
    cost: float | None = None

    def spent(self, *, seconds: float, tokens: int, cost: float) -> str | None:
        """Which of the time, token and cost budgets is spent (None: none is)."""
        if self.minutes and seconds / 60 >= self.minutes:
            return "time budget"
        if self.tokens and tokens >= self.tokens:
            return f"token budget ({tokens} of {self.tokens} tokens spent)"
        if self.cost and cost >= self.cost:
            return f"cost budget (${cost:.4f} of ${self.cost:g} spent)"
        return None


def llm_usage(run: Run) -> tuple[int, float, bool]:
    """Tokens and cost of every LLM call logged in the run, and whether any cost was known
    (a local model has no price)."""
    tokens, cost, known = 0, 0.0, False
    for e in read_jsonl(run.llm_log):
        total = e.get("total_tokens")
        if not isinstance(total, int):  # logs of earlier versions have no total
            total = sum(v for v in (e.get("prompt_tokens"), e.get("completion_tokens"))
                        if isinstance(v, int))
        tokens += total
        c = e.get("cost")
        if isinstance(c, (int, float)):
            cost += float(c)
            known = True
    return tokens, cost, known
