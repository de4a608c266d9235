"""Drop-a-term benchmark on ODEBench (issue #13): can a search put back a term the prior lacks?

    python benchmarks/odebench.py [--quick] [--cases s6_x0_t1,...] [--budget 12]
        [--out runs/odebench] [--json]
    python benchmarks/odebench.py --convert ../shared/data/odebench/strogatz_equations.py

ODEBench (d'Ascoli et al., "ODEFormer", ICLR 2024; MIT licence, notice kept in
``benchmarks/data/odebench.json``) lists 63 systems with constants and two initial
conditions. For every equation whose right-hand side, as sympy reads it (no expansion), is a
sum of two or more terms, and for every one of those terms, one *case*: the prior is the
true model without that term, its remaining constants bounded parameters started away from
the truth; a closure site on every state; no hypotheses. Data are simulated here (LSODA,
rtol 1e-5, atol 1e-7, t in [0, 10], 100 points): training on the first initial condition
plus four nearby starts, validation on two more nearby starts, test on the second initial
condition, 1% Gaussian noise relative to each state's standard deviation on every
trajectory. Four methods per case, side by side: ``prior`` (the prior fitted), ``aphynity``
(the prior plus a closure on every state, ``closure_norm``), ``pysindy`` (from scratch on
the training trajectories) and ``hyarch`` (an offline search; its top-ranked candidate).
R^2 is on the second initial condition against the noise-free trajectory. Finished cases
are read back from ``--out``, not redone. docs/odebench.md has the protocol and a table.
"""

from __future__ import annotations

import argparse
import ast
import json
import math
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
DATA = HERE / "data" / "odebench.json"
METHODS = ("hyarch", "prior", "aphynity", "pysindy")
N_POINTS, T_END = 100, 10.0
N_TRAIN_NEAR, N_VAL_NEAR = 4, 2  # nearby starts beside the first initial condition
NEAR = 0.1  # nearby: each coordinate times exp(0.1 z), z ~ N(0, 1); a zero one plus 0.1 z
NOISE = 0.01
INIT_FACTOR = 1.3  # the prior's constants start at truth x 1.3 (even index) or / 1.3 (odd)
# a small fixed subset over 1-D and 2-D systems: two polynomial terms, a constant, a
# saturating (Holling) term, a linear damping term and a linear loss in a 2-D epidemic
QUICK_CASES = ("s6_x0_t1", "s17_x0_t0", "s18_x0_t1", "s25_x1_t1", "s31_x1_t0")
QUICK_BUDGET = 6
# each scored rollout starts where the model best matches a trajectory's first CONDITION
# samples (a tenth of them), which are then not scored: the first observation is as noisy as
# the rest (space.yaml's splits.condition; hyarch.core.starts). The test R^2 is still
# computed from the observed start, as ODEBench scores it and as PySINDy is run.
CONDITION = 10
# short training for --quick, the same for every method (hyarch.spaces.baselines.QUICK)
QUICK_TRAINING = {"stage_iters": 60, "final_iters": 200, "patience": 60, "restarts": 2,
                  "max_seconds": 120.0}
CITATION = ("d'Ascoli, Becker, Mathis, Schwaller, Kilbertus: ODEFormer: Symbolic Regression"
            " of Dynamical Systems with Transformers, ICLR 2024. ODEBench, file"
            " odeformer/odebench/strogatz_equations.py of https://github.com/sdascoli/odeformer")


# -- the systems and the cases ------------------------------------------------------------


def convert(src: Path, licence: Path, dest: Path = DATA) -> int:
    """ODEBench's ``strogatz_equations.py`` (a Python list, read as data with ``ast``, not
    run) into the small JSON file the benchmark reads, with the citation and licence."""
    tree = ast.parse(src.read_text())
    node = next(n.value for n in tree.body if isinstance(n, ast.Assign)
                and any(getattr(t, "id", None) == "equations" for t in n.targets))
    keep = ("id", "eq", "dim", "consts", "init", "init_constraints", "const_constraints",
            "eq_description", "const_description", "var_description", "source")
    systems = [{k: e[k] for k in keep if k in e} for e in ast.literal_eval(_fold(node))]
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(json.dumps({"citation": CITATION, "licence": licence.read_text().strip(),
                                "systems": systems}, indent=1) + "\n")
    return len(systems)


def _fold(node):
    """Numbers written as arithmetic (``8. / 3.``) folded into numbers, so that
    ``ast.literal_eval`` reads the list as data."""
    import operator

    ops = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
           ast.Div: operator.truediv}

    class Fold(ast.NodeTransformer):
        def visit_BinOp(self, n):
            self.generic_visit(n)
            if (type(n.op) in ops and isinstance(n.left, ast.Constant)
                    and isinstance(n.right, ast.Constant)):
                return ast.Constant(ops[type(n.op)](n.left.value, n.right.value))
            return n

    return Fold().visit(node)


