"""Distilling each closure of a trained candidate into a sparse sum of library terms.

The target is what the closure adds to each state's derivative, G = F - F_c (F_c: the
same model with that one closure at its null value), on the states the trained model's
own rollout visits: train-split states fit the terms, validation-split states measure
R^2. Working on G rather than on the network's raw output makes any wiring distillable
(additive, multiplicative, a network inside a parameter).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch

from hyarch.core.closure import Closure
from hyarch.core.data import Trajectories
from hyarch.core.fields import Points, rollout
from hyarch.core.model import HybridModel, Named
from hyarch.distill.library import (
    Term,
    best_half_saturation,
    evaluate,
    generic_terms,
    hypothesis_terms,
    rational_terms,
    select_columns,
    substitute,
)
from hyarch.distill.sindy import sparse_fit
from hyarch.spaces.space import Space


class DistillError(Exception):
    """A candidate cannot be distilled (no closure, field states, nested closures...)."""


@dataclass(frozen=True)
class Distillation:
    """One closure's contribution to one state, as a sparse sum of terms."""

    closure: str
    state: str
    kind: str
    inputs: tuple[str, ...]
    terms: tuple[dict[str, Any], ...]
    expression: str
    r2: float | None  # on validation-split states
    r2_train: float | None
    explained: float | None  # 1 - SSE / sum(G^2) on validation states
    threshold: float
    n_train: int
    n_val: int
    in_place: bool  # the call's value is exactly G: the call itself can be replaced
    shifts: dict[str, float] = field(default_factory=dict)
    library: tuple[str, ...] = ()
    path: tuple[tuple[float, int, float], ...] = ()
    # other fits to refit as candidates, each {terms, expression, explained, r2, kind}:
    # the chosen fit less one term ("reduced"), the sparse path's Pareto front ("front",
    # sparsest first)
    alternatives: tuple[dict[str, Any], ...] = ()
    # "state": what the closure adds to ``state``'s derivative (G); "call": what the
    # network returns, as a function of its inputs, to replace each call (``state`` "")
    form: str = "state"
    named: bool = False  # (call form) the closure was called with the whole ``s``

    def to_dict(self) -> dict[str, Any]:
        return {
            "closure": self.closure, "state": self.state, "kind": self.kind,
            "inputs": list(self.inputs), "expression": self.expression,
            "terms": [dict(t) for t in self.terms], "r2": self.r2, "r2_train": self.r2_train,
            "explained": self.explained,
            # (a best-subset fit has no threshold: None, as JSON has no NaN)
            "threshold": _num(self.threshold), "n_train": self.n_train, "n_val": self.n_val,
            "in_place": self.in_place, "shifts": dict(self.shifts),
            "library": list(self.library),
            "path": [[_num(p[0]), p[1], _num(p[2])] for p in self.path],
            "alternatives": [dict(a) for a in self.alternatives],
            "form": self.form, "named": self.named,
        }


def _num(x: float) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None


def _fmt(v: float) -> str:
    return f"{v:.4g}"


def _points(model: HybridModel, data: Trajectories, method: str, substeps: int) -> Points:
    with torch.no_grad():
        pred = rollout(model, data, method=method, substeps=substeps)
    pts = Points.from_rollout(pred, data)
    ok = torch.isfinite(pts.y).all(-1)
    return Points(pts.t[ok], pts.y[ok], None if pts.u is None else pts.u[ok])


def _named(model: HybridModel, pts: Points) -> tuple[Named, Named]:
    s = Named(model.split_states(pts.y), "state")
    if pts.u is None or not model.input_names:
        u = Named({}, "input")
    else:
        u = Named({n: pts.u[..., i] for i, n in enumerate(model.input_names)}, "input")
    return s, u


def _field(model: HybridModel, pts: Points) -> torch.Tensor:
    with torch.no_grad():
        return model.vector_field(pts.t, pts.y, pts.u)


def _contribution(model: HybridModel, closure: Closure, pts: Points):
    """(G, F_c, outputs): the closure's share of F, F without it, its recorded outputs."""
    outs: list[torch.Tensor] = []
    closure.record = outs
    try:
        full = _field(model, pts)
    finally:
        closure.record = None
    closure.null = True
    try:
        without = _field(model, pts)
    finally:
        closure.null = False
    return full - without, without, outs


