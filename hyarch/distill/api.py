"""What the search loop and the CLI call: distil a trained candidate into new candidates."""

from __future__ import annotations

import math
import re
import time
from dataclasses import replace
from typing import Any

from hyarch.core.candidate import check_forward, load_model_class, make_factory
from hyarch.core.model import HybridModel
from hyarch.distill.candidate import (
    RenderError,
    replace_calls,
    replace_closure,
    starting_values,
    subclass_without_closure,
    with_initial_values,
)
from hyarch.distill.distillation import Distillation, _closure_names, distill, simpler
from hyarch.spaces.space import Space

# each closure's refits run beside the other closures' networks, trained anew in each: a
# closure's pick and the next best of its tier (at most this many) are refitted again in
# the whole mechanism, network-free, where the rollout can tell them apart
MAX_RIVALS = 2
MIN_REFIT_SECONDS = 5.0  # a refit with less time than this left is not started


def _header(parts: list[Distillation]) -> str:
    lines = [f"# Distilled by hyarch from closure `{parts[0].closure}`:"]
    for p in parts:
        r2 = "-" if p.r2 is None else f"{p.r2:.4f}"
        ex = "-" if p.explained is None else f"{p.explained:.4f}"
        lines.append(f"#   {describe(p)}")
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
                      min_explained: float = 0.95, refit: Any = None,
                      refit_seconds: float = math.inf, **options: Any) -> list[dict[str, Any]]:
    """Distil each closure of the trained ``model`` (built from ``source``) on ``space``.

    One dict per (closure, state): ``closure``, ``state``, ``expression``, ``terms`` (each
    with ``name``, ``kind``, ``code``, ``coefficient``), ``r2`` and ``explained`` (on
    validation states: R^2, and 1 - SSE / sum(G^2), the share of the closure's output the
    terms explain), ``shifts`` (what the closure absorbed from existing parameters) and
    ``source``: a new mechanistic candidate with the closure replaced by the terms, each
    coefficient a named, bounded parameter starting at its distilled value. ``source`` is
    None, with ``reason``, when ``explained`` is below ``min_explained`` or the file
    cannot be rewritten.

    A closure whose output is not simply what it adds to one state also has a record with
    ``form: "call"`` (``state`` empty): the network as a formula of its own inputs, which
    replaces each of its calls. ``candidate_form`` says which form ``source`` was written
    from.

    ``refit`` (a ``TrainConfig``): the regression's R^2 does not decide. The renderings
    ``_variants`` lists (each form; each with one record replaced by its choice less one
    term, or by another fit on its sparse path's Pareto front) are written as candidates
    and fitted in the core on ``space.train``, stopping on ``space.val``; the ranking's own
    rule (``hyarch.ranking.rule.tiers``: the simplest within one standard error of the best,
    over ``space.val``'s trajectories) picks. Each entry then holds the winner, and
    ``refits`` lists every variant with its score (or why it was not fitted). The refits
    share ``refit_seconds`` (each at most the config's ``max_seconds``); a variant left
    without time is recorded as not tried.
    ``options`` go to :func:`hyarch.distill.distill` (``degree``, ``tolerance``...).
    """
    parts = distill(space, model, **options)
    by_closure: dict[str, list[Distillation]] = {}
    for p in parts:
        by_closure.setdefault(p.closure, []).append(p)
    out = []
    # per closure: (its pick or None, its per-state records, its pick's rivals)
    decided: dict[str, tuple[list[Distillation] | None, list[Distillation],
                             list[list[Distillation]]]] = {}
    plans = []
    for name, group in by_closure.items():
        per_state = [p for p in group if p.form == "state"]
        bases, reasons = [], []
        weak = [p for p in per_state if p.explained is None or p.explained < min_explained]
        if weak:
            reasons.append(f"no sparse fit of the library for d{weak[0].state}/dt"
                           if weak[0].explained is None else
                           f"the terms explain a share {weak[0].explained} of the closure's"
                           f" output on validation states, below {min_explained}, for"
                           f" d{weak[0].state}/dt")
        elif per_state:
            bases.append(per_state)
        for c in (p for p in group if p.form == "call"):
            if c.explained is not None and c.explained >= min_explained:
                bases.append([c])
            else:
                reasons.append(f"as a function of its inputs, the terms explain a share"
                               f" {c.explained} of what the network returns, below"
                               f" {min_explained}")
        new, chosen = None, None
        for b in bases:
            new, why = _render(space, source, model, name, b)
            if new is not None:
                chosen = b
                break
            reasons.append(why)
        variants = _variants(bases, min_explained) if refit is not None else []
        plans.append((name, group, per_state, reasons, new, chosen,
                      variants if new is not None and len(variants) > 1 else []))
    # the refit time is shared by every fit planned, each closure's and the whole's (at
    # most 1 + one per closure), so that the first closures' refits cannot leave none for
    # the whole mechanism
    planned = (sum(len(v) for *_, v in plans)
               + ((1 + MAX_RIVALS) * len(plans) + 1
                  if len(plans) > 1 and refit is not None else 0))
    total = refit_seconds
    for name, group, per_state, reasons, new, chosen, variants in plans:
        refits, rivals = [], []
        if variants:
            t0 = time.monotonic()
            won, refits, rivals = _decide(space, source, model, name, variants, refit,
                                          min(refit_seconds, total * len(variants) / planned))
            refit_seconds -= time.monotonic() - t0
            if won is not None:
                chosen, new = won
        if chosen is not None:  # the records hold what the candidate is made of
            swap = {(p.form, p.state): p for p in chosen}
            group = [swap.get((p.form, p.state), p) for p in group]
        decided[name] = (chosen, per_state, rivals)
        for p in group:
            out.append({**p.to_dict(), "source": new,
                        "reason": None if new is not None else "; ".join(reasons),
                        "refits": refits,
                        "candidate_form": chosen[0].form if chosen else None})
    # a closure with no record adds next to nothing anywhere (below distill's min_share)
    for name, _ in _closure_names(model):
        decided.setdefault(name, (None, [], []))
    joint = (_joint(space, source, model, decided, refit, refit_seconds)
             if len(decided) > 1 else None)
    if joint is not None and out:
        out[0]["joint"] = joint
    return out


