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
