"""Structured proposals: the LLM fills in a JSON form, hyarch's template writes the file.

A small local model copies examples, invents methods and forgets bounds when it writes a
whole candidate file; the same model fills a short form reliably, above all when the server
constrains its output to the form's JSON schema (OpenAI's ``response_format`` with a
``json_schema``; llama.cpp's server turns the schema into a grammar). The form says *which*
hypothesis terms to add, *where* closures go and how wide, and, for what no hypothesis says,
*new terms*: an expression over the states, inputs and named parameters with bounds. The
offline proposer's template renders the file, so every candidate follows the contract; the
checks and the sandbox judge the new terms' expressions like any other code.

``--llm-format structured`` (or the space's ``llm.format``) chooses this form; ``code`` (the
default) asks for the whole file, which strong models use to write what no form can say.
"""

from __future__ import annotations

import ast
import json
import math
import re
from typing import Any

from hyarch.agent.offline import NONE, OfflineProposer, _hidden_label
from hyarch.spaces.loader import declared_parameters
from hyarch.spaces.space import Space

_IDENT = r"^[A-Za-z_][A-Za-z0-9_]*$"
MAX_NEW_TERMS = 4
MAX_EXPR_CHARS = 300
_FUNCTIONS = {"torch", "math", "s", "u"}


class FormError(ValueError):
    """The reply does not fill the form correctly (the reason names the field)."""


def term_keys(space: Space) -> list[str]:
    """``state:name`` for every hypothesis term, the values the form's ``terms`` takes."""
    return [f"{state}:{t.name}" for state, terms in space.spec.hypotheses.items() for t in terms]


def site_keys(space: Space) -> list[str]:
    """A name per closure site: its state, or ``state#i`` where a state has several."""
    states = [c.state for c in space.spec.closures]
    return [c.state if states.count(c.state) == 1 else f"{c.state}#{i}"
            for i, c in enumerate(space.spec.closures)]


def individual_keys(space: Space) -> list[str]:
    """The prior's parameters the form may make individual (the offline grammar's)."""
    grammar = OfflineProposer()._grammar(space)
    return [k.split(":", 1)[1] for k in grammar if k.startswith("individual:")]


def sizes(space: Space) -> list[str]:
    labels: list[str] = []
    for c in space.spec.closures:
        labels += [_hidden_label(h) for h in c.hidden if _hidden_label(h) not in labels]
    return labels


def schema(space: Space) -> dict[str, Any]:
    """The form as a JSON schema (names and sizes as enums: a constrained server cannot
    write one that does not exist)."""
    states = list(space.spec.states)
    props: dict[str, Any] = {
        "reasoning": {"type": "string", "maxLength": 600},
        "terms": {"type": "array", "items": {"type": "string", "enum": term_keys(space)},
                  "maxItems": max(len(term_keys(space)), 1)},
        "new_terms": {"type": "array", "maxItems": MAX_NEW_TERMS, "items": {
            "type": "object", "additionalProperties": False,
            "required": ["state", "expr", "parameters"],
            "properties": {
                "state": {"type": "string", "enum": states},
                "expr": {"type": "string", "maxLength": MAX_EXPR_CHARS},
                "parameters": {"type": "array", "maxItems": 4, "items": {
                    "type": "object", "additionalProperties": False,
                    "required": ["name", "init", "lower", "upper"],
                    "properties": {"name": {"type": "string", "pattern": _IDENT},
                                   "init": {"type": "number"}, "lower": {"type": "number"},
                                   "upper": {"type": "number"}}}}}}},
    }
    required = ["reasoning", "terms", "new_terms"]
    if space.spec.closures:
        props["closures"] = {"type": "array", "maxItems": len(space.spec.closures), "items": {
            "type": "object", "additionalProperties": False, "required": ["site", "size"],
            "properties": {"site": {"type": "string", "enum": site_keys(space)},
                           "size": {"type": "string", "enum": sizes(space)}}}}
        required.append("closures")
    if not term_keys(space):
        props.pop("terms")
        required.remove("terms")
    individual = individual_keys(space)  # (reads the prior: once)
    if individual:  # a parameter may vary by individual (a random effect)
        props["individual"] = {"type": "array", "maxItems": len(individual),
                               "items": {"type": "string", "enum": individual}}
    return {"type": "object", "additionalProperties": False, "required": required,
            "properties": props}