def _joint(space: Space, source: str, model: HybridModel,
           decided: dict[str, tuple[list[Distillation] | None, list[Distillation],
                                    list[list[Distillation]]]],
           refit: Any = None, seconds: float = math.inf) -> dict[str, Any] | None:
    """Every closure of a hybrid with several at once: each replaced by what it distilled
    to, and each that distilled to nothing good dropped (its null value: the hypothesis
    that the state needs nothing there). Each closure's own candidate keeps the others'
    networks; this one has none, so that a search with a few candidates left can try the
    whole mechanism in one.

    A closure that learned noise still distils to something (a small curve fit), so with
    ``refit`` the rollout decides here too: the whole, the whole with each closure's terms
    dropped in turn, and the whole with each closure's pick swapped for one of its rivals
    (``MAX_RIVALS``) are fitted in the core and the ranking's rule picks; then, as in
    ``_decide``, the pick one step simpler (less each of its terms or closures, each term
    at its leading order), while the pick changes.
    Each closure's own decision was made beside the other networks, retrained in every
    refit; here, network-free, a term that only helped a network along (ODEBench s37:
    `x_0^2 x_1`, fitted at 3e-5, beside the missing `-x_0`) is seen to be unneeded.

    ``{"source", "parts": the records it is made of (a dropped closure's with no terms),
    "dropped": the closures set to their null, "refits", "reason"}``; ``source`` is None,
    with ``reason``, when it cannot be written; None when no closure distilled."""
    from hyarch.distill.policy import MAX_DISTILLED_TERMS

    if not any(chosen for chosen, *_ in decided.values()):
        return None

    def null(records: list[Distillation]) -> list[Distillation]:
        return [replace(p, terms=(), expression="0", shifts={}, alternatives=(), path=())
                for p in records]

    groups: dict[str, list[Distillation]] = {}
    dropped, bare = [], []  # bare: dropped with no per-state record to write its null from
    for name, (chosen, per_state, _) in decided.items():
        if chosen:
            groups[name] = chosen
        elif per_state:
            groups[name], dropped = null(per_state), [*dropped, name]
        else:
            dropped, bare = [*dropped, name], [*bare, name]
    kept = [n for n in groups if n not in dropped]
    # the variants: the whole, then the whole less each closure's terms (while any remain)
    variants = [(groups, dropped)]
    if refit is not None and len(kept) > 1:
        for n in kept:
            if decided[n][1]:  # a null is written from its per-state records
                variants.append(({**groups, n: null(decided[n][1])}, [*dropped, n]))
    if refit is not None:  # each closure's rivals: here, with no network beside them
        for n in kept:
            variants += [({**groups, n: g}, dropped) for g in decided[n][2]]

    def render(v: tuple[dict[str, list[Distillation]], list[str]]) -> tuple:
        g, drop = v
        src, why = _render_joint(space, source, model, g, drop, bare)
        said = [f"{n}: dropped" for n in decided if n in drop]
        said += [describe(p) for n, ps in g.items() if n not in drop for p in ps]
        return {"expressions": said, "dropped": drop}, src, why

    def parts(v: tuple[dict[str, list[Distillation]], list[str]]) -> list[Distillation]:
        return [p for ps in v[0].values() for p in ps]

    def fewer(v: tuple[dict[str, list[Distillation]], list[str]]) -> list[tuple]:
        g, drop = v
        live = [n for n in g if n not in drop]
        out = [({**g, n: [*ps[:i], f, *ps[i + 1:]]}, drop)
               for n, ps in g.items() if n not in drop
               for i, p in enumerate(ps) for f in simpler(p)]
        if len(live) > 1:  # less a whole closure (while one remains: none is the prior)
            out += [({**g, n: null(decided[n][1])}, [*drop, n])
                    for n in live if decided[n][1]]
        return out

    def key(v: tuple[dict[str, list[Distillation]], list[str]]) -> tuple:
        g, drop = v
        return (tuple((n, _structure(ps)) for n, ps in sorted(g.items()) if n not in drop),
                tuple(sorted(drop)))

    def preference(v: tuple[dict[str, list[Distillation]], list[str]]) -> int:
        return sum(_preference(ps) for n, ps in v[0].items() if n not in v[1])

    items = [render(v) for v in variants]
    # (a closure dropped with no record of its own still says so, for the grammar's words)
    nothing = [{"closure": n, "state": "", "form": "state", "expression": "0", "terms": []}
               for n in bare]
    record = {"parts": [p.to_dict() for p in parts(variants[0])] + nothing,
              "dropped": dropped, "refits": []}
    if items[0][1] is None:
        return {**record, "source": None, "reason": items[0][2]}
    if refit is None:
        return {**record, "source": items[0][1], "reason": None}
    # the whole, less each closure, then (backward elimination) less each term of the pick
    t0 = time.monotonic()
    first = seconds * len(items) / (len(items) + MAX_DISTILLED_TERMS)
    fitted = _fit_items(space, items, refit, first)
    best = _eliminate(space, refit, seconds - (time.monotonic() - t0), variants, items,
                      fitted, fewer=fewer, key=key, render=render, preference=preference)
    record["refits"] = fitted[0]
    if best is None:  # none refits: the whole stands
        return {**record, "source": items[0][1], "reason": None}
    rec, src, _ = items[best]
    return {**record, "parts": [p.to_dict() for p in parts(variants[best])] + nothing,
            "dropped": rec["dropped"],
            "source": with_initial_values(src, fitted[0][best]["parameters"]), "reason": None}


