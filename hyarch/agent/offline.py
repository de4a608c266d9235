"""The offline proposer: a structural search over the space's hypotheses and closure sites.

An Optuna TPE sampler picks which hypothesis terms to add to the prior, which closure
sites get a network and how wide; a Jinja2 template renders the candidate file (the same
contract as an LLM's). It learns from the scores: every evaluated candidate is told to
the sampler with its objective (validation error plus a parsimony penalty), rejected
candidates are told as bad, and pinned ones seed their neighbours.
"""

from __future__ import annotations

import ast
import itertools
import math
import re
from typing import Any

import jinja2
import optuna

from hyarch.agent.base import Feedback, PoolEntry, Proposal, Proposer
from hyarch.spaces.loader import builtin_dir, declared_parameters
from hyarch.spaces.schema import Term
from hyarch.spaces.space import Space

NONE = "none"
PENALTY_TERM, PENALTY_CLOSURE, FAILED_VALUE = 0.15, 0.6, 5.0
MAX_ENUMERATED = 100_000  # structures scanned for an untried one the sampler missed


def structure_key(choices: dict[str, Any]) -> tuple:
    """A structure's identity: the parts it has on (a term added, a closure and its width).
    Parts that are off do not count, so a structure keeps its identity while the grammar
    grows (terms distilled later are off in every structure proposed before them)."""
    return tuple(sorted((k, v) for k, v in choices.items()
                        if not k.startswith("_") and v is not False and v != NONE))


def _off(key: str) -> Any:
    """A part's "not in the model" value: False for a term or an individual parameter,
    ``NONE`` for a closure."""
    return NONE if key.startswith("closure:") else False


def _fill(grammar: dict[str, list], choices: dict[str, Any]) -> dict[str, Any] | None:
    """``choices`` over every key of ``grammar`` (parts it does not name are off), or None
    when it has a part the grammar cannot express."""
    on = dict(structure_key(choices))
    if any(k not in grammar or v not in grammar[k] for k, v in on.items()):
        return None
    return {k: on.get(k, _off(k)) for k in grammar}


def shares_individuals(space: Space) -> bool:
    """Are the validation trajectories individuals that training saw (a chronological split
    of subjects)? Only then can a parameter that varies by individual predict better: a new
    individual gets the population value."""
    val = space.splits.get("val")
    return val is not None and bool(set(val.ids) & set(space.train.ids))


def _parameter_calls(tree: ast.AST):
    """(attribute name, call) for every ``self.<name> = self.parameter(...)``."""
    for node in ast.walk(tree):
        if (isinstance(node, ast.Assign) and len(node.targets) == 1
                and isinstance(t := node.targets[0], ast.Attribute)
                and isinstance(node.value, ast.Call)
                and isinstance(f := node.value.func, ast.Attribute) and f.attr == "parameter"):
            yield t.attr, node.value


def individual_parameters(source: str) -> set[str]:
    """Parameters ``source`` already declares ``individual=True``."""
    return {name for name, call in _parameter_calls(ast.parse(source))
            if any(k.arg == "individual" and isinstance(k.value, ast.Constant)
                   and k.value.value is True for k in call.keywords)}


def individualise(source: str, names: set[str]) -> str:
    """``source`` with the parameters ``names`` declared ``individual=True``."""
    if not names:
        return source
    tree = ast.parse(source)
    for name, call in list(_parameter_calls(tree)):
        if name in names:
            call.keywords = [k for k in call.keywords if k.arg != "individual"]
            call.keywords.append(ast.keyword("individual", ast.Constant(True)))
    return ast.unparse(ast.fix_missing_locations(tree))


def _hidden_label(h) -> str:
    return "x".join(str(x) for x in h)


def prior_as_base(source: str) -> str:
    """The prior's code with its ``Model`` class renamed ``Prior`` and imports dropped
    (the template imports what candidates may use)."""
    tree = ast.parse(source)
    body = []
    for node in tree.body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            continue
        if isinstance(node, ast.ClassDef) and node.name == "Model":
            node.name = "Prior"
        body.append(node)
    tree.body = body
    return ast.unparse(ast.fix_missing_locations(tree))