def load_systems(path: Path = DATA) -> list[dict]:
    return json.loads(path.read_text())["systems"]


def _symbols(dim: int):
    import sympy as sp

    return [sp.Symbol(f"x_{i}") for i in range(dim)]


def rhs(system: dict) -> list:
    """Each state's right-hand side as sympy reads it (``^`` is a power; not expanded)."""
    import sympy as sp

    names = {f"x_{i}": s for i, s in enumerate(_symbols(system["dim"]))}
    names |= {f"c_{i}": sp.Symbol(f"c_{i}") for i in range(len(system["consts"][0]))}
    return [sp.sympify(part.replace("^", "**"), locals=names) for part in system["eq"].split("|")]


@dataclass(frozen=True)
class Case:
    system: dict
    state: int  # the equation the term is removed from
    term: int  # its index in sympy's ordering of that equation's top-level sum

    @property
    def name(self) -> str:
        return f"s{self.system['id']}_x{self.state}_t{self.term}"

    @property
    def truth(self) -> dict[str, float]:
        return {f"c_{i}": float(v) for i, v in enumerate(self.system["consts"][0])}

    def equations(self) -> list:
        return rhs(self.system)

    def removed(self):
        """The removed term, constants as symbols."""
        return self.equations()[self.state].args[self.term]

    def prior_equations(self) -> list:
        eqs = self.equations()
        eqs[self.state] = eqs[self.state] - self.removed()
        return eqs

    def prior_constants(self) -> list[str]:
        names = set()
        for e in self.prior_equations():
            names |= {s.name for s in e.free_symbols if s.name.startswith("c_")}
        return sorted(names, key=lambda n: int(n[2:]))


def cases(systems: list[dict]) -> list[Case]:
    import sympy as sp

    out = []
    for system in systems:
        for i, e in enumerate(rhs(system)):
            if isinstance(e, sp.Add):
                out += [Case(system, i, j) for j in range(len(e.args))]
    return out


# -- data -----------------------------------------------------------------------------------


def simulate(system: dict, start, t: np.ndarray, equations: list | None = None
             ) -> np.ndarray | None:
    """The true trajectory (or that of ``equations``) from ``start`` on ``t`` (ODEBench's
    LSODA settings); None when the integration fails or leaves the finite numbers."""
    import sympy as sp
    from scipy.integrate import solve_ivp

    xs = _symbols(system["dim"])
    consts = {sp.Symbol(f"c_{i}"): v for i, v in enumerate(system["consts"][0])}
    f = sp.lambdify([xs], [e.subs(consts) for e in (equations or rhs(system))], "numpy")

    def fun(_t, x):
        return np.asarray(f(x), dtype=float) * np.ones(len(xs))

    with np.errstate(all="ignore"):
        sol = solve_ivp(fun, (0.0, float(t[-1])), np.asarray(start, float), method="LSODA",
                        t_eval=t, rtol=1e-5, atol=1e-7)
    if not sol.success or sol.y.shape[1] != len(t) or not np.isfinite(sol.y).all():
        return None
    return sol.y.T


def nearby(start, rng) -> np.ndarray:
    start = np.asarray(start, float)
    z = rng.standard_normal(start.shape)
    return np.where(start != 0, start * np.exp(NEAR * z), NEAR * z)


def trajectories(system: dict, seed: int = 0) -> dict[str, list[np.ndarray]]:
    """Noise-free trajectories by split: train (first initial condition first, then nearby
    starts), val (nearby starts), test (the second initial condition). A nearby start
    whose integration fails is drawn again (at most 20 draws per start)."""
    t = np.linspace(0.0, T_END, N_POINTS)
    rng = np.random.default_rng(seed)
    first, second = system["init"][0], system["init"][1]
    out = {"train": [simulate(system, first, t)], "val": [], "test": [simulate(system, second, t)]}
    for split, n in (("train", N_TRAIN_NEAR), ("val", N_VAL_NEAR)):
        for _ in range(n):
            for _draw in range(20):
                x = simulate(system, nearby(first, rng), t)
                if x is not None:
                    out[split].append(x)
                    break
    return out


def noisy(x: np.ndarray, rng) -> np.ndarray:
    return x + NOISE * x.std(axis=0, keepdims=True) * rng.standard_normal(x.shape)


# -- the space one case is ------------------------------------------------------------------


def _code(expr) -> str:
    """A sympy expression as candidate code (``s.x_0``, ``self.c_1``, ``torch.sin``)."""
    import sympy as sp

    expr = expr.replace(sp.cot, lambda a: 1 / sp.tan(a))
    text = sp.pycode(expr, fully_qualified_modules=False)
    text = re.sub(r"\bx_(\d+)\b", r"s.x_\1", text)
    text = re.sub(r"\bc_(\d+)\b", r"self.c_\1", text)
    text = re.sub(r"\b(sin|cos|tan|exp|log|sqrt|tanh)\(", r"torch.\1(", text)
    return text.replace("abs(", "torch.abs(")


