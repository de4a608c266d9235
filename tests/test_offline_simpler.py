"""The offline proposer checks that every part of the best candidate is needed: the one
ranking can prefer the simpler model only once it has been evaluated."""

from __future__ import annotations

from hyarch.agent.base import Feedback, PoolEntry
from hyarch.agent.offline import NONE, OfflineProposer
from hyarch.spaces.loader import load_space


def _entry(choices, proposer="offline"):
    return PoolEntry(id="c0009", source="", proposer=proposer, status="ok", val_nmse=1e-3,
                     choices=choices)


def _first_round(proposer, space):
    proposer.propose(space, Feedback(round=1), n=2)  # the prior and the hybrid



def test_the_first_round_is_the_prior_and_a_closure_at_every_site():
    # the damped pendulum has closure sites on omega and theta: the APHYNITY-style hybrid
    # (as `hyarch baselines` trains it) has both, each at its largest size, and no hypothesis
    space = load_space("damped_pendulum")
    proposer = OfflineProposer(seed=0)
    prior, hybrid = proposer.propose(space, Feedback(round=1), n=2)
    sites = {k: v for k, v in hybrid.choices.items() if k.startswith("closure:")}
    assert len(sites) == len(space.spec.closures) == 2
    for i, site in enumerate(space.spec.closures):
        h = site.hidden[-1]
        assert sites[f"closure:{i}:{site.state}"] == "x".join(map(str, h))
    assert not any(v is True for k, v in hybrid.choices.items() if k.startswith("term:"))
    assert all(v in (False, NONE) for k, v in prior.choices.items() if k != "_trial")
    assert hybrid.source.count("Closure(") == 2 and "Closure(" not in prior.source


def test_a_term_of_the_best_candidate_is_tried_without_it():
    space = load_space("damped_pendulum")
    proposer = OfflineProposer(seed=0)
    _first_round(proposer, space)
    grammar = proposer._grammar(space)
    best = {k: (k in ("term:omega:linear_friction", "term:omega:constant_torque"))
            if k.startswith("term:") else NONE for k in grammar}
    got = proposer.propose(space, Feedback(round=2, pool=(_entry(best),)), n=2)
    tried = [{k: v for k, v in p.choices.items() if k in grammar} for p in got]
    assert {**best, "term:omega:constant_torque": False} in tried
    assert {**best, "term:omega:linear_friction": False} in tried


def test_a_distilled_candidate_is_tried_without_its_distilled_terms():
    space = load_space("damped_pendulum")
    proposer = OfflineProposer(seed=0)
    _first_round(proposer, space)
    grammar = proposer._grammar(space)
    parent = {k: (k == "term:omega:linear_friction") if k.startswith("term:")
              else ("16x16" if k == "closure:0:omega" else NONE) for k in grammar}
    simpler = {**parent, "closure:0:omega": NONE}
    distilled = _entry({"_simpler": simpler}, proposer="distill")
    (first,) = proposer.propose(space, Feedback(round=2, pool=(distilled,)), n=1)
    assert {k: v for k, v in first.choices.items() if k in grammar} == simpler
    assert "self.alpha * s.omega" in first.source and "Closure(" not in first.source


def _distillation(closure, state, terms, explained=0.99):
    return {"closure": closure, "state": state, "explained": explained,
            "terms": [{"name": n, "kind": k, "code": code, "coefficient": c}
                      for n, k, code, c in terms]}


def test_what_a_closure_distils_to_is_one_part_of_the_grammar():
    from hyarch.distill import grammar_terms

    entry = _distillation("closure_omega", "omega", [
        ("linear_friction", "hypothesis", "", -0.2),
        ("s.omega ** 3", "generic", "s.omega ** 3", -0.05),
        ("s.theta * s.omega", "generic", "s.theta * s.omega", 0.01),
        ("1", "generic", "1", 0.003)])
    (term,) = grammar_terms([entry], "c0004")["omega"]
    assert term["name"] == "distilled_c0004_closure_omega"
    assert term["expr"] == ("k_omega_c0004 * s.omega ** 3 + k_omega_c0004_2 * s.theta * s.omega"
                            " + k_omega_c0004_3")
    assert [p["init"] for p in term["parameters"].values()] == [-0.05, 0.01, 0.003]
    # a long sum of library columns is a curve fit: it adds nothing to the grammar
    long = _distillation("closure_omega", "omega", [
        (f"c{i}", "generic", f"s.theta ** {i}", 0.1) for i in range(1, 6)])
    assert grammar_terms([long], "c0005") == {}
    # neither does a distillation that explains too little of its closure
    assert grammar_terms([{**entry, "explained": 0.5}], "c0006") == {}


