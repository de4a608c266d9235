"""What the search loop and the CLI call: distil a trained candidate into new candidates."""

from __future__ import annotations

import re
from typing import Any

from hyarch.core.candidate import check_forward, load_model_class, make_factory
from hyarch.core.model import HybridModel
from hyarch.distill.candidate import RenderError, replace_closure, subclass_without_closure
from hyarch.distill.distillation import Distillation, distill
from hyarch.spaces.space import Space


def _header(parts: list[Distillation]) -> str:
    lines = [f"# Distilled by hyarch from closure `{parts[0].closure}`:"]
    for p in parts:
        r2 = "-" if p.r2 is None else f"{p.r2:.4f}"
        ex = "-" if p.explained is None else f"{p.explained:.4f}"
        lines.append(f"#   d{p.state}/dt += {p.expression}")
        lines.append(f"#   on validation states: R^2 = {r2}, share of the closure explained = {ex}")
    return "\n".join(lines) + "\n"


def _check(space: Space, source: str) -> None:
    # Safe to load here: distillation runs only inside the sandboxed child (the runner's
    # post-training step), in the process that already runs the candidate's own code.
    cls = load_model_class(source, "<distilled>")
    model = make_factory(cls, space.states, space.inputs, space.scales(), space.shapes)()
    train = space.train
    check_forward(model, train.y0(), train.t[:, 0], None if train.u is None else train.u[:, 0])


def distill_candidate(space: Space, source: str, model: HybridModel, *,
                      min_explained: float = 0.95, **options: Any) -> list[dict[str, Any]]:
    """Distil each closure of the trained ``model`` (built from ``source``) on ``space``.

    One dict per (closure, state): ``closure``, ``state``, ``expression``, ``terms`` (each
    with ``name``, ``kind``, ``code``, ``coefficient``), ``r2`` and ``explained`` (on
    validation states: R^2, and 1 - SSE / sum(G^2), the share of the closure's output the
    terms explain), ``shifts`` (what the closure absorbed from existing parameters) and
    ``source``: a new mechanistic candidate with the closure replaced by the terms, each
    coefficient a named, bounded parameter starting at its distilled value. ``source`` is
    None, with ``reason``, when ``explained`` is below ``min_explained`` or the file
    cannot be rewritten.
    ``options`` go to :func:`hyarch.distill.distill` (``degree``, ``tolerance``...).
    """
    parts = distill(space, model, **options)
    by_closure: dict[str, list[Distillation]] = {}
    for p in parts:
        by_closure.setdefault(p.closure, []).append(p)
    out = []
    for name, group in by_closure.items():
        weak = [p for p in group if p.explained is None or p.explained < min_explained]
        new, reason = None, None
        if weak:
            reason = (f"the terms explain a share {weak[0].explained} of the closure's output"
                      f" on validation states, below {min_explained}, for d{weak[0].state}/dt")
        else:
            try:
                doc = "Distilled: " + "; ".join(
                    f"closure `{name}` on d{p.state}/dt replaced by {p.expression}"
                    for p in group) + "."
                try:
                    new = replace_closure(source, model, name, group,
                                          header=_header(group), doc=doc)
                except RenderError:  # a setup() the in-place rewrite cannot read
                    new = subclass_without_closure(source, model, name, group,
                                                   header=_header(group), doc=doc)
                _check(space, new)
            except (RenderError, SyntaxError) as e:
                new, reason = None, f"cannot rewrite the candidate: {e}"
            except Exception as e:  # the rendered file fails the contract
                new, reason = None, f"the distilled candidate fails its check: {e}"
        for p in group:
            out.append({**p.to_dict(), "source": new, "reason": reason})
    return out


def format_distillation(entries: list[dict[str, Any]]) -> str:
    """Plain text of ``distill_candidate``'s records: for the terminal and as evidence in
    prompts (what each closure turned out to be, and how well the terms explain it)."""
    lines = []
    for d in entries:
        r2 = "-" if d["r2"] is None else f"{d['r2']:.4f}"
        ex = "-" if d["explained"] is None else f"{d['explained']:.4f}"
        lines.append(f"closure {d['closure']} -> d{d['state']}/dt += {d['expression']}")
        lines.append(f"  on validation states: R^2 {r2}, share of the closure explained {ex};"
                     f" {len(d['terms'])} of {len(d['library'])} library terms")
        for t in d["terms"]:
            lines.append(f"    {t['kind']:<10} {t['name']:<28} coefficient {t['coefficient']:+.6g}")
        if d.get("source") is None and d.get("reason"):
            lines.append(f"  no candidate: {d['reason']}")
    return "\n".join(lines)


def grammar_key(source_id: str, entry: dict[str, Any]) -> str:
    """The offline grammar's name for what closure ``entry["closure"]`` of candidate
    ``source_id`` distilled to on its state: one structural part, whatever its term count."""
    from hyarch.distill.candidate import _free_name

    return _free_name(f"distilled_{source_id}_{entry['closure']}", set())


def grammar_terms(entries: list[dict[str, Any]], source_id: str = "c", *,
                  min_explained: float = 0.95) -> dict[str, list[dict[str, Any]]]:
    """New hypothesis terms, per state, in the space's ``hypotheses`` format
    (``name``, ``expr``, ``parameters: {p: {init, bounds}}``, ``description``), from the
    generic terms of good distillations of candidate ``source_id``: what an offline proposer
    can add to its grammar. Hypothesis terms are already in the grammar and shifts are not
    new terms.

    What one closure distilled to on one state is **one** term (its generic terms summed,
    each with its own parameter), not one term per library column: a structural search
    that toggles columns one by one draws half of them at random into every candidate.
    A distillation longer than ``MAX_DISTILLED_TERMS`` is a curve fit, not a mechanism,
    and adds nothing (nor is it queued as a candidate)."""
    from hyarch.distill.candidate import _bounds, _free_name
    from hyarch.distill.library import substitute
    from hyarch.distill.policy import MAX_DISTILLED_TERMS

    out: dict[str, list[dict[str, Any]]] = {}
    tag = re.sub(r"\W", "", source_id)
    for d in entries:
        if d["explained"] is None or d["explained"] < min_explained:
            continue
        if len(d.get("terms") or ()) > MAX_DISTILLED_TERMS:
            continue
        generic = [t for t in d["terms"] if t["kind"] == "generic"]
        if not generic:
            continue
        taken: set[str] = set()
        parts, params = [], {}
        for t in generic:
            c = float(t["coefficient"])
            name = _free_name(f"k_{d['state']}_{tag}", taken)
            lo, hi = _bounds(c, None)
            params[name] = {"init": c, "bounds": [lo, hi]}
            if t.get("template") and t.get("fixed"):  # a saturating form: K a parameter too
                names = {}
                for pname, spec in t["fixed"].items():
                    k = _free_name(f"{pname}_{tag}", taken)
                    init = float(spec.get("init", 1.0))
                    params[k] = {"init": init, "bounds": list(_bounds(init, spec.get("bounds")))}
                    names[pname] = k
                parts.append(f"{name} * ({substitute(t['template'], names)})")
            else:
                parts.append(name if t["code"] == "1" else f"{name} * {t['code']}")
        out.setdefault(d["state"], []).append({
            "name": grammar_key(source_id, d),
            "expr": " + ".join(parts),
            "parameters": params,
            "description": f"distilled from closure {d['closure']} of {source_id} "
                           f"(share explained {d['explained']:.3f})",
        })
    return out