def _sensitivities(model: HybridModel, closure: Closure, pts: Points) -> dict[str, torch.Tensor]:
    """dF_c/dp for every physical parameter, by central differences (float64 model)."""
    values = model.physical_values()
    specs = model.parameter_specs
    out = {}
    closure.null = True
    try:
        for name, v in values.items():
            spec = specs[name]
            h = 1e-5 * max(abs(v), 1e-3 * (spec.upper - spec.lower))
            lo, hi = max(v - h, spec.lower), min(v + h, spec.upper)
            model.set_physical({name: hi})
            f_hi = _field(model, pts)
            model.set_physical({name: lo})
            f_lo = _field(model, pts)
            model.set_physical({name: v})
            out[name] = (f_hi - f_lo) / (hi - lo)
    finally:
        closure.null = False
    return out


def _columns(model, closure, pts, state_idx, terms, sens) -> np.ndarray:
    s, u = _named(model, pts)
    cols = []
    for term in terms:
        if term.kind == "shift":
            col = sens[term.parameter][:, state_idx]
        else:
            try:
                col = evaluate(term.code, s, u, pts.t)
            except Exception:
                col = torch.full_like(pts.t, math.nan)
        cols.append(col.double().cpu().numpy())
    return np.stack(cols, axis=1)


def _display(term: Term, c: float) -> str:
    if term.kind == "shift":
        return f"{_fmt(c)} * dF/d{term.parameter}"
    if term.kind == "hypothesis":
        values = {n: _fmt(float(p.get("init", 1.0))) for n, p in term.fixed.items()}
        if term.parameter is not None:
            values[term.parameter] = _fmt(c) if c >= 0 else f"({_fmt(c)})"
            return substitute(term.template or term.code, values)
        return f"{_fmt(c)} * ({substitute(term.template or term.code, values)})"
    if term.template is not None:  # a saturating form: its fixed K shown by value
        values = {n: _fmt(float(p.get("init", 1.0))) for n, p in term.fixed.items()}
        return f"{_fmt(c)} * {substitute(term.template, values)}"
    return _fmt(c) if term.code == "1" else f"{_fmt(c)} * {term.code}"


def _terms_of(terms: list[Term], coef: np.ndarray) -> tuple[tuple[dict[str, Any], ...], str]:
    """The library terms a fit keeps, as records, and the sum they make, for display."""
    chosen = [(t, float(c)) for t, c in zip(terms, coef, strict=True) if c != 0]
    records = tuple(
        {"name": t.name, "kind": t.kind, "code": t.code, "coefficient": c,
         "parameter": t.parameter, "template": t.template,
         "bounds": list(t.bounds) if t.bounds else None,
         "fixed": {n: dict(p) for n, p in t.fixed.items()},
         "lead": t.lead, "lead_factor": t.lead_factor}
        for t, c in chosen
    )
    expression = (" + ".join(_display(t, c) for t, c in chosen) or "0").replace("+ -", "- ")
    return records, expression


def _record_term(t: dict[str, Any]) -> Term:
    return Term(t["name"], t["kind"], t["code"], t.get("parameter"),
                tuple(t["bounds"]) if t.get("bounds") else None, dict(t.get("fixed") or {}),
                t.get("template"), t.get("lead"), float(t.get("lead_factor", 1.0)))


def _with_terms(p: Distillation, terms: tuple[dict[str, Any], ...]) -> Distillation:
    """``p`` made of ``terms`` (their coefficients are starting values: the refit fits
    them again), its regression scores unknown."""
    shown = [(_record_term(t), float(t["coefficient"])) for t in terms]
    expression = (" + ".join(_display(t, c) for t, c in shown) or "0").replace("+ -", "- ")
    return replace(p, terms=terms, expression=expression, explained=None, r2=None)


def less_one_term(p: Distillation) -> list[Distillation]:
    """``p`` without each of its new terms in turn (a record with two or more): is each
    needed? The coefficients left are starting values; the refit fits them again."""
    new = [i for i, t in enumerate(p.terms) if t["kind"] != "shift"]
    if len(new) < 2:
        return []
    return [_with_terms(p, tuple(t for i, t in enumerate(p.terms) if i != j)) for j in new]