def initial_guess(name: str, value: float) -> tuple[float, tuple[float, float]]:
    """The prior's start for a constant (not the truth) and its bounds, a decade each side
    of the start, sign kept."""
    init = value * INIT_FACTOR if int(name[2:]) % 2 == 0 else value / INIT_FACTOR
    init = float(f"{init:.6g}")
    return init, _decade(init)


def _decade(value: float) -> tuple[float, float]:
    """Bounds a decade each side of ``value``, sign kept."""
    lo, hi = sorted((float(f"{value / 10:.6g}"), float(f"{value * 10:.6g}")))
    return lo, hi


def _model_source(case: Case, eqs: list, consts: dict[str, tuple[float, tuple]],
                  doc: str) -> str:
    lines = ["import torch", "", "from hyarch import HybridModel", "", "",
             "class Model(HybridModel):",
             f'    """ODEBench system {case.system["id"]} {doc}."""', "",
             "    def setup(self):"]
    for name, (init, (lo, hi)) in consts.items():
        lines.append(f"        self.{name} = self.parameter(init={init!r}, bounds=({lo!r}, {hi!r}))")
    if not consts:
        lines.append("        pass")
    body = ", ".join(f'"x_{i}": {_code(e)}' if e.free_symbols & set(_symbols(len(eqs)))
                     else f'"x_{i}": torch.zeros_like(s.x_{i}) + {_code(e)}'
                     for i, e in enumerate(eqs))
    lines += ["", "    def derivatives(self, t, s, u):", f"        return {{{body}}}", ""]
    return "\n".join(lines)


def prior_source(case: Case) -> str:
    return _model_source(case, case.prior_equations(),
                         {n: initial_guess(n, case.truth[n]) for n in case.prior_constants()},
                         "with one term left out")


def truth_source(case: Case) -> str:
    """The true equations as a candidate, every constant a parameter starting at its true
    value (bounds a decade each side): the reference for what the data can tell."""
    names = sorted(case.truth, key=lambda n: int(n[2:]))
    consts = {n: (float(case.truth[n]), _decade(float(case.truth[n]))) for n in names}
    return _model_source(case, case.equations(), consts, "as it is (the truth)")


def write_space(case: Case, folder: Path, *, budget: int, training: dict | None = None,
                condition: int = CONDITION) -> Path:
    """The case's search space in ``folder``: data.csv, clean.npz (the noise-free test
    trajectory, for R^2), prior.py and space.yaml."""
    import yaml

    folder.mkdir(parents=True, exist_ok=True)
    dim = case.system["dim"]
    states = [f"x_{i}" for i in range(dim)]
    trajs = trajectories(case.system)
    rng = np.random.default_rng(1)
    t = np.linspace(0.0, T_END, N_POINTS)
    rows = ["traj,split,t," + ",".join(states)]
    for split, xs in trajs.items():
        for k, x in enumerate(xs):
            y = noisy(x, rng)
            rows += [f"{split}{k},{split},{float(ti)!r}," + ",".join(repr(float(v)) for v in yi)
                     for ti, yi in zip(t, y)]
    (folder / "data.csv").write_text("\n".join(rows) + "\n")
    np.savez(folder / "clean.npz", test=trajs["test"][0], t=t,
             **{f"train{k}": x for k, x in enumerate(trajs["train"])})
    (folder / "prior.py").write_text(prior_source(case))
    spec = {
        "name": f"odebench_{case.name}",
        "description": (f"ODEBench system {case.system['id']}: {case.system['eq_description']}."
                        f" {case.system.get('var_description', '')}. The prior lacks one term."),
        "states": {s: {"description": s} for s in states},
        "data": {"csv": {"path": "data.csv", "time": "t", "trajectory": "traj",
                         "split": "split"}},
        "splits": {"by": "column", **({"condition": condition} if condition else {})},
        "prior": "prior.py",
        "truth": case.truth,
        "closures": [{"state": s, "inputs": states, "hidden": [[16, 16]]} for s in states],
        "budget": {"candidates": budget},
    }
    if training:
        spec["training"] = training
    path = folder / "space.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


# -- scores ---------------------------------------------------------------------------------


def r2(pred, clean: np.ndarray) -> float | None:
    """1 - SSE / SST over every state and time, SST about each state's mean; None when the
    prediction is missing or not finite."""
    if pred is None:
        return None
    pred = np.asarray(pred, float).reshape(clean.shape)
    if not np.isfinite(pred).all():
        return None
    sst = float(((clean - clean.mean(axis=0)) ** 2).sum())
    return 1.0 - float(((pred - clean) ** 2).sum()) / max(sst, 1e-300)