def response_format(space: Space) -> dict[str, Any]:
    """The request field that asks an OpenAI-compatible server for JSON of this schema."""
    return {"type": "json_schema",
            "json_schema": {"name": "candidate", "strict": True, "schema": schema(space)}}


def parse(reply: str) -> dict[str, Any]:
    """The JSON object in a reply (fenced or bare; the last object when there are several)."""
    text = (reply or "").strip()
    if not text:
        raise FormError("the reply was empty")
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        data = None
        decoder = json.JSONDecoder()
        for i in [m.start() for m in re.finditer(r"\{", text)][:200]:
            try:
                obj, _ = decoder.raw_decode(text, i)
            except json.JSONDecodeError:
                continue
            if isinstance(obj, dict):
                data = obj
                break
    if not isinstance(data, dict):
        raise FormError("the reply holds no JSON object (the form)")
    return data


def fill(space: Space, data: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The candidate file and its structural choices from a filled form; ``FormError``
    names what is wrong."""
    terms = data.get("terms") or []
    if not isinstance(terms, list) or not all(isinstance(t, str) for t in terms):
        raise FormError("`terms` must be a list of term names")
    known = set(term_keys(space))
    unknown = [t for t in terms if t not in known]
    if unknown:
        raise FormError(f"unknown term(s) {unknown}; the terms are {sorted(known)}")
    choices: dict[str, Any] = {}
    for key in known:
        state, name = key.split(":", 1)
        choices[f"term:{state}:{name}"] = key in terms
    sites = site_keys(space)
    for i, c in enumerate(space.spec.closures):
        choices[f"closure:{i}:{c.state}"] = NONE
    closures = data.get("closures") or []
    if not isinstance(closures, list):
        raise FormError("`closures` must be a list")
    for item in closures:
        if not isinstance(item, dict) or item.get("site") not in sites:
            raise FormError(f"a closure's `site` must be one of {sites}")
        i = sites.index(item["site"])
        allowed = [_hidden_label(h) for h in space.spec.closures[i].hidden]
        size = item.get("size")
        if size not in allowed:
            raise FormError(f"closure size {size!r} on {item['site']}: one of {allowed}")
        choices[f"closure:{i}:{space.spec.closures[i].state}"] = size
    individual = data.get("individual") or []
    allowed = individual_keys(space)
    if not isinstance(individual, list) or any(i not in allowed for i in individual):
        raise FormError(f"`individual` must list parameters among {allowed}")
    for name in allowed:
        choices[f"individual:{name}"] = name in individual
    renderer = OfflineProposer()
    for n, term in enumerate(_new_terms(space, data.get("new_terms") or []), start=1):
        name = f"new_{term['state']}_{n}"
        renderer._extra.append({**term, "name": name})
        choices[f"term:{term['state']}:{name}"] = True
        choices[f"new:{term['state']}:{name}"] = term["expr"]
    try:
        source = renderer.render(space, choices)
    except Exception as e:  # noqa: BLE001 - a prior the template cannot extend
        raise FormError(f"cannot write the candidate from the form: {e}") from None
    return source, choices


def _new_terms(space: Space, items: Any) -> list[dict[str, Any]]:
    if not isinstance(items, list) or len(items) > MAX_NEW_TERMS:
        raise FormError(f"`new_terms` must be a list of at most {MAX_NEW_TERMS}")
    variables = set(space.spec.states) | set(space.spec.inputs)
    out = []
    for item in items:
        if not isinstance(item, dict):
            raise FormError("each new term is an object {state, expr, parameters}")
        state, expr = item.get("state"), item.get("expr")
        if state not in space.spec.states:
            raise FormError(f"new term on unknown state {state!r}")
        if not isinstance(expr, str) or not expr.strip() or len(expr) > MAX_EXPR_CHARS:
            raise FormError("a new term's `expr` must be a short expression")
        params: dict[str, dict[str, Any]] = {}
        for p in item.get("parameters") or []:
            name = p.get("name") if isinstance(p, dict) else None
            if not isinstance(name, str) or not re.match(_IDENT, name) \
                    or name in _FUNCTIONS | {"t", "self"}:
                raise FormError(f"parameter name {name!r} is not a new identifier")
            if name in variables:
                # a parameter named after a state ("-omega * s.omega"): unambiguous in the
                # expression (the state is s.omega), confusing in a report: k_<name>
                expr, name = _rename(expr, name, f"k_{name}"), f"k_{name}"
            lo, init, hi = p.get("lower"), p.get("init"), p.get("upper")
            if not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                       and math.isfinite(v) for v in (lo, init, hi)):
                raise FormError(f"parameter {name}: lower, init and upper must be numbers")
            lo, hi = min(lo, hi), max(lo, hi)
            if not lo < hi:
                raise FormError(f"parameter {name}: its bounds are one value ({lo})")
            if not lo < init < hi:
                # an init on or outside the bounds (small models write init = lower): the
                # form gives a starting point, the fit decides; start in the middle
                init = math.sqrt(lo * hi) if lo > 0 and hi / lo >= 100 else (lo + hi) / 2
            params[name] = {"init": float(init), "bounds": [float(lo), float(hi)]}
        _check_expr(expr, variables, set(params) | _prior_parameters(space))
        out.append({"state": state, "expr": expr.strip(), "parameters": params,
                    "description": "proposed by the LLM"})
    return out


def _rename(expr: str, old: str, new: str) -> str:
    """``expr`` with the bare name ``old`` (not ``s.old``) written ``new``."""
    try:
        tree = ast.parse(expr, mode="eval")
    except SyntaxError:
        return expr  # reported by the expression check
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and node.id == old:
            node.id = new
    return ast.unparse(tree)


def _prior_parameters(space: Space) -> set[str]:
    path = space.prior_path()
    src = path.read_text() if path is not None else ""
    names = declared_parameters(src)
    for terms in space.spec.hypotheses.values():
        for t in terms:
            names |= set(t.parameters)
    return names


def _check_expr(expr: str, variables: set[str], parameters: set[str]) -> None:
    """An expression over ``s.<state>``, ``u.<input>``, parameters, numbers and
    ``torch.``/``math.`` functions; nothing else."""
    try:
        tree = ast.parse(expr, mode="eval")
    except SyntaxError as e:
        raise FormError(f"new term `{expr}` is not an expression: {e.msg}") from None
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr.startswith("_"):
            raise FormError(f"new term `{expr}`: no private attributes")
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            if node.value.id in ("s", "u") and node.attr not in variables:
                raise FormError(f"new term `{expr}`: no state or input {node.attr!r}")
        elif isinstance(node, ast.Name) and node.id not in parameters | _FUNCTIONS:
            raise FormError(f"new term `{expr}`: {node.id!r} is neither a parameter of the"
                            " term nor s.<state> / u.<input>")
        elif isinstance(node, (ast.Lambda, ast.comprehension, ast.NamedExpr, ast.Starred)):
            raise FormError(f"new term `{expr}`: only arithmetic and functions")


def describe(choices: dict[str, Any]) -> str:
    """A candidate's structure in a line, for the prompts' pool."""
    terms = [k.split(":", 2)[2] for k, v in choices.items() if k.startswith("term:") and v is True
             and not k.split(":", 2)[2].startswith("new_")]
    news = [f"{k.split(':')[1]}: {v}" for k, v in choices.items() if k.startswith("new:")]
    nets = [f"{k.split(':')[2]} {v}" for k, v in choices.items()
            if k.startswith("closure:") and v != NONE]
    parts = [f"terms {', '.join(terms)}" if terms else "no hypothesis term"]
    if news:
        parts.append("new terms " + "; ".join(news))
    parts.append(f"closures {', '.join(nets)}" if nets else "no closure")
    ind = [k.split(":", 1)[1] for k, v in choices.items()
           if k.startswith("individual:") and v is True]
    if ind:
        parts.append(f"individual {', '.join(ind)}")
    return "; ".join(parts)