def test_a_distilled_candidate_is_placed_in_the_grammar_and_tried_part_by_part():
    from hyarch.agent.artifacts import distilled_choices
    from hyarch.distill import grammar_terms

    space = load_space("damped_pendulum")
    proposer = OfflineProposer(seed=0)
    _first_round(proposer, space)
    grammar = proposer._grammar(space)
    parent = {k: False if k.startswith("term:") else
              ("32x32" if k == "closure:0:omega" else NONE) for k in grammar}
    # the hybrid's closure turned out to be linear friction plus a spare cubic term
    entry = _distillation("closure_omega", "omega", [
        ("linear_friction", "hypothesis", "", -0.2),
        ("s.omega ** 3", "generic", "s.omega ** 3", -1e-4)])
    choices = distilled_choices("c0002", [entry], parent)
    extra = "term:omega:distilled_c0002_closure_omega"
    assert {k: v for k, v in choices.items() if v not in (False, NONE)} == {
        "term:omega:linear_friction": True, extra: True, "_simpler": {**parent,
                                                                     "closure:0:omega": NONE}}
    grammar_fb = tuple({"state": s, **t}
                       for s, ts in grammar_terms([entry], "c0002").items() for t in ts)
    best = PoolEntry(id="c0005", source="", proposer="distill", status="ok", val_nmse=1e-4,
                     choices=choices)
    got = proposer.propose(space, Feedback(round=2, pool=(best,), grammar=grammar_fb), n=3)
    on = [{k for k, v in p.choices.items() if not k.startswith("_") and v not in (False, NONE)}
          for p in got]
    # without the distilled terms (the true structure), and without friction: before any draw
    assert on[:2] == [{"term:omega:linear_friction"}, {extra}]
    assert "self.alpha * s.omega" in got[0].source and "k_omega_c0002" not in got[0].source
    assert "self.k_omega_c0002 * s.omega ** 3" in got[1].source
    # the distilled candidate's own structure is known: never proposed again
    assert {"term:omega:linear_friction", extra} not in on[2:]


def test_a_formula_candidate_is_queued_from_its_own_records_outside_the_grammar(tmp_path):
    # A closure inside a rate: its per-state records are long curve fits (no candidate from
    # them alone), the network as a formula of its input is one saturating term, and the
    # refit chose that form. The formula candidate is queued, is outside the offline
    # grammar (no choices: evaluated, not varied part by part) and adds no grammar term.
    from hyarch.agent.artifacts import keep_distillation
    from hyarch.distill import grammar_terms
    from hyarch.runs import Run

    long = [(f"s.prey ** {i}", "generic", f"s.prey ** {i}", 0.1) for i in range(1, 6)]
    prey = {**_distillation("response", "prey", long), "form": "state",
            "candidate_form": "call", "source": "FORMULA"}
    call = {**_distillation("response", "", [
        ("s.prey / (2.0 + s.prey)", "generic", "s.prey / (2.0 + s.prey)", 1.0)]),
        "form": "call", "inputs": ["prey"], "expression": "1.0 * s.prey / (2.0 + s.prey)",
        "candidate_form": "call", "source": "FORMULA"}
    said: list[str] = []
    (p,) = keep_distillation(Run(tmp_path), "c0003", [prey, call], said.append,
                             parent_choices={"closure:0:prey": "16x16"})
    assert p.source == "FORMULA" and p.parents == ("c0003",) and p.choices == {}
    assert said == ["  c0003: closure response distils to response(prey) ="
                    " 1.0 * s.prey / (2.0 + s.prey) (explains 0.990); queued as a"
                    " mechanistic candidate"]
    assert grammar_terms([call], "c0003") == {}


def test_all_closures_at_once_is_queued_first_with_every_network_off(tmp_path):
    # A hybrid with a closure on each state: the one on omega distils to friction, the one
    # on theta to nothing. Its own candidate (friction, the theta network kept) is queued,
    # and before it the whole mechanism with both networks off.
    from hyarch.agent.artifacts import keep_distillation
    from hyarch.runs import Run

    friction = {**_distillation("closure_omega", "omega", [
        ("linear_friction", "hypothesis", "", -0.2)]), "form": "state", "source": "ONE"}
    nothing = {**_distillation("closure_theta", "theta", [], explained=None), "form": "state",
               "source": None}
    joint = {"source": "ALL", "dropped": ["closure_theta"],
             "parts": [{**nothing, "source": None}, {**friction, "source": None}]}
    parent = {"closure:0:theta": "16x16", "closure:0:omega": "16x16",
              "term:omega:linear_friction": False}
    said: list[str] = []
    got = keep_distillation(Run(tmp_path), "c0002", [{**friction, "joint": joint}, nothing],
                            said.append, parent_choices=parent)
    assert [p.source for p in got] == ["ALL", "ONE"]
    assert {k: v for k, v in got[0].choices.items() if k != "_simpler"} == {
        "closure:0:theta": "none", "closure:0:omega": "none",
        "term:omega:linear_friction": True}
    assert got[1].choices["closure:0:theta"] == "16x16"
    assert said[0] == ("  c0002: all its closures at once (1 dropped as distilling to nothing)"
                       " queued as a mechanistic candidate")
    # what a child sends is untrusted: a joint that is not a dict of the right shape is ignored
    for bad in ({"source": 3, "parts": []}, {"source": "X", "parts": "no"}, "ALL"):
        got = keep_distillation(Run(tmp_path), "c0002", [{**friction, "joint": bad}, nothing],
                                said.append, parent_choices=parent)
        assert [p.source for p in got] == ["ONE"]