def leading_order(p: Distillation) -> list[Distillation]:
    """``p`` with each of its terms that has a leading order about zero (``Term.lead``)
    replaced in turn by it: ``c sin(x)`` by ``c x``, ``c x/(K + x)`` by ``(c/K) x``. On
    states near zero the two are one column, and a network's slight curvature picks the
    nonlinear one (ODEBench: ``-1.08 sin(x_0)`` and ``-9.03 x_0/(8.83 + x_0)`` for
    ``-x_0``); refitted, the rollout can tell whether the curvature is needed. A term
    whose leading order the record already has is left as it is."""
    names = {t["name"] for t in p.terms}
    out = []
    for j, t in enumerate(p.terms):
        lead = t.get("lead")
        if not lead or lead in names:
            continue
        simple = {"name": lead, "kind": "generic", "code": lead,
                  "coefficient": float(t["coefficient"]) * float(t.get("lead_factor", 1.0)),
                  "parameter": None, "template": None, "bounds": None, "fixed": {},
                  "lead": None, "lead_factor": 1.0}
        out.append(_with_terms(p, (*p.terms[:j], simple, *p.terms[j + 1:])))
    return out


def simpler(p: Distillation) -> list[Distillation]:
    """The records one step simpler than ``p`` that backward elimination refits: ``p``
    less each of its new terms, and ``p`` with each term at its leading order."""
    return [*less_one_term(p), *leading_order(p)]


Twins = dict[str, list[tuple[Term, float]]]


def _prune(terms: list[Term], X: np.ndarray, Xv: np.ndarray, y: np.ndarray, yv: np.ndarray
           ) -> tuple[list[Term], np.ndarray, np.ndarray, np.ndarray, Twins]:
    """The library the regression sees: each saturating form at its best K, no empty or
    collinear column; and the validation points where every kept term is finite (a point
    where the rollout wandered far would make every fit's score NaN, 0 * inf). Also, by
    kept term's name, the terms dropped as collinear with it and their factor (the
    dropped column about factor times the kept one)."""
    keep = best_half_saturation(np.nan_to_num(X), y, terms)
    terms, X, Xv = [terms[j] for j in keep], X[:, keep], Xv[:, keep]
    found: dict[int, list[tuple[int, float]]] = {}
    keep = select_columns(X, terms, aliases=found)
    twins = {terms[k].name: [(terms[i], f) for i, f in found[k]] for k in found}
    terms, X, Xv = [terms[j] for j in keep], X[:, keep], Xv[:, keep]
    with np.errstate(over="ignore", invalid="ignore"):
        ok = (np.isfinite(Xv).all(axis=1) & np.isfinite(yv)
              & np.isfinite((Xv ** 2).sum(axis=1)) & np.isfinite(yv ** 2))
    return terms, X, Xv[ok], yv[ok], twins


def _alternatives(terms: list[Term], fit, twins: Twins | None = None
                  ) -> tuple[dict[str, Any], ...]:
    """The fit's other candidates for the refit: its choice with one term swapped for a
    twin the regression could not tell it from ("alias": x or sin(x) on small angles; the
    rollout over the whole horizon may tell them apart), its choice with one term
    swapped for the library term that explains about as much in its place ("swap"), its
    choice less one term ("reduced"), then the sparse path's Pareto front ("front")."""
    chosen = [(t, float(c)) for t, c in zip(terms, fit.coef, strict=True) if c != 0]
    twinned = []
    for i, (t, c) in enumerate(chosen):
        for twin, factor in (twins or {}).get(t.name, ()):
            if factor != 0 and math.isfinite(factor):
                swapped = [*chosen[:i], (twin, c / factor), *chosen[i + 1:]]
                twinned.append(_terms_of([x for x, _ in swapped],
                                         np.array([k for _, k in swapped])))
    return tuple(
        {"terms": list(td), "expression": ex, "explained": None, "r2": None, "kind": "alias"}
        for td, ex in twinned) + tuple(
        {"terms": list(td), "expression": ex, "explained": _num(f.explained_val),
         "r2": _num(f.r2_val), "kind": kind}
        for kind, fits in (("swap", fit.swapped), ("reduced", fit.reduced),
                           ("front", fit.front))
        for f in fits for td, ex in [_terms_of(terms, f.coef)])


