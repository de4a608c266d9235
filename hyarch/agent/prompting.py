"""Rendering the Jinja2 templates in ``prompts/``: LLM messages and generated candidates.

The templates see a plain view of the space (description, states, inputs, prior code,
hypotheses, closure sites; never the true parameter values nor the space's ``notes``, which
hold the benchmark's answer) and the search's ``Feedback`` / ``PoolEntry`` records, which
carry train and validation numbers only. Test and OOD figures therefore cannot reach a
prompt: the templates have nothing to read them from.
"""

from __future__ import annotations

import json
import numbers
import re
from collections.abc import Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import jinja2

from hyarch.agent.base import Feedback, PoolEntry
from hyarch.spaces.space import Space

ALLOWED_IMPORTS = ("torch", "math", "numpy", "hyarch")
_UNSEEN = re.compile(r"test|ood", re.IGNORECASE)  # split names a prompt must not carry


# -- filters -----------------------------------------------------------------------------
def _num(x: Any, digits: int = 4) -> str:
    if x is None:
        return "n/a"
    if isinstance(x, bool) or not isinstance(x, numbers.Real):
        return str(x)
    x = float(x)
    if x != x or x in (float("inf"), float("-inf")):
        return str(x)
    return f"{x:.{digits}g}"


def _py(x: Any) -> str:
    """A Python literal: double-quoted strings, tuples for sequences, plain floats."""
    if isinstance(x, bool) or x is None:
        return repr(x)
    if isinstance(x, numbers.Integral):
        return str(int(x))
    if isinstance(x, numbers.Real):
        return repr(float(x))
    if isinstance(x, str):
        return json.dumps(x)
    if isinstance(x, Sequence):
        items = [_py(v) for v in x]
        return "(" + ", ".join(items) + ("," if len(items) == 1 else "") + ")"
    raise TypeError(f"cannot write {x!r} as a Python literal in a candidate file")


def _docstring(text: str) -> str:
    # one line; backslashes and double quotes would end or garble the literal
    return " ".join(str(text).split()).replace("\\", "/").replace('"', "'")


def _tail(text: str | None, lines: int = 30) -> str:
    if not text:
        return ""
    rows = str(text).rstrip().splitlines()
    if len(rows) <= lines:
        return "\n".join(rows)
    return "\n".join(["...", *rows[-lines:]])


def _quote(text: str) -> str:
    return "\n".join("> " + row for row in str(text).strip().splitlines())


def _seen(d: Mapping[str, Any]) -> dict[str, Any]:
    """Drop any test/OOD key from free-form evidence (distillations) before it is shown."""
    return {k: v for k, v in d.items() if not _UNSEEN.search(str(k))}


@lru_cache(maxsize=4)
def _environment(folder: str) -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(folder), undefined=jinja2.StrictUndefined,
        trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True, autoescape=False,
    )
    env.filters.update(num=_num, py=_py, docstring=_docstring, tail=_tail, quote=_quote,
                       seen=_seen)
    return env


def prompts_dir() -> Path:
    from hyarch.spaces.loader import builtin_dir

    return builtin_dir("prompts")


def render(name: str, /, **context: Any) -> str:
    """Render ``prompts/<name>``; a variable the template needs but lacks is an error."""
    return _environment(str(prompts_dir())).get_template(name).render(**context)


# -- the space as the prompts see it ------------------------------------------------------
def space_view(space: Space) -> dict[str, Any]:
    spec = space.spec

    def var(name, v):
        return {"name": name, "description": v.description, "unit": v.unit,
                "shape": tuple(v.shape), "measured": v.measured and not spec.observations,
                "initial": None if v.initial is None else str(v.initial)}

    prior_path = space.prior_path()
    prior = prior_path.read_text() if prior_path is not None and prior_path.is_file() else None
    hypotheses = {
        state: [{"name": t.name, "expr": t.expr, "description": t.description,
                 "also": dict(t.also),
                 "parameters": [{"name": p, "init": d.get("init"), "bounds": d.get("bounds"),
                                 "unit": d.get("unit", "")}
                                for p, d in t.parameters.items()]}
                for t in terms]
        for state, terms in spec.hypotheses.items() if terms
    }
    closures = [{"state": c.state, "inputs": tuple(c.inputs), "kind": c.kind,
                 "hidden": [tuple(h) for h in c.hidden]} for c in spec.closures]
    return {
        "name": spec.name, "description": spec.description.strip(),
        "states": [var(n, v) for n, v in spec.states.items()],
        "inputs": [var(n, v) for n, v in spec.inputs.items()],
        "prior": prior.rstrip() if prior else None,
        "hypotheses": hypotheses, "closures": closures,
        "observations": [var(n, v) for n, v in spec.observations.items()],
        "twin": spec.is_twin, "individuals": _shares_individuals(space),
    }


def _shares_individuals(space: Space) -> bool:
    from hyarch.agent.offline import shares_individuals

    return shares_individuals(space)


# -- messages -----------------------------------------------------------------------------
def system_prompt(space: Space | None = None) -> str:
    states = [s["name"] for s in space_view(space)["states"]] if space is not None else []
    return render("system.j2", allowed_imports=ALLOWED_IMPORTS, states=states)


