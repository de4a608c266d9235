"""The one ranking rule on cases with known answers."""

from __future__ import annotations

import math
import random

from hyarch.ranking.rule import complexity_of, paired, rank, score_of


def result(errors, n_params=2, n_neural=0):
    return {"status": "ok", "parameters": {f"p{i}": 1.0 for i in range(n_params)},
            "n_neural_params": n_neural,
            "metrics": {"val": {"nmse": sum(errors) / len(errors),
                                "per_trajectory_nmse": list(errors)}}}


def noise_floor(seed, n=25, level=1e-4):
    rng = random.Random(seed)
    return [level * rng.lognormvariate(0, 0.3) for _ in range(n)]


def test_paired_standard_error_is_the_textbook_one():
    d, se = paired([1.0, 2.0, 3.0, 4.0], [0.0, 0.0, 0.0, 0.0])
    assert d == 2.5 and math.isclose(se, math.sqrt((1.25 * 4 / 3) / 4))


def test_a_network_that_refits_the_noise_does_not_outrank_the_mechanism():
    """At the noise floor, a closure that lowers some trajectories' errors and raises
    others' is indistinguishable from the true model: the simpler one ranks first."""
    truth = noise_floor(0)
    rng = random.Random(1)
    hybrid = [e * math.exp(rng.gauss(-0.02, 0.1)) for e in truth]  # slightly lower on average
    assert score_of(result(hybrid)) < score_of(result(truth))
    order = rank({"truth": result(truth, 2), "hybrid": result(hybrid, 2, 1185)})
    assert [c for c, _ in order] == ["truth", "hybrid"]
    ev = dict(order)
    assert ev["truth"].tier == ev["hybrid"].tier == 1
    assert ev["truth"].vs == "hybrid" and ev["truth"].diff <= ev["truth"].se


def test_twelve_spare_terms_do_not_buy_a_tier_at_the_noise_floor():
    """Measured on the pendulum (1% noise): a bloated network-free model scored 0.02 decades
    better than the true structure on every validation trajectory alike. A paired test calls
    that significant; the one-standard-error rule does not, and the simpler model wins."""
    truth = noise_floor(7)
    bloated = [e * 10 ** -0.02 for e in truth]  # uniformly 5% lower
    order = rank({"bloated": result(bloated, 13), "truth": result(truth, 2)})
    assert [c for c, _ in order] == ["truth", "bloated"]
    assert paired(bloated, truth)[0] < -paired(bloated, truth)[1]  # "significant" if paired


def test_a_closure_that_buys_real_improvement_ranks_first():
    prior = [e * 100 for e in noise_floor(2)]  # a missing mechanism: 100x the noise floor
    hybrid = noise_floor(3)
    order = rank({"prior": result(prior, 1), "hybrid": result(hybrid, 1, 1185)})
    assert [c for c, _ in order] == ["hybrid", "prior"]
    assert dict(order)["prior"].tier == 2


def test_simplest_of_the_first_tier_wins_and_groups_follow():
    truth = noise_floor(4)
    items = {"c3": result(truth, 3), "c1": result(truth, 2), "c2": result([e * 50 for e in truth]),
             "c4": {"status": "failed", "reason": "boom"}, "c5": result(truth, 1),
             "c6": {"status": "pending"}}
    order = [c for c, _ in rank(items, rejected={"c5"}, pending={"c6"})]
    assert order == ["c1", "c3", "c2", "c5", "c4", "c6"]


def test_malformed_records_never_rank_and_never_raise():
    bad = result(noise_floor(5))
    bad["metrics"]["val"]["per_trajectory_nmse"][3] = "0.0"
    items = {"a": bad, "b": {"status": "ok", "metrics": "garbage"}, "c": result(noise_floor(6))}
    order = rank(items)
    assert order[0][0] == "c" and {e.group for _, e in order[1:]} == {"failed"}
    assert complexity_of({"parameters": "x", "n_neural_params": True}) == 0