def _closure_names(model: HybridModel) -> list[tuple[str, Closure]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, Closure)]


def distill(
    space: Space, model: HybridModel, *, degree: int = 3, nonlinear: bool = True,
    tolerance: float = 0.01, min_share: float = 1e-4, method: str | None = None,
    substeps: int | None = None,
) -> list[Distillation]:
    """Distil every closure of a trained ``model`` on ``space`` (one record per state)."""
    if not model.closures():
        raise DistillError("the candidate has no closure to distil")
    if any(model.state_shapes):
        raise DistillError("distillation supports scalar states only (this space has fields)")
    cfg = space.train_config()
    method = method or cfg.method
    substeps = substeps or cfg.substeps
    m = copy.deepcopy(model).cpu().double().eval()
    train = _double(space.train)
    val = _double(space.val)
    pts_tr = _points(m, train, method, substeps)
    pts_va = _points(m, val, method, substeps)
    hyps = dict(space.spec.hypotheses)
    results = []
    for cname, closure in _closure_names(m):
        if closure.outputs != 1:
            raise DistillError(f"closure {cname!r} has {closure.outputs} outputs; "
                               "distillation supports single-output closures")
        G, F_c, outs = _contribution(m, closure, pts_tr)
        Gv, _, _ = _contribution(m, closure, pts_va)
        sens = _sensitivities(m, closure, pts_tr)
        sens_v = _sensitivities(m, closure, pts_va)
        F = G + F_c
        for k, state in enumerate(m.state_names):
            g = G[:, k]
            scale = float(F[:, k].pow(2).mean().sqrt()) or 1.0
            if float(g.pow(2).mean().sqrt()) <= min_share * scale:
                continue
            s_tr, u_tr = _named(m, pts_tr)
            terms = [Term(f"d{state}/d{p}", "shift", "", parameter=p) for p in sens]
            terms += hypothesis_terms(hyps.get(state, []), s_tr, u_tr, pts_tr.t,
                                      known=m.physical_values())
            inputs = tuple(n for n in closure.input_names)
            terms += generic_terms(inputs, m.state_names, degree=degree, nonlinear=nonlinear)
            if nonlinear:
                s_in, u_in = _named(m, pts_tr)
                terms += rational_terms(inputs, m.state_names, s_in, u_in)
            X = _columns(m, closure, pts_tr, k, terms, sens)
            Xv = _columns(m, closure, pts_va, k, terms, sens_v)
            y, yv = g.cpu().numpy(), Gv[:, k].cpu().numpy()
            terms, X, Xv, yv, twins = _prune(terms, X, Xv, y, yv)
            preferred = np.array([t.kind != "generic" for t in terms])
            hidden = np.array([len(t.fixed) if t.kind == "generic" else 0 for t in terms])
            in_place = (
                closure.kind == "additive" and len(outs) == 1
                and bool(torch.allclose(outs[0].reshape(-1), g, rtol=1e-6, atol=1e-9 * scale))
            )
            try:
                fit = sparse_fit(X, y, Xv, yv, tolerance=tolerance, preferred=preferred,
                                 hidden=hidden,
                                 droppable=np.array([t.kind != "shift" for t in terms]))
            except ValueError:  # no fit at all: this state's record says so, the rest go on
                results.append(Distillation(
                    closure=cname, state=state, kind=closure.kind, inputs=inputs, terms=(),
                    expression="0", r2=None, r2_train=None, explained=None,
                    threshold=math.nan, n_train=len(y), n_val=len(yv), in_place=in_place,
                    library=tuple(t.name for t in terms)))
                continue
            term_dicts, expression = _terms_of(terms, fit.coef)
            alternatives = _alternatives(terms, fit, twins)
            results.append(Distillation(
                closure=cname, state=state, kind=closure.kind, inputs=inputs,
                terms=term_dicts, expression=expression,
                r2=_num(fit.r2_val), r2_train=_num(fit.r2_train),
                explained=_num(fit.explained_val), threshold=fit.threshold,
                n_train=len(y), n_val=len(yv), in_place=in_place,
                shifts={t["parameter"]: t["coefficient"] for t in term_dicts
                        if t["kind"] == "shift"},
                library=tuple(t.name for t in terms), path=fit.path,
                alternatives=alternatives,
            ))
        # where the network's output is not simply what it adds to one state (inside a
        # rate, a product, several states), it is also distilled as a formula of its inputs
        mine = [r for r in results if r.closure == cname]
        if not (len(mine) == 1 and mine[0].in_place):
            call = _call_form(m, cname, closure, pts_tr, pts_va, degree=degree,
                              nonlinear=nonlinear, tolerance=tolerance)
            if call is not None:
                results.append(call)
    return results