def propose_messages(space: Space, feedback: Feedback | None = None, *, max_failures: int = 4,
                     max_rejected: int = 6) -> list[dict[str, str]]:
    """No scored candidate yet: the problem, the prior, the hypotheses, and what failed so
    far (a first round whose every candidate failed must hear why)."""
    fb = feedback or Feedback(round=0)
    user = render("propose.j2", space=space_view(space), notes=list(fb.notes),
                  failures=list(fb.failures[:max_failures]),
                  rejected=list(fb.rejected[:max_rejected]),
                  distilled=[_seen(d) for d in fb.distilled])
    return [{"role": "system", "content": system_prompt(space)},
            {"role": "user", "content": user}]


def refine_messages(space: Space, feedback: Feedback, *, max_pool: int = 8,
                    max_failures: int = 4, max_rejected: int = 6
                    ) -> tuple[list[dict[str, str]], tuple[str, ...]]:
    """A later round: the pool with its scores, failures, verdicts and notes. Returns the
    messages and the ids of the pool entries shown (the new candidates' parents)."""
    pool = list(feedback.pool[:max_pool])
    user = render(
        "refine.j2", space=space_view(space), round=feedback.round, pool=pool,
        failures=list(feedback.failures[:max_failures]),
        rejected=list(feedback.rejected[:max_rejected]), notes=list(feedback.notes),
        distilled=[_seen(d) for d in feedback.distilled],
    )
    messages = [{"role": "system", "content": system_prompt(space)},
                {"role": "user", "content": user}]
    return messages, tuple(e.id for e in pool)


def repair_messages(space: Space, failed: PoolEntry, attempt: int, attempts: int
                    ) -> list[dict[str, str]]:
    user = render("repair.j2", space=space_view(space), failed=failed, attempt=attempt,
                  attempts=attempts)
    return [{"role": "system", "content": system_prompt(space)},
            {"role": "user", "content": user}]


def structured_messages(space: Space, feedback: Feedback, *, max_pool: int = 8,
                        max_failures: int = 4) -> tuple[list[dict[str, str]], tuple[str, ...]]:
    """The form's prompt (``structured`` format): the system, its terms and sites, and what
    was tried, as structures with their scores. Returns the messages and the parents."""
    from hyarch.agent.structured import describe, individual_keys, site_keys

    def view(e: PoolEntry) -> dict[str, Any]:
        return {"id": e.id, "val_nmse": e.val_nmse, "parameters": e.parameters,
                "closure_share": e.closure_share, "verdict": e.verdict, "reason": e.reason,
                "structure": describe(e.choices) if e.choices else "written as code"}

    pool = list(feedback.pool[:max_pool])
    user = render("structured.j2", space=space_view(space), sites=site_keys(space),
                  individual=individual_keys(space), pool=[view(e) for e in pool],
                  failures=[view(e) for e in feedback.failures[:max_failures]],
                  notes=list(feedback.notes), distilled=[_seen(d) for d in feedback.distilled])
    return ([{"role": "system", "content": render("structured_system.j2")},
             {"role": "user", "content": user}], tuple(e.id for e in pool))


def duplicate_messages(messages: list[dict[str, str]], reply: str, earlier: PoolEntry
                       ) -> list[dict[str, str]]:
    """The conversation that produced a repeat, the repeat, and "already tried: propose
    something different" with what the earlier candidate scored (train/val only)."""
    return [*messages, {"role": "assistant", "content": reply},
            {"role": "user", "content": render("duplicate.j2", earlier=earlier)}]


# -- generated candidates -----------------------------------------------------------------
def render_candidate(
    *, docstring: str, parameters: Sequence[Mapping[str, Any]],
    closures: Sequence[Mapping[str, Any]], derivatives: Mapping[str, str],
) -> str:
    """A candidate file from structural choices (the offline proposer's output).

    ``parameters``: ``{name, init, lo, hi}``; ``closures``: ``{attr, inputs, hidden, kind}``;
    ``derivatives``: state -> Python expression over ``s.<state>``, ``u.<input>``,
    ``self.<param>`` and ``self.<closure>(...)``.
    """
    params = [{"name": _ident(p["name"], "parameter"), "init": p["init"], "lo": p["lo"],
               "hi": p["hi"]} for p in parameters]
    clos = [{"attr": _ident(c["attr"], "closure"), "inputs": tuple(c["inputs"]),
             "hidden": tuple(int(h) for h in c["hidden"]), "kind": c.get("kind", "additive")}
            for c in closures]
    names = [p["name"] for p in params] + [c["attr"] for c in clos]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"candidate attribute name(s) used twice: {', '.join(dup)}")
    exprs = " ".join(derivatives.values())
    return render(
        "candidate.py.j2", docstring=docstring, parameters=params, closures=clos,
        derivatives={_ident(k, "state"): " ".join(str(v).split()) for k, v in derivatives.items()},
        uses_math=bool(re.search(r"\bmath\.", exprs)),
        uses_numpy=bool(re.search(r"\bnp\.", exprs)),
    )


def _ident(name: str, what: str) -> str:
    if not str(name).isidentifier():
        raise ValueError(f"{what} name {name!r} is not a Python identifier")
    return str(name)