def _render_joint(space: Space, source: str, model: HybridModel,
                  groups: dict[str, list[Distillation]], dropped: list[str],
                  bare: list[str]) -> tuple[str | None, str | None]:
    """(the candidate with every closure replaced or dropped, None) or (None, why not)."""
    names = [*groups, *(n for n in bare if n not in groups)]
    parts = [p for g in groups.values() for p in g]
    doc = "Distilled: " + "; ".join(
        f"closure `{n}` dropped" if n in dropped else f"closure `{n}`: "
        + ", ".join(describe(p) for p in groups[n]) for n in names) + "."
    header = "".join(f"# Distilled by hyarch: closure `{n}` "
                     + ("dropped (set to its null value)\n" if n in dropped
                        else "-> " + "; ".join(describe(p) for p in groups[n]) + "\n")
                     for n in names)
    try:
        new = source
        try:
            for k, (name, g) in enumerate(groups.items()):
                last = doc if k == len(groups) - 1 else ""  # the docstring, once
                if g[0].form == "call":
                    new = replace_calls(new, model, name, g[0], named=g[0].named, doc=last)
                else:
                    new = replace_closure(new, model, name, g, doc=last)
        except RenderError:
            if any(p.form == "call" for p in parts):
                raise
            new, bare = subclass_without_closure(source, model, names, parts, doc=doc), []
        if bare:  # what is left of them is switched off in a subclass
            new = subclass_without_closure(new, model, bare, [], doc=doc)
        # existing parameters start where every closure's shifts put them (each
        # closure's rewrite saw only its own)
        new = header + with_initial_values(new, starting_values(model, parts))
        _check(space, new)
    except (RenderError, SyntaxError) as e:
        return None, f"cannot rewrite the candidate: {e}"
    except Exception as e:  # noqa: BLE001 - the rendered file fails the contract
        return None, f"the distilled candidate fails its check: {e}"
    return new, None