def _call_data(model: HybridModel, closure: Closure, pts: Points):
    """(named, {input: values}, output) at every call of ``closure`` in one evaluation of
    the vector field on ``pts``, or None when it is not called exactly once per evaluation
    (then no single formula of its arguments replaces it)."""
    seen: list[tuple] = []

    def hook(module, args):
        seen.append(args)

    outs: list[torch.Tensor] = []
    closure.record = outs
    handle = closure.register_forward_pre_hook(hook)
    try:
        _field(model, pts)
    finally:
        handle.remove()
        closure.record = None
    if len(seen) != 1 or len(outs) != 1:
        return None
    (args,) = seen
    named = len(args) == 1 and isinstance(args[0], Named)
    if named:
        args = tuple(args[0][n] for n in closure.input_names)
    if len(args) != len(closure.input_names):
        return None
    ref = outs[0]
    values = {}
    for n, a in zip(closure.input_names, args, strict=True):
        a = torch.as_tensor(a, dtype=ref.dtype)
        if a.shape != ref.shape:
            a = a.expand(ref.shape)
        values[n] = a.detach().reshape(-1)
    return named, values, ref.detach().reshape(-1)


def _call_form(model: HybridModel, cname: str, closure: Closure, pts_tr: Points,
               pts_va: Points, *, degree: int, nonlinear: bool,
               tolerance: float) -> Distillation | None:
    """What the network returns as a sparse sum of library terms of its own inputs (as
    passed at its call): the formula that replaces each call, whatever the wiring. None for
    a closure called more or less than once per evaluation, or over time."""
    if closure.time:
        return None
    tr, va = _call_data(model, closure, pts_tr), _call_data(model, closure, pts_va)
    if tr is None or va is None:
        return None
    named, x_tr, y = tr
    _, x_va, yv = va
    inputs = closure.input_names
    s_tr, s_va = Named(x_tr, "state"), Named(x_va, "state")
    none = Named({}, "input")
    terms = generic_terms(inputs, inputs, degree=degree, nonlinear=nonlinear)
    if nonlinear:
        terms += rational_terms(inputs, inputs, s_tr, none)

    def columns(sn: Named) -> np.ndarray:
        t = torch.zeros_like(sn[inputs[0]])
        cols = []
        for term in terms:
            try:
                cols.append(evaluate(term.code, sn, none, t))
            except Exception:  # noqa: BLE001 - a term that cannot be evaluated is dropped
                cols.append(torch.full_like(t, math.nan))
        return torch.stack(cols, dim=1).double().cpu().numpy()

    y, yv = y.double().cpu().numpy(), yv.double().cpu().numpy()
    terms, X, Xv, yv, twins = _prune(terms, columns(s_tr), columns(s_va), y, yv)
    if not terms or not np.isfinite(y).all() or not len(yv):
        return None
    hidden = np.array([len(t.fixed) for t in terms])
    try:
        fit = sparse_fit(X, y, Xv, yv, tolerance=tolerance, hidden=hidden)
    except ValueError:
        return None
    records, expression = _terms_of(terms, fit.coef)
    return Distillation(
        closure=cname, state="", kind=closure.kind, inputs=tuple(inputs), terms=records,
        expression=expression, r2=_num(fit.r2_val), r2_train=_num(fit.r2_train),
        explained=_num(fit.explained_val), threshold=fit.threshold, n_train=len(y),
        n_val=len(yv), in_place=False, shifts={}, library=tuple(t.name for t in terms),
        path=fit.path, alternatives=_alternatives(terms, fit, twins), form="call", named=named)


def _double(data: Trajectories) -> Trajectories:
    from dataclasses import replace

    return replace(data, t=data.t.double(), y=data.y.double(),
                   u=None if data.u is None else data.u.double())
