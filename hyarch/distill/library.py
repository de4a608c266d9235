"""The term library a closure is distilled into.

Three kinds of term, in order of preference when two are collinear on the data:

- ``shift``: the sensitivity of the mechanistic part to one of its own parameters
  (dF0/dp). A closure that learned ``c * dF0/dp`` has absorbed part of ``p``; such a term
  is folded back into ``p`` rather than added as a new one.
- ``hypothesis``: a term the space's expert suspects (``space.spec.hypotheses``), with its
  own parameter names, so a distilled ``-alpha * s.omega`` comes back as ``alpha``.
- ``generic``: monomials and simple nonlinear functions of the closure's inputs.

Every term is code in the candidate contract's own syntax (``s.omega``, ``torch.sin``), so
the same string is evaluated here and written into the new candidate file.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch

from hyarch.core.model import Named

KINDS = ("shift", "hypothesis", "generic")
_BUILTINS = {"abs": abs, "min": min, "max": max, "float": float, "pow": pow}


@dataclass(frozen=True)
class Term:
    """One library column.

    ``code`` is the feature with its scale parameter set to 1 (``parameter`` names it, or
    None when the fitted coefficient is a plain new coefficient); ``fixed`` holds a
    hypothesis's other parameters at their initial values, ``{name: {init, bounds}}``.
    """

    name: str
    kind: str
    code: str
    parameter: str | None = None
    bounds: tuple[float, float] | None = None
    fixed: dict[str, dict[str, Any]] = field(default_factory=dict)
    template: str | None = None  # the hypothesis's own expression, parameters by name
    # the library term this one is, to leading order about zero, times ``lead_factor``:
    # sin(x) and tanh(x) are x, x/(K + x) is x/K (None: a monomial, or no such term)
    lead: str | None = None
    lead_factor: float = 1.0


_IDENT = re.compile(r"(?<![\w.])([A-Za-z_]\w*)\b")


def substitute(expr: str, values: dict[str, str]) -> str:
    """Replace bare parameter names (not attributes such as ``s.alpha``) by code."""
    def repl(m: re.Match) -> str:
        return values.get(m.group(1), m.group(1))

    return _IDENT.sub(repl, expr)


def evaluate(code: str, s: Named, u: Named, t: torch.Tensor,
             params: dict[str, float] | None = None) -> torch.Tensor:
    """Evaluate term code on named states; the result has one value per point."""
    params = dict(params or {})
    scope = {"torch": torch, "math": math, "np": np, "s": s, "u": u, "t": t,
             "self": SimpleNamespace(**params), **params}
    ref = next(iter(s.items()))[1]
    out = eval(code, {"__builtins__": _BUILTINS}, scope)  # noqa: S307 - the space's own text
    out = torch.as_tensor(out, dtype=ref.dtype)
    return out.expand(ref.shape)


def _ref(name: str, states: Sequence[str]) -> str:
    return f"s.{name}" if name in states else f"u.{name}"


def monomial(refs: Sequence[str]) -> str:
    """The library's code for a product of inputs (each named once, with its power), in
    the order given: ``s.x * s.y ** 2``."""
    counts = {r: list(refs).count(r) for r in dict.fromkeys(refs)}
    return " * ".join(r if k == 1 else f"{r} ** {k}" for r, k in counts.items())


def generic_terms(inputs: Sequence[str], states: Sequence[str], *, degree: int = 3,
                  nonlinear: bool = True) -> list[Term]:
    """A constant, monomials up to ``degree`` and sin/cos/tanh/x|x| of each input."""
    refs = [_ref(n, states) for n in inputs]
    out = [Term("1", "generic", "1")]
    for d in range(1, degree + 1):
        for combo in itertools.combinations_with_replacement(range(len(refs)), d):
            code = monomial([refs[i] for i in combo])
            out.append(Term(code, "generic", code))
    if nonlinear:
        for r in refs:
            for fn in ("sin", "cos", "tanh"):
                code = f"torch.{fn}({r})"
                out.append(Term(code, "generic", code, lead=None if fn == "cos" else r))
            code = f"{r} * torch.abs({r})"
            out.append(Term(code, "generic", code))
        for a, b in itertools.permutations(refs, 2):
            code = f"{a} * torch.abs({b})"
            out.append(Term(code, "generic", code))
    return out


# half-saturation constants tried, relative to the median of the saturating input on the
# states the model visits: from an eighth to eight medians (where a saturation is
# identifiable from the data) in steps of sqrt(2); ``best_half_saturation`` keeps, per
# form, the one that explains the target best, and the refit moves it from there
HALF_SATURATION = tuple(float(f"{2 ** (k / 2):.4g}") for k in range(-6, 7))


def rational_terms(inputs: Sequence[str], states: Sequence[str], s: Named, u: Named
                   ) -> list[Term]:
    """Saturating forms of each non-negative input x, with a half-saturation constant K:
    ``x / (K + x)`` (Michaelis-Menten), ``x**2 / (K**2 + x**2)`` (Hill, n = 2) and
    ``y * x / (K + x)`` for every other input y (a Holling type II flux). K is fixed at a
    few multiples of x's median (``HALF_SATURATION``) for the sparse regression, each column
    a generic term with ``template`` and ``fixed`` K, which the distilled candidate declares
    as a bounded parameter for the refit: the rollout, not the regression, sets K."""
    out = []
    refs = {n: _ref(n, states) for n in inputs}
    order = {n: i for i, n in enumerate(inputs)}
    for x in inputs:
        vals = (s if x in states else u)[x].detach().double().reshape(-1)
        vals = vals[torch.isfinite(vals)]
        if vals.numel() < 2 or float(vals.min()) < 0 or float(vals.max()) <= 0:
            continue  # a pole inside the data, or nothing to saturate
        med = float(vals[vals > 0].median())
        k_name = f"K_{x}"
        bounds = [med / 100, med * 100]
        # each form with its leading order about x = 0 (a monomial, over K to a power)
        forms = [(f"{refs[x]} / ({k_name} + {refs[x]})", refs[x], 1),
                 (f"{refs[x]} ** 2 / ({k_name} ** 2 + {refs[x]} ** 2)",
                  monomial([refs[x], refs[x]]), 2)]
        forms += [(f"{refs[y]} * {refs[x]} / ({k_name} + {refs[x]})",
                   monomial([refs[n] for n in sorted((x, y), key=order.get)]), 1)
                  for y in inputs if y != x]
        for template, lead, power in forms:
            for f in HALF_SATURATION:
                k = float(f"{f * med:.4g}")
                code = substitute(template, {k_name: repr(k)})
                out.append(Term(code, "generic", code, template=template,
                                fixed={k_name: {"init": k, "bounds": bounds}},
                                lead=lead, lead_factor=k ** -power))
    return out


def best_half_saturation(X: np.ndarray, y: np.ndarray, terms: Sequence[Term]) -> list[int]:
    """Column indices to keep: every column, except that of each saturating form (terms
    sharing a ``template``) only the K whose column alone explains most of ``y`` (least
    squares through zero: (x.y)^2 / (x.x y.y)). K enters nonlinearly; choosing it by this
    profile, rather than offering the regression a column per K, keeps the library small
    and the K close to the one the data want."""
    best: dict[str, tuple[float, int]] = {}
    keep = []
    yy = float(y @ y) or 1.0
    for j, t in enumerate(terms):
        if t.template is None or t.kind != "generic":
            keep.append(j)
            continue
        x = X[:, j]
        xx = float(x @ x)
        share = (float(x @ y) ** 2 / (xx * yy)) if xx > 0 and np.isfinite(xx) else -1.0
        if t.template not in best or share > best[t.template][0]:
            best[t.template] = (share, j)
    return sorted(keep + [j for _, j in best.values()])


def _linear_in(expr: str, name: str, others: dict[str, float], s: Named, u: Named,
               t: torch.Tensor) -> bool:
    """Is ``expr`` proportional to parameter ``name`` (zero at 0, doubling at 2)?"""
    try:
        f0 = evaluate(expr, s, u, t, {**others, name: 0.0})
        f1 = evaluate(expr, s, u, t, {**others, name: 1.0})
        f2 = evaluate(expr, s, u, t, {**others, name: 2.0})
    except Exception:
        return False
    scale = float(f1.abs().max()) + 1e-12
    return bool(float(f0.abs().max()) <= 1e-6 * scale
                and float((f2 - 2 * f1).abs().max()) <= 1e-5 * scale)


def hypothesis_terms(hypotheses: Sequence[Any], s: Named, u: Named, t: torch.Tensor,
                     known: dict[str, float] | None = None) -> list[Term]:
    """Library terms from a state's hypotheses (``Term`` records of the space spec).

    A hypothesis linear in one of its parameters becomes a column with that parameter set
    to 1, so the fitted coefficient is the parameter's value; one that is not becomes a
    column at its initial values, scaled by a new coefficient. ``known``: the model's own
    fitted parameters, which a hypothesis may name (``beta * s.prey * ...``).
    """
    known = dict(known or {})
    out = []
    for h in hypotheses:
        params = {n: dict(p) for n, p in (h.parameters or {}).items()}
        inits = {n: float(p.get("init", 1.0)) for n, p in params.items()}
        scale = None
        for name in params:
            others = {**known, **{k: v for k, v in inits.items() if k != name}}
            if _linear_in(h.expr, name, others, s, u, t):
                scale = name
                break
        fixed = {n: p for n, p in params.items() if n != scale}
        values = {n: repr(v) for n, v in known.items()}
        values.update({n: repr(float(p.get("init", 1.0))) for n, p in fixed.items()})
        if scale is not None:
            values[scale] = "1.0"
        code = substitute(h.expr, values)
        bounds = None
        if scale is not None and "bounds" in params[scale]:
            lo, hi = params[scale]["bounds"]
            bounds = (float(lo), float(hi))
        out.append(Term(h.name, "hypothesis", code, parameter=scale, bounds=bounds,
                        fixed=fixed, template=h.expr))
    return out


# two unit columns whose dot product is this close to 1 are one term written twice
# (x and 2x): float64 rounding, not data, separates them
SAME_COLUMN = 1 - 1e-9


def select_columns(features: np.ndarray, terms: Sequence[Term], *,
                   collinear: float = 0.9995,
                   aliases: dict[int, list[tuple[int, float]]] | None = None) -> list[int]:
    """Indices of columns to keep: finite, not zero, and not collinear with a column kept
    before (so a shift beats a hypothesis, and a hypothesis beats a generic term).

    ``aliases``, if given, is filled with the generic terms that were dropped as collinear
    with a kept generic one, but are not the same column: {kept index: [(dropped index,
    factor)]}, the dropped column about ``factor`` times the kept one. On the data they
    are one column (x and sin(x) on small angles), so the regression cannot choose between
    them; a refit of each over the whole horizon can. (A shift or a hypothesis kept is the
    space's own word for that column, and an exact multiple is the same term.)"""
    keep: list[int] = []
    normed: list[np.ndarray] = []
    for j in range(len(terms)):
        col = features[:, j]
        if not np.all(np.isfinite(col)):
            continue
        norm = float(np.linalg.norm(col))
        if norm < 1e-10:
            continue
        unit = col / norm
        twin = next((i for i, v in enumerate(normed) if abs(float(unit @ v)) > collinear),
                    None)
        if twin is None:
            keep.append(j)
            normed.append(unit)
            continue
        k = keep[twin]
        if (aliases is not None and terms[j].kind == terms[k].kind == "generic"
                and abs(float(unit @ normed[twin])) < SAME_COLUMN):
            other = features[:, k]
            aliases.setdefault(k, []).append((j, float(col @ other) / float(other @ other)))
    return keep