EMPTY_PRIOR = '''class Prior(HybridModel):
    """No prior: every derivative starts at zero."""

    def setup(self):
        pass

    def derivatives(self, t, s, u):
        return {name: torch.zeros_like(s[self.state_names[0]]) for name in self.state_names}'''


class OfflineProposer(Proposer):
    """Structural search with an Optuna sampler; no LLM needed."""

    name = "offline"

    def __init__(self, *, seed: int = 0, startup: int = 4) -> None:
        self.seed = seed
        self.startup = startup
        self._study: optuna.Study | None = None
        self._trials: dict[int, optuna.trial.Trial] = {}
        self._seen: set[tuple] = set()
        self._seeded = False
        self._extra: list[dict[str, Any]] = []  # distilled terms added to the grammar
        self._empty = False  # the last propose() found no untried structure
        self._told: set[str] = set()  # candidates told to the sampler by _learn
        env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(builtin_dir("prompts"))),
                                 undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
        self._template = env.get_template("offline_candidate.py.j2")

    # -- the structural choices ---------------------------------------------------------
    def _terms(self, space: Space) -> dict[str, list]:
        """The space's hypotheses plus terms distilled from trained closures."""
        terms = {state: list(ts) for state, ts in space.spec.hypotheses.items()}
        for extra in self._extra:
            names = {t.name for t in terms.get(extra["state"], [])}
            if extra["name"] not in names:
                terms.setdefault(extra["state"], []).append(Term(
                    name=extra["name"], expr=extra["expr"],
                    parameters=extra.get("parameters", {}),
                    description=extra.get("description", "")))
        return terms

    def _grammar(self, space: Space) -> dict[str, list]:
        g: dict[str, list] = {}
        for state, terms in self._terms(space).items():
            for term in terms:
                g[f"term:{state}:{term.name}"] = [False, True]
        for i, site in enumerate(space.spec.closures):
            g[f"closure:{i}:{site.state}"] = [NONE, *(_hidden_label(h) for h in site.hidden)]
        if shares_individuals(space) and space.prior_path() is not None:
            # a prior parameter may vary by individual (a random effect)
            src = space.prior_path().read_text()
            for name in sorted(declared_parameters(src) - individual_parameters(src)):
                g[f"individual:{name}"] = [False, True]
        return g

    def _study_for(self, space: Space) -> optuna.Study:
        if self._study is None:
            sampler = optuna.samplers.TPESampler(
                seed=self.seed, n_startup_trials=self.startup, multivariate=True)
            self._study = optuna.create_study(direction="minimize", sampler=sampler)
        return self._study

    def objective(self, entry: PoolEntry) -> float:
        """log10 validation error plus a parsimony penalty per term and per closure."""
        if entry.status != "ok" or entry.val_nmse is None or not math.isfinite(entry.val_nmse):
            return FAILED_VALUE
        c = entry.choices
        terms = sum(1 for k, v in c.items()
                    if k.startswith(("term:", "individual:")) and v is True)
        closures = sum(1 for k, v in c.items() if k.startswith("closure:") and v != NONE)
        return (math.log10(max(entry.val_nmse, 1e-30)) + PENALTY_TERM * terms
                + PENALTY_CLOSURE * closures)

    def warm_start(self, space: Space, entries: list[PoolEntry]) -> None:
        """Tell the sampler about candidates evaluated before (a resumed run)."""
        for e in entries:
            self._learn(space, e)
        self._seeded = self._seeded or bool(entries)

    def _learn(self, space: Space, e: PoolEntry) -> None:
        """Know an evaluated candidate's structure as seen; where the grammar can express it,
        tell the sampler its value (candidates it did not propose: distilled ones, a resumed
        run's)."""
        if not e.choices or e.id in self._told:
            return
        self._seen.add(structure_key(e.choices))
        if e.status == "pending":  # to be evaluated again: seen, but no value yet
            return
        grammar = self._grammar(space)
        params = _fill(grammar, e.choices)
        if params is None:
            return
        self._told.add(e.id)
        dists = {k: optuna.distributions.CategoricalDistribution(grammar[k]) for k in params}
        value = FAILED_VALUE if e.verdict == "rejected" else self.objective(e)
        self._study_for(space).add_trial(
            optuna.trial.create_trial(params=params, distributions=dists, value=value))

    def propose(self, space: Space, feedback: Feedback, n: int) -> list[Proposal]:
        known = {(e["state"], e["name"]) for e in self._extra}
        self._extra += [g for g in feedback.grammar if (g["state"], g["name"]) not in known]
        study = self._study_for(space)
        grammar = self._grammar(space)
        if not self._seeded:
            # First round: the prior alone and the APHYNITY-style hybrid (the prior plus a
            # closure at every site, as `hyarch baselines` trains it), as baselines. The
            # hybrid's distillation, every closure at once, is the next candidate: where the
            # prior lacks a term is what its networks say, whichever state that is.
            study.enqueue_trial({k: _off(k) for k in grammar})
            if space.spec.closures:
                study.enqueue_trial({k: (grammar[k][-1] if k.startswith("closure:")
                                         else _off(k)) for k in grammar})
            self._seeded = True
        for entry in feedback.pool:
            if entry.proposer != self.name:
                self._learn(space, entry)
        for entry in feedback.pool:
            if entry.verdict == "pinned" and entry.choices:
                self._enqueue_neighbours(study, grammar, entry.choices)
        if feedback.pool:
            self._enqueue_simpler(study, grammar, feedback.pool[0])
        self._empty = False
        out = []
        for _ in range(n):
            choices = None
            for _attempt in range(30):
                trial = study.ask()
                c = {k: trial.suggest_categorical(k, opts) for k, opts in grammar.items()}
                key = structure_key(c)
                if key not in self._seen:
                    self._seen.add(key)
                    choices = c
                    self._trials[trial.number] = trial
                    break
                # a repeat: tell the sampler what that structure scored, and draw again
                study.tell(trial, self._known_value(study, c))
            while choices is None:  # the sampler found none: enumerate the grammar
                wanted = self._untried(grammar)
                if wanted is None:
                    break
                study.enqueue_trial(wanted)
                trial = study.ask()  # the enqueued trial (or an older enqueued one)
                c = {k: trial.suggest_categorical(k, opts) for k, opts in grammar.items()}
                key = structure_key(c)
                if key in self._seen:
                    study.tell(trial, self._known_value(study, c))
                    continue
                self._seen.add(key)
                choices = c
                self._trials[trial.number] = trial
            if choices is None:
                self._empty = True
                break  # the grammar is exhausted
            try:
                source = self.render(space, choices)
            except Exception as e:  # a prior the template cannot extend
                out.append(Proposal(None, self.name, reason=f"cannot render candidate: {e}",
                                    choices={**choices, "_trial": trial.number}))
                continue
            out.append(Proposal(source, self.name, choices={**choices, "_trial": trial.number}))
        return out

    def _untried(self, grammar: dict[str, list]) -> dict[str, Any] | None:
        """An untried structure the sampler missed (it draws at random), or None when
        every structure of the grammar has been tried."""
        keys = list(grammar)
        for i, combo in enumerate(itertools.product(*(grammar[k] for k in keys))):
            if i >= MAX_ENUMERATED:
                return None
            c = dict(zip(keys, combo, strict=True))
            if structure_key(c) not in self._seen:
                return c
        return None

    def exhausted(self) -> str | None:
        if not self._empty:
            return None
        return (f"the offline grammar has no untried structure left: {len(self._seen)}"
                " distinct candidates")

    def _known_value(self, study, choices) -> float:
        for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
            if t.params == choices:
                return float(t.value)
        return FAILED_VALUE

    def _enqueue_neighbours(self, study, grammar, choices) -> None:
        for k, opts in grammar.items():
            if k not in choices:
                continue
            for o in opts:
                if o != choices[k]:
                    c = {**{kk: choices[kk] for kk in grammar if kk in choices}, k: o}
                    if structure_key(c) not in self._seen:
                        study.enqueue_trial(c, skip_if_exists=True)
                    break

    def _enqueue_simpler(self, study, grammar, best: PoolEntry) -> None:
        """Is every part of the best candidate needed? Its structure with one part fewer
        (a term, a closure, a distilled closure's terms), and for a distilled candidate its
        parent's structure without closures, are evaluated before the sampler draws: the one
        ranking can only prefer the simpler model it has seen."""
        base = _fill(grammar, best.choices)
        options = []
        simpler = best.choices.get("_simpler")
        if isinstance(simpler, dict) and (s := _fill(grammar, simpler)) is not None:
            options.append(s)
        if base is not None:
            # the parts least backed by the expert go first: distilled library terms, then
            # closures, then the space's hypotheses
            on = sorted(dict(structure_key(base)),
                        key=lambda k: (0 if ":distilled_" in k else
                                       1 if k.startswith("closure:") else 2))
            options += [{**base, k: _off(k)} for k in on]
        for c in options:
            if structure_key(c) not in self._seen:
                study.enqueue_trial(c, skip_if_exists=True)

    def observe(self, proposal: Proposal, entry: PoolEntry) -> None:
        number = proposal.choices.get("_trial")
        trial = self._trials.pop(number, None) if number is not None else None
        if trial is None or self._study is None:
            return
        value = FAILED_VALUE if entry.verdict == "rejected" else self.objective(entry)
        self._study.tell(trial, value)

    # -- rendering ------------------------------------------------------------------------
    def render(self, space: Space, choices: dict[str, Any]) -> str:
        prior = space.prior_path()
        prior_src = prior.read_text() if prior else ""
        individual = {k.split(":", 1)[1] for k, v in choices.items()
                      if k.startswith("individual:") and v is True}
        base = (prior_as_base(individualise(prior_src, individual)) if prior
                else EMPTY_PRIOR)
        declared = declared_parameters(prior_src)
        known = set(declared)
        params, closures, parts = [], [], {}
        desc = []
        for state, terms in self._terms(space).items():
            for term in terms:
                if not choices.get(f"term:{state}:{term.name}"):
                    continue
                for pname, p in term.parameters.items():
                    known.add(pname)
                    if pname in declared:
                        continue  # shared with the prior or an earlier term
                    declared.add(pname)
                    lo, hi = p.get("bounds", (-10.0, 10.0))
                    init = p.get("init", (lo + hi) / 2)
                    params.append({"name": pname, "init": float(init), "lo": float(lo),
                                   "hi": float(hi)})
                for target, expr in term.parts(state):
                    for pname in sorted(known, key=len, reverse=True):
                        expr = re.sub(rf"(?<![\w.]){re.escape(pname)}(?!\w)", f"self.{pname}",
                                      expr)
                    parts.setdefault(target, []).append(("add", f"({expr})"))
                targets = ", ".join(t for t, _ in term.parts(state))
                desc.append(f"{term.name} on {targets}")
        for i, site in enumerate(space.spec.closures):
            label = choices.get(f"closure:{i}:{site.state}", NONE)
            if label == NONE:
                continue
            hidden = tuple(int(x) for x in label.split("x"))
            attr = f"closure_{site.state}"
            closures.append({"attr": attr, "inputs": tuple(site.inputs), "hidden": hidden,
                             "kind": site.kind})
            call = f"self.{attr}({', '.join(f'{_ref(space, n)}' for n in site.inputs)})"
            parts.setdefault(site.state, []).append(
                ("mul" if site.kind == "multiplicative" else "add", call))
            article = "an" if site.kind[:1] in "aeiou" else "a"
            desc.append(f"{article} {site.kind} closure ({label}) on {site.state}")
        updates = {}
        for state, items in parts.items():
            expr = f'd["{state}"]'
            for kind, term in items:
                expr = f"{expr} * {term}" if kind == "mul" else f"{expr} + {term}"
            updates[state] = expr
        desc += [f"{name} individual" for name in sorted(individual)]
        doc = "The prior" + (" plus " + ", ".join(desc) if desc else " alone") + "."
        return self._template.render(prior_source=base, docstring=doc, parameters=params,
                                     closures=closures, updates=updates)


def _ref(space: Space, name: str) -> str:
    return f"s.{name}" if name in space.spec.states else f"u.{name}"