def describe(p: Any) -> str:
    """One line for a distillation record (a ``Distillation`` or its dict)."""
    d = p if isinstance(p, dict) else p.to_dict()
    if d.get("form") == "call":
        return f"{d['closure']}({', '.join(d.get('inputs') or ())}) = {d['expression']}"
    return f"d{d['state']}/dt += {d['expression']}"


def _render(space: Space, source: str, model: HybridModel, name: str,
            group: list[Distillation]) -> tuple[str | None, str | None]:
    """(the distilled candidate's source, None), or (None, why it cannot be written)."""
    if group[0].form == "call":
        doc = f"Distilled: closure `{name}` replaced by the formula {describe(group[0])}."
    else:
        doc = "Distilled: " + "; ".join(
            f"closure `{name}` on d{p.state}/dt replaced by {p.expression}"
            for p in group) + "."
    try:
        if group[0].form == "call":
            new = replace_calls(source, model, name, group[0], named=group[0].named,
                                header=_header(group), doc=doc)
        else:
            try:
                new = replace_closure(source, model, name, group, header=_header(group),
                                      doc=doc)
            except RenderError:  # a setup() the in-place rewrite cannot read
                new = subclass_without_closure(source, model, name, group,
                                               header=_header(group), doc=doc)
        _check(space, new)
    except (RenderError, SyntaxError) as e:
        return None, f"cannot rewrite the candidate: {e}"
    except Exception as e:  # the rendered file fails the contract
        return None, f"the distilled candidate fails its check: {e}"
    return new, None


def _variants(bases: list[list[Distillation]],
              min_explained: float) -> list[list[Distillation]]:
    """Renderings of one closure to refit: each base (the closure as terms added to the
    states it feeds; the network as a formula of its inputs), then each base with one of
    its records replaced by another fit: the record's choice with a term swapped for a
    stand-in (a collinear twin, or the term that explains as much in its place: which of
    the two, the regression could not tell), its choice less one term (is each needed?),
    then the fits on its sparse path's Pareto front that explain at least
    ``min_explained``; none without a new term (that is the prior, which the search has)
    or longer than ``MAX_DISTILLED_TERMS``; at most ``MAX_ALTERNATIVES`` in all."""
    from hyarch.distill.policy import MAX_ALTERNATIVES, MAX_DISTILLED_TERMS

    out, seen = [], set()

    def add(variant: list[Distillation]) -> None:
        key = _structure(variant)  # a structure once
        if key not in seen:
            seen.add(key)
            out.append(variant)

    for group in bases:
        add(group)
    for group in bases:
        for i, p in enumerate(group):
            for a in p.alternatives:
                new_terms = [t for t in a["terms"] if t["kind"] != "shift"]
                if (not new_terms or len(a["terms"]) > MAX_DISTILLED_TERMS
                        or (a.get("kind") not in ("reduced", "alias")
                            and (a["explained"] is None or a["explained"] < min_explained))):
                    continue
                alt = replace(p, terms=tuple(a["terms"]), expression=a["expression"],
                              explained=a["explained"], r2=a["r2"],
                              shifts={t["parameter"]: t["coefficient"] for t in a["terms"]
                                      if t["kind"] == "shift"})
                add([*group[:i], alt, *group[i + 1:]])
    return out[:MAX_ALTERNATIVES]