_FUNCS = {"sin": "sin", "cos": "cos", "tan": "tan", "exp": "exp", "log": "log",
          "sqrt": "sqrt", "tanh": "tanh", "abs": "Abs", "sigmoid": "sigmoid"}


class _ToSympy(ast.NodeTransformer):
    """Candidate code to sympy text: ``self.p`` and ``s.x`` to names, ``torch.f`` to f."""

    def visit_Attribute(self, node):
        if isinstance(node.value, ast.Name) and node.value.id in ("self", "s"):
            return ast.Name(node.attr, ast.Load())
        if isinstance(node.value, ast.Name) and node.value.id in ("torch", "math", "np"):
            if node.attr == "pi":
                return ast.Name("pi", ast.Load())
            if node.attr in _FUNCS:
                return ast.Name(_FUNCS[node.attr], ast.Load())
        raise ValueError(f"cannot read {ast.unparse(node)}")

    def visit_Call(self, node):
        self.generic_visit(node)
        if isinstance(node.func, ast.Name) and node.func.id == "clamp":
            raise ValueError("clamp")
        if node.keywords:
            raise ValueError(f"keyword arguments in {ast.unparse(node)}")
        return node


def added_terms(source: str, parameters: dict[str, float],
                prior: str | None = None) -> dict[str, object] | None:
    """What a hyarch-rendered candidate (``class Model(Prior)`` adding terms to
    ``super().derivatives``) adds to each state, as sympy with its fitted constants; the
    code is parsed, never run. The prior file itself adds nothing. None when the file is
    not of that form or names something this reader does not know."""
    import sympy as sp

    tree = ast.parse(source)
    model = next((n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Model"), None)
    if model is None:
        return None
    if not any(isinstance(b, ast.Name) and b.id == "Prior" for b in model.bases):
        return {} if prior is not None and source.strip() == prior.strip() else None
    fn = next((n for n in model.body if isinstance(n, ast.FunctionDef)
               and n.name == "derivatives"), None)
    if fn is None:
        return {}
    out: dict[str, object] = {}
    for stmt in fn.body:
        if isinstance(stmt, ast.Return) or (isinstance(stmt, ast.Assign)
                                            and "super()" in ast.unparse(stmt.value)):
            continue
        if not (isinstance(stmt, ast.Assign) and len(stmt.targets) == 1
                and isinstance(stmt.targets[0], ast.Subscript)):
            return None
        key = ast.literal_eval(stmt.targets[0].slice)
        parts, node = [], stmt.value
        while isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
            parts.append(node.right)
            node = node.left
        if ast.unparse(node) != ast.unparse(stmt.targets[0]):
            return None
        total = sp.Integer(0)
        for p in parts:
            try:
                text = ast.unparse(_ToSympy().visit(p))
                local = {n: sp.Symbol(n) for n in re.findall(r"\b[A-Za-z_]\w*\b", text)
                         if n not in _FUNCS.values() and n != "pi"}
                local |= {"sigmoid": lambda z: 1 / (1 + sp.exp(-z)), "pi": sp.pi}
                e = sp.sympify(text, locals=local)
            except (ValueError, SyntaxError, sp.SympifyError, TypeError):
                return None
            names = {s for s in e.free_symbols if not re.fullmatch(r"x_\d+", s.name)}
            if any(s.name not in parameters for s in names):
                return None
            total += e.subs({s: sp.Float(parameters[s.name]) for s in names})
        out[key] = total
    return out


def term_recovered(added: dict | None, case: Case) -> bool | None:
    """The winner adds, on the case's state only, the removed term: the ratio to the true
    term simplifies to a number within 10% of 1, or both are polynomials of the states with
    the same monomials, each coefficient within 10% (as PySINDy is judged), or the term's
    form matches with each of its constants within 10% of the truth. None: the addition
    cannot be read."""
    import sympy as sp

    if added is None:
        return None
    key = f"x_{case.state}"
    for k, e in added.items():
        if k != key and sp.simplify(e) != 0:
            return False
    got = added.get(key)
    if got is None or sp.simplify(got) == 0:
        return False
    sym = case.removed()
    true = sym.subs({sp.Symbol(k): v for k, v in case.truth.items()})
    ratio = sp.simplify(got / true)
    if ratio.is_number and ratio.is_real:
        return abs(float(ratio) - 1.0) <= 0.1
    xs = _symbols(case.system["dim"])
    # polynomials, expanded: the same monomials, each coefficient within 10% (PySINDy's
    # rule below; 0.494 - 0.495 x is c (1 - x) with c = 0.495 fitted as two coefficients)
    got_x, true_x = sp.expand(got), sp.expand(true)
    if got_x.is_polynomial(*xs) and true_x.is_polynomial(*xs):
        g, t = sp.Poly(got_x, *xs).as_dict(), sp.Poly(true_x, *xs).as_dict()
        if set(g) == set(t):
            return all(abs(float(g[m]) / float(t[m]) - 1.0) <= 0.1 for m in t)
    consts = [s for s in sym.free_symbols if s.name.startswith("c_")]
    if consts:
        wild = {c: sp.Wild(c.name, exclude=xs) for c in consts}
        for form in (got, sp.simplify(got), sp.together(got)):
            m = form.match(sym.subs(wild))
            if m and all(m.get(w) is not None and m[w].is_number for w in wild.values()):
                return all(abs(float(m[wild[c]]) / case.truth[c.name] - 1.0) <= 0.1
                           for c in consts)
    return False


# -- the four methods -----------------------------------------------------------------------


def _from_observed_start(predictions: dict) -> np.ndarray | None:
    """The test prediction from the observed (noisy) start, as ODEBench scores: with
    ``splits.condition`` the child also returns it (``population``) beside the one from the
    estimated start (``full``, which ranks)."""
    got = predictions.get("test.population")  # predictions.npz spells it test__population
    return got if got is not None else predictions.get("test.full")


def run_baseline(space, label: str, clean: np.ndarray, training: dict) -> dict:
    from hyarch.evaluate import evaluate_source
    from hyarch.spaces.baselines import baselines, training_overrides

    b = next(b for b in baselines(space) if b.label == label)
    t0 = time.perf_counter()
    out = evaluate_source(space, b.source, filename=f"<{label}>",
                          overrides={**training_overrides(space, label), **training})
    test = _from_observed_start(out.predictions)
    res = out.result
    return {"status": res["status"], "r2": r2(None if test is None else test[0], clean),
            "recovered": False, "param_rel_error": res.get("param_rel_error") or {},
            "neural": bool(res.get("n_neural_params")),
            "seconds": round(time.perf_counter() - t0, 1)}


def run_pysindy(case: Case, data: Path, clean: np.ndarray) -> dict:
    """PySINDy from scratch on the noisy training trajectories: polynomials to degree 3,
    STLSQ (threshold 0.05), smoothed finite differences; the test start integrated."""
    import pysindy as ps
    import sympy as sp

    t0 = time.perf_counter()
    dim = case.system["dim"]
    xs = _load_csv(data, "train", dim)
    t = np.linspace(0.0, T_END, N_POINTS)
    model = ps.SINDy(feature_library=ps.PolynomialLibrary(degree=3),
                     optimizer=ps.STLSQ(threshold=0.05),
                     differentiation_method=ps.SmoothedFiniteDifference())
    names = [f"x_{i}" for i in range(dim)]
    model.fit(xs, t=t, feature_names=names)
    powers, coef = model.feature_library.powers_, model.coefficients()
    start = _load_csv(data, "test", dim)[0][0]  # the (noisy) observed start, as the others
    try:
        with np.errstate(all="ignore"):
            pred = model.simulate(start, t, integrator="solve_ivp",
                                  integrator_kws={"method": "LSODA", "rtol": 1e-5,
                                                  "atol": 1e-7})
        score = r2(pred if pred.shape == clean.shape else None, clean)
    except Exception:  # noqa: BLE001 - a blown-up fit is a failed prediction, not a crash
        score = None
    # the removed term, expanded, as monomials of the states: all present within 10%
    true = sp.expand(case.removed().subs({sp.Symbol(k): v for k, v in case.truth.items()}))
    sym = _symbols(dim)
    recovered = False
    if true.is_polynomial(*sym) and sp.Poly(true, *sym).total_degree() <= 3:
        rows = {tuple(int(p) for p in r): j for j, r in enumerate(powers)}
        recovered = all(
            abs(coef[case.state, rows[m]] / float(c) - 1.0) <= 0.1
            for m, c in sp.Poly(true, *sym).terms())
    return {"status": "ok" if score is not None else "failed", "r2": score,
            "recovered": recovered, "param_rel_error": {}, "neural": False,
            "seconds": round(time.perf_counter() - t0, 1)}


def _load_csv(path: Path, split: str, dim: int) -> list[np.ndarray]:
    import csv

    by: dict[str, list[list[float]]] = {}
    with path.open() as f:
        for row in csv.DictReader(f):
            if row["split"] == split:
                by.setdefault(row["traj"], []).append([float(row[f"x_{i}"]) for i in range(dim)])
    return [np.asarray(v) for v in by.values()]


def run_hyarch(space_path: Path, run_dir: Path, budget: int, clean: np.ndarray,
               case: Case, training: dict) -> dict:
    import hyarch
    from hyarch.ranking.leaderboard import leaderboard
    from hyarch.runs import load_run

    # a run found on disk (a search stopped part way: the machine went down) is resumed,
    # its finished candidates kept; the time is every session's of its search
    hyarch.search(space_path, run=run_dir, budget=budget, workers=1, seed=0,
                  overrides=training, resume=(run_dir / "run.yaml").is_file())
    run = load_run(run_dir)
    seconds = round(run.elapsed(), 1)
    ranked = [r for r in leaderboard(run) if r.ranked]
    if not ranked:
        return {"status": "failed", "r2": None, "recovered": False, "param_rel_error": {},
                "neural": None, "seconds": seconds, "winner": None}
    w = ranked[0]
    folder = run_dir / "candidates" / w.id
    res = w.record.result or {}
    test = _from_observed_start(run.read_predictions(w.id))
    test = None if test is None else test[0]
    neural = bool(res.get("n_neural_params"))
    prior = (space_path.parent / "prior.py").read_text()
    added = None if neural else added_terms((folder / "model.py").read_text(),
                                            res.get("parameters") or {}, prior)
    return {"status": res.get("status"), "r2": r2(test, clean),
            "recovered": False if neural else term_recovered(added, case),
            "param_rel_error": res.get("param_rel_error") or {}, "neural": neural,
            "seconds": seconds, "winner": w.id, "proposer": w.record.proposer,
            "added": None if added is None else {k: str(v) for k, v in added.items()},
            "candidates": len(ranked)}


def run_case(case: Case, out: Path, budget: int, quick: bool,
             condition: int = CONDITION) -> dict:
    """All four methods on one case; the result is kept in ``out/<case>/result.json`` and
    read back next time."""
    from hyarch.spaces.loader import load_space

    folder = out / case.name
    done = folder / "result.json"
    if done.is_file():  # read back, judged again by today's rule (the added terms are kept)
        row = json.loads(done.read_text())
        h = row.get("hyarch") or {}
        if isinstance(h.get("added"), dict) and not h.get("neural"):
            import sympy as sp

            h["recovered"] = term_recovered({k: sp.sympify(v) for k, v in h["added"].items()},
                                            case)
        return row
    training = dict(QUICK_TRAINING) if quick else {}
    space_path = write_space(case, folder / "space", budget=budget, condition=condition)
    clean = np.load(folder / "space" / "clean.npz")["test"]
    space = load_space(space_path)
    row = {"case": case.name, "system": case.system["id"], "dim": case.system["dim"],
           "removed": f"dx_{case.state}/dt: {case.removed()}", "budget": budget,
           "quick": quick, "condition": condition}
    row["prior"] = run_baseline(space, "prior", clean, training)
    if row["prior"]["status"] != "ok" and not case.prior_constants():
        # hyarch will not train a model with nothing to fit; a prior without constants
        # needs no fit: integrate it here from the observed second start
        start = _load_csv(folder / "space" / "data.csv", "test", case.system["dim"])[0][0]
        t = np.linspace(0.0, T_END, N_POINTS)
        pred = simulate(case.system, start, t, case.prior_equations())
        row["prior"] |= {"status": "ok (no constants: integrated, not fitted)",
                         "r2": r2(pred, clean)}
    row["aphynity"] = run_baseline(space, "aphynity", clean, training)
    row["pysindy"] = run_pysindy(case, folder / "space" / "data.csv", clean)
    row["hyarch"] = run_hyarch(space_path, folder / "run", budget, clean, case, training)
    done.write_text(json.dumps(row, indent=1, default=str) + "\n")
    return row


# -- what the data can tell -----------------------------------------------------------------


def run_oracle(case: Case, folder: Path, training: dict) -> dict:
    """The true equations (constants fitted from the truth) and the prior, each fitted and
    scored on the case's validation split as any candidate is, beside hyarch's winner; the
    ranking's rule (one standard error of the validation folds) compares them. Where the
    prior shares the truth's tier, the data cannot tell that the term is missing: no
    method that selects on these data can be expected to put it back. Where hyarch's winner
    shares it (or beats it), the winner fits as well as the truth. Validation data only;
    the test split is scored for the truth's R^2, nothing else."""
    from hyarch.evaluate import evaluate_source
    from hyarch.ranking.leaderboard import leaderboard
    from hyarch.ranking.rule import complexity_of, log_errors, tiers
    from hyarch.runs import load_run
    from hyarch.spaces.loader import load_space

    space = load_space(folder / "space" / "space.yaml")
    clean = np.load(folder / "space" / "clean.npz")["test"]
    errors, sizes, out = {}, {}, {}
    for label, src in (("truth", truth_source(case)), ("prior", prior_source(case))):
        ev = evaluate_source(space, src, filename=f"<{label}>", overrides=training)
        errors[label], sizes[label] = log_errors(ev.result), complexity_of(ev.result)
        if label == "truth":
            test = _from_observed_start(ev.predictions)
            out["truth_r2"] = r2(None if test is None else test[0], clean)
            out["truth_parameters"] = ev.result.get("parameters") or {}
    ranked = ([x for x in leaderboard(load_run(folder / "run")) if x.ranked]
              if (folder / "run" / "run.yaml").is_file() else [])  # restored: no search kept
    if ranked:
        errors["hyarch"] = log_errors(ranked[0].record.result)
        sizes["hyarch"] = complexity_of(ranked[0].record.result)
    live = {k: v for k, v in errors.items() if v is not None}
    out["val_score"] = {k: sum(v) / len(v) for k, v in live.items()}

    def tier_of(a: str, b: str) -> tuple[int, int] | None:
        if a not in live or b not in live:
            return None
        t = {k: ev.tier for k, ev in tiers({a: live[a], b: live[b]},
                                           {a: sizes[a], b: sizes[b]})}
        return t[a], t[b]

    pair = tier_of("truth", "prior")
    out["identifiable"] = None if pair is None else pair[0] < pair[1]
    pair = tier_of("truth", "hyarch")
    out["hyarch_as_good_as_truth"] = None if pair is None else pair[1] <= pair[0]
    return out


def why_not(row: dict) -> str:
    """Why hyarch did not put the term back, from ``run_oracle``'s comparison."""
    h, o = row["hyarch"], row.get("oracle") or {}
    if h.get("recovered"):
        return "recovered"
    if o.get("identifiable") is False:
        return "not identifiable: the prior alone fits as well as the truth"
    if o.get("hyarch_as_good_as_truth"):
        return ("a network fits as well as the truth" if h.get("neural")
                else "another form fits as well as the truth")
    if o.get("hyarch_as_good_as_truth") is False:
        return "short of the truth: " + ("a network" if h.get("neural") else "network-free")
    return "unknown"


# -- tables ---------------------------------------------------------------------------------


def summary(rows: list[dict]) -> dict[str, dict]:
    out = {}
    for m in METHODS:
        rs = [r[m] for r in rows if m in r]
        scores = [x["r2"] for x in rs]
        known = [x["recovered"] for x in rs if x["recovered"] is not None]
        out[m] = {
            "cases": len(rs),
            "recovered_fraction": (sum(map(bool, known)) / len(rs)) if rs else None,
            "recovered_unknown": sum(1 for x in rs if x["recovered"] is None),
            "accuracy_r2_0.9": (sum(1 for s in scores if s is not None and s >= 0.9) / len(rs)
                                if rs else None),
            "accuracy_r2_0.99": (sum(1 for s in scores if s is not None and s >= 0.99)
                                 / len(rs) if rs else None),
            "median_r2": (float(np.median([s if s is not None else -np.inf for s in scores]))
                          if rs else None),
            "seconds": round(sum(x["seconds"] for x in rs), 1),
        }
    return out


def _fmt_r2(v) -> str:
    if v is None or v == -np.inf:
        return "fail"
    return f"{v:.4f}" if v > -10 else "<-10"


def _fmt_rec(v) -> str:
    return {True: "yes", False: "no", None: "unknown"}[v]


def markdown(rows: list[dict]) -> str:
    lines = ["| case | removed term | method | R^2 (IC 2) | recovered | parameter errors | s |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        for m in METHODS:
            x = r[m]
            errs = ", ".join(f"{k} {100 * v:.1f}%" for k, v in sorted(x["param_rel_error"].items())
                             if isinstance(v, (int, float)) and math.isfinite(v)) or "-"
            extra = " (network)" if x.get("neural") and m == "hyarch" else ""
            lines.append(f"| {r['case']} | `{r['removed']}` | {m}{extra} | {_fmt_r2(x['r2'])} |"
                         f" {_fmt_rec(x['recovered'])} | {errs} | {x['seconds']:.0f} |")
    lines += ["", "| method | cases | recovered | R^2 >= 0.9 | R^2 >= 0.99 | median R^2 | s |",
              "|---|---|---|---|---|---|---|"]
    for m, s in summary(rows).items():
        lines.append(f"| {m} | {s['cases']} | {s['recovered_fraction']:.2f} |"
                     f" {s['accuracy_r2_0.9']:.2f} | {s['accuracy_r2_0.99']:.2f} |"
                     f" {_fmt_r2(s['median_r2'])} | {s['seconds']:.0f} |")
    return "\n".join(lines)


def carry(export: str | None, restore: str | None, names: list[str], out: Path) -> int:
    """``--export``: the finished cases' ``result.json`` as lines of ``export``.
    ``--restore``: each line of ``restore`` back as ``out/<case>/result.json`` where there
    is none (a long table outlives a machine: the searches' folders are not kept, the
    results are)."""
    if export:
        rows = [(out / n / "result.json").read_text() for n in names
                if (out / n / "result.json").is_file()]
        Path(export).write_text("".join(json.dumps(json.loads(r)) + "\n" for r in rows))
        print(f"{len(rows)} finished case(s) written to {export}")
    if restore:
        put = 0
        for line in Path(restore).read_text().splitlines():
            if not line.strip():
                continue
            row = json.loads(line)
            done = out / row["case"] / "result.json"
            if not done.is_file():
                done.parent.mkdir(parents=True, exist_ok=True)
                done.write_text(json.dumps(row, indent=1) + "\n")
                put += 1
        print(f"{put} case(s) put back under {out}")
    return 0


def oracle_pass(named: list[Case], out: Path, quick: bool) -> int:
    rows = []
    for case in named:
        done = out / case.name / "result.json"
        if not done.is_file():
            continue
        row = json.loads(done.read_text())
        if "oracle" not in row:
            t0 = time.perf_counter()
            row["oracle"] = run_oracle(case, out / case.name,
                                       dict(QUICK_TRAINING) if quick else {})
            done.write_text(json.dumps(row, indent=1, default=str) + "\n")
            print(f"{case.name}: {why_not(row)} ({time.perf_counter() - t0:.0f} s)",
                  file=sys.stderr, flush=True)
        rows.append(run_case(case, out, 0, quick))  # read back, judged by today's rule
        rows[-1]["oracle"] = row["oracle"]
    counts: dict[str, int] = {}
    lines = ["| case | removed term | hyarch R^2 | truth R^2 | why |", "|---|---|---|---|---|"]
    for row in rows:
        reason = why_not(row)
        counts[reason] = counts.get(reason, 0) + 1
        lines.append(f"| {row['case']} | `{row['removed']}` | {_fmt_r2(row['hyarch']['r2'])} |"
                     f" {_fmt_r2(row['oracle'].get('truth_r2'))} | {reason} |")
    lines += ["", "| hyarch, by case | cases |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in sorted(counts.items(), key=lambda kv: -kv[1])]
    print("\n".join(lines))
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true",
                    help=f"the fixed subset {', '.join(QUICK_CASES)} with budget"
                         f" {QUICK_BUDGET} and short training")
    ap.add_argument("--cases", help="comma-separated case names (s<id>_x<state>_t<term>)")
    ap.add_argument("--budget", type=int, help="candidates per search (default 24, --quick 6)")
    ap.add_argument("--out", default="runs/odebench")
    ap.add_argument("--condition", type=int, default=CONDITION,
                    help="samples each scored rollout's start is fitted to (splits.condition;"
                         f" default {CONDITION}; 0: start at the first observation)")
    ap.add_argument("--list", action="store_true", help="list the cases and stop")
    ap.add_argument("--export", metavar="JSONL",
                    help="write the finished cases' results, one JSON object a line, and stop")
    ap.add_argument("--restore", metavar="JSONL",
                    help="put results written by --export back under --out (a case already"
                         " there is kept), so that a run goes on where they left off, and stop")
    ap.add_argument("--oracle", action="store_true",
                    help="for the finished cases named: fit the true equations and the prior"
                         " on validation beside hyarch's winner, and say why each term hyarch"
                         " did not put back was missed (kept in result.json)")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--convert", metavar="STRAGATZ_PY",
                    help="write benchmarks/data/odebench.json from ODEBench's file and stop")
    args = ap.parse_args(argv)
    if args.convert:
        src = Path(args.convert)
        n = convert(src, src.parent / "LICENSE.txt")
        print(f"{DATA}: {n} systems")
        return 0
    every = cases(load_systems())
    if args.list:
        for c in every:
            print(f"{c.name:<14} dx_{c.state}/dt loses {c.removed()}")
        print(f"{len(every)} cases")
        return 0
    names = (args.cases.split(",") if args.cases else QUICK_CASES if args.quick
             else [c.name for c in every])
    by_name = {c.name: c for c in every}
    unknown = [n for n in names if n not in by_name]
    if unknown:
        print(f"odebench: unknown case(s) {unknown}; see --list", file=sys.stderr)
        return 2
    budget = args.budget or (QUICK_BUDGET if args.quick else 24)
    out = Path(args.out) / ("quick" if args.quick else "full")
    if args.export or args.restore:
        return carry(args.export, args.restore, names, out)
    if args.oracle:
        return oracle_pass([by_name[n] for n in names], out, args.quick)
    rows = []
    for n in names:
        t0 = time.perf_counter()
        row = run_case(by_name[n], out, budget, args.quick, args.condition)
        rows.append(row)
        if not args.json:
            print(f"{n}: " + ", ".join(f"{m} R^2 {_fmt_r2(row[m]['r2'])}"
                                        f" {_fmt_rec(row[m]['recovered'])}" for m in METHODS)
                  + f" ({time.perf_counter() - t0:.0f} s)", file=sys.stderr, flush=True)
    if args.json:
        print(json.dumps(summary(rows), indent=2))
    else:
        print(markdown(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