def _decide(space: Space, source: str, model: HybridModel, name: str,
            variants: list[list[Distillation]], cfg: Any, seconds: float = math.inf):
    """Fit each variant as a candidate; the ranking's rule on the selection split picks.
    The pick is then also fitted one step simpler (less each of its terms, where it adds
    two or more: is every term needed?; each nonlinear term at its leading order), and the
    rule picks again among all; and so on while the pick changes (backward elimination, as
    ``_eliminate`` says). Returns ((the winning group, its
    source) or None when none refits, one record per variant fitted, the pick's rivals: at
    most ``MAX_RIVALS`` other variants of its tier, which the whole mechanism refits
    without the other closures' networks beside them)."""
    from hyarch.distill.policy import MAX_DISTILLED_TERMS

    t0 = time.monotonic()
    variants = list(variants)
    items = [_item(space, source, model, name, group) for group in variants]
    # the first round keeps time for the others (at most one fit per term it could drop)
    first = seconds * len(items) / (len(items) + MAX_DISTILLED_TERMS)
    tried, errors, sizes = _fit_items(space, items, cfg, first)

    def fewer(group: list[Distillation]) -> list[list[Distillation]]:
        return [[*group[:i], f, *group[i + 1:]]
                for i, p in enumerate(group) for f in simpler(p)]

    best = _eliminate(space, cfg, seconds - (time.monotonic() - t0), variants, items,
                      (tried, errors, sizes), fewer=fewer, key=_structure,
                      render=lambda g: _item(space, source, model, name, g),
                      preference=_preference)
    if best is None:  # none refits: the regression's choice stands
        return None, tried, []
    # the rivals: the others of its tier, best score first
    tier = [i for i, r in enumerate(tried) if i != best and r.get("tier") == tried[best]["tier"]]
    tier.sort(key=lambda i: tried[i]["selection_log10_nmse"])
    rivals = [variants[i] for i in tier[:MAX_RIVALS]]
    # queued where its refit ended: its own training starts there
    return ((variants[best], with_initial_values(items[best][1], tried[best]["parameters"])),
            tried, rivals)


def _eliminate(space: Space, cfg: Any, seconds: float, variants: list, items: list,
               fitted: tuple[list[dict[str, Any]], dict[str, list[float]], dict[str, int]],
               *, fewer, key, render, preference) -> int | None:
    """Backward elimination over fitted ``variants`` (``items`` their renderings,
    ``fitted`` what ``_fit_items`` returned for them; all three grow in place): the
    ranking's rule picks; the pick is then fitted one step simpler (``fewer``: less each
    of its terms, each term at its leading order; each structure once by ``key``;
    ``render`` writes one) and the rule picks again among all; and so on while the pick
    changes. A term goes when the fit without it is as good, within one standard error,
    with one value fewer; ``sin(x)`` becomes ``x`` when the two are as good (as many
    values: ``preference`` prefers the library's earlier term), ``x/(K + x)`` becomes
    ``x`` when that is as good with one value fewer. Returns the pick's index, or None
    when none was fitted."""
    tried, errors, sizes = fitted
    t0 = time.monotonic()
    best = _pick(tried, errors, sizes, [preference(v) for v in variants])
    seen = {key(v) for v in variants}
    while best is not None:
        new = []
        for v in fewer(variants[best]):
            if key(v) not in seen:
                seen.add(key(v))
                new.append(v)
        left = seconds - (time.monotonic() - t0)
        if not new or left <= 0:
            break
        more = [render(v) for v in new]
        t2, e2, s2 = _fit_items(space, more, cfg, left, first=len(items))
        variants += new
        items += more
        tried += t2
        errors.update(e2)
        sizes.update(s2)
        picked = _pick(tried, errors, sizes, [preference(v) for v in variants])
        if picked == best:
            break
        best = picked
    return best


def _item(space: Space, source: str, model: HybridModel, name: str,
          group: list[Distillation]) -> tuple[dict, str | None, str | None]:
    rec = {"expressions": [describe(p) for p in group],
           "explained": min((p.explained for p in group if p.explained is not None),
                            default=None)}
    return (rec, *_render(space, source, model, name, group))


def _structure(group: list[Distillation]) -> tuple:
    """A variant's structure: fits that differ only in shifts (the existing parameters'
    starting values) or coefficients are the same candidate once refitted."""
    return tuple((v.form, v.state, tuple(sorted(
        (t["kind"], t["name"]) for t in v.terms if t["kind"] != "shift")))
        for v in group)


def _fit_items(space: Space, items: list[tuple[dict, str | None, str | None]], cfg: Any,
               seconds: float, first: int = 0
               ) -> tuple[list[dict[str, Any]], dict[str, list[float]], dict[str, int]]:
    """Fit each item within ``seconds`` in all: (one record per item, each fitted one's
    log10 nMSE per fold under the key ``fit <first + k + 1>``, and its number of fitted
    values)."""
    import torch

    from hyarch.core.fields import accurate_rollout
    from hyarch.core.metrics import per_trajectory_nmse
    from hyarch.core.starts import estimate_starts, refit_from_starts, without_first
    from hyarch.core.train import fit

    t0 = time.monotonic()
    tried, errors, sizes = [], {}, {}
    for k, (rec, src, why) in enumerate(items):
        left = seconds - (time.monotonic() - t0)
        if left < MIN_REFIT_SECONDS:
            tried.append({**rec, "failed": "not refitted: the candidate's time limit is near"})
            continue
        if src is None:
            tried.append({**rec, "failed": why})
            continue
        try:
            # Safe to load here, as in _check: refits run only inside the sandboxed child
            # (the runner's post-training step), which already runs the candidate's code.
            cls = load_model_class(src, "<distilled>")
            factory = make_factory(cls, space.states, space.inputs, space.scales(),
                                   space.shapes)
            budget = min(cfg.max_seconds, left / (len(items) - k))
            fitted = fit(factory, space.train, space.val, replace(cfg, max_seconds=budget))
            # as the candidates are fitted and scored: from estimated starts where the
            # space says so
            n = space.conditioning("val")
            fitted = refit_from_starts(factory, space.train, space.val,
                                       replace(cfg, max_seconds=budget), fitted, n)
            val = space.val.to(fitted.scales.device)
            start = (estimate_starts(fitted.model, val, n, fitted.scales, method=cfg.method,
                                     substeps=cfg.substeps) if n else None)
            with torch.no_grad():
                pred, _ = accurate_rollout(fitted.model, val, fitted.scales, method=cfg.method,
                                           substeps=cfg.substeps, y0=start)
                if n:  # the samples the starts were fitted to are not scored
                    val = without_first(val, n)
                # folds as the ranking's: trajectories, or blocks of them when too few
                per = per_trajectory_nmse(pred, val, fitted.scales)
        except Exception as e:  # noqa: BLE001 - one variant's failure is that variant's
            tried.append({**rec, "failed": f"{type(e).__name__}: {e}"})
            continue
        per = [float(v) for v in per.cpu()]
        if not all(math.isfinite(v) and v >= 0 for v in per):
            tried.append({**rec, "failed": "the refitted rollout diverged"})
            continue
        key = f"fit {first + k + 1}"
        errors[key] = [math.log10(max(v, 1e-30)) for v in per]
        sizes[key] = len(fitted.model.physical_values())
        tried.append({**rec, "fitted_values": sizes[key],
                      "selection_log10_nmse": sum(errors[key]) / len(errors[key]),
                      "parameters": fitted.model.physical_values()})
    return tried, errors, sizes


def _preference(group: list[Distillation]) -> int:
    """How far down the library a variant's new terms come (the sum of their places;
    a term not in it, a collinear twin, last): hypotheses before generic terms, a
    constant before monomials, monomials before ``sin``, ``tanh`` and the rational forms."""
    out = 0
    for p in group:
        for t in p.terms:
            if t["kind"] != "shift":
                out += p.library.index(t["name"]) if t["name"] in p.library else len(p.library)
    return out


def _pick(tried: list[dict[str, Any]], errors: dict[str, list[float]],
          sizes: dict[str, int], preference: list[int] | None = None) -> int | None:
    """The ranking's rule (``tiers``: the simplest within one standard error of the best)
    over the fitted items; each record gets its place, tier and evidence. The winner's
    index, or None when none was fitted. ``preference`` (per item, ``_preference``): among
    the first tier's items with the fewest fitted values, which the rollout cannot tell
    apart, the one whose terms come first in the library wins (the true constant 9.81
    against its stand-in `9.81 tanh(x_0)` on ODEBench s5, 0.001 decades apart; `x_0`
    against `sin(x_0)` on small values)."""
    from hyarch.ranking.rule import tiers

    if not errors:
        return None
    order = tiers(errors, sizes)

    def index(key: str) -> int:
        return int(key.split()[1]) - 1

    if preference is not None:
        top, ev = order[0]
        alike = [x for x in order if x[1].tier == ev.tier and sizes[x[0]] == sizes[top]]
        first = min(alike, key=lambda x: preference[index(x[0])])  # ties: the better score
        order.remove(first)
        order.insert(0, first)
    for i, (key, ev) in enumerate(order, 1):
        tried[index(key)].update(place=i, tier=ev.tier, evidence=ev.describe())
    return index(order[0][0])


def format_distillation(entries: list[dict[str, Any]]) -> str:
    """Plain text of ``distill_candidate``'s records: for the terminal and as evidence in
    prompts (what each closure turned out to be, and how well the terms explain it)."""
    lines = []
    for d in entries:
        r2 = "-" if d["r2"] is None else f"{d['r2']:.4f}"
        ex = "-" if d["explained"] is None else f"{d['explained']:.4f}"
        lines.append(f"closure {d['closure']} -> {describe(d)}")
        lines.append(f"  on validation states: R^2 {r2}, share of the closure explained {ex};"
                     f" {len(d['terms'])} of {len(d['library'])} library terms")
        for t in d["terms"]:
            lines.append(f"    {t['kind']:<10} {t['name']:<28} coefficient {t['coefficient']:+.6g}")
        if d.get("source") is None and d.get("reason"):
            lines.append(f"  no candidate: {d['reason']}")
        refits = d.get("refits") if isinstance(d.get("refits"), list) else []
        if refits and d is next(e for e in entries if e.get("closure") == d.get("closure")):
            lines.append(f"  refitted as candidates (the rollout decides, {len(refits)} fits):")
            for k, r in enumerate(refits, 1):
                if not isinstance(r, dict):
                    continue
                what = "; ".join(str(x) for x in r.get("expressions") or ())
                first = " (the regression's choice)" if k == 1 else ""
                if r.get("failed"):
                    lines.append(f"    fit {k}{first}: {what}: {r['failed']}")
                    continue
                score = r.get("selection_log10_nmse")
                score = f"{score:.3f}" if isinstance(score, (int, float)) else "-"
                lines.append(f"    fit {k}{first}, place {r.get('place', '-')}: {what};"
                             f" log10 nMSE {score}, {r.get('fitted_values', '-')} fitted"
                             f" values; {r.get('evidence', '')}")
    joint = entries[0].get("joint") if entries else None
    if isinstance(joint, dict):
        dropped = joint.get("dropped") if isinstance(joint.get("dropped"), list) else []
        what = (f"every closure at once, {len(dropped)} dropped"
                + (f" ({', '.join(map(str, dropped))})" if dropped else "") + ": ")
        lines.append(what + ("a candidate with no network" if isinstance(joint.get("source"),
                                                                         str)
                             else f"no candidate: {joint.get('reason')}"))
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
        if d.get("form", "state") != "state":  # a formula for a call is not a term of a state
            continue
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
