"""Which trained closures are worth distilling (about a second each)."""

from __future__ import annotations

# A closure is worth distilling where it did measurable work: the candidate's fit on the
# selection split is worse with its closures switched off, by more than the ranking's rule
# allows (one standard error of the folds). (It was a share of the derivative of at least
# 2%: on ODEBench s39 the missing term, -x_0^2 x_1, is 1.9% of dx_1/dt, and the hybrid
# that had learned it, 0.14 decades better than the prior, was never distilled.)
# Nor is the closure of a candidate that does not fit: what it learned is a patch over a
# wrong model, and its distilled terms (often large cancelling coefficients) make unstable
# mechanistic candidates. "Fits" is ODEBench's accuracy criterion (d'Ascoli et al. 2024,
# after Strogatz): the rollout explains at least 90% of each state's variance, R^2 >= 0.9,
# a selection nMSE of at most 0.1. (It was 1%: on ODEBench s12 and s14 the hybrid of a
# logistic law less one term, stopped by the quick schedule at nMSE 0.023, was never
# distilled, and each search ended after two of its six candidates.) What is distilled is
# refitted and ranked like any candidate: a poor term loses there.
MAX_NMSE_TO_DISTILL = 0.1


def worth_distilling(nmse: float | None, on: list[float], off: list[float]) -> bool:
    """Closures that did measurable work in a candidate that fits. ``nmse``: the
    candidate's selection nMSE; ``on``, ``off``: its log10 nMSE per fold of the selection
    split with its closures on and switched off (their null values). The closures matter
    where the ranking's rule puts the candidate in a better tier than itself without them."""
    from hyarch.ranking.rule import tiers

    if nmse is None or not float(nmse) <= MAX_NMSE_TO_DISTILL or not on or not off:
        return False
    tier = {c: ev.tier for c, ev in tiers({"on": on, "off": off}, {"on": 1, "off": 0})}
    return tier["on"] < tier["off"]


# a distillation with more terms than this is a curve fit, not a mechanism: it is neither
# queued as a candidate nor added to the offline grammar
MAX_DISTILLED_TERMS = 4
# how many of a closure's sparse fits (the path's Pareto front) are refitted as candidates
# for the rollout to choose among; each is a network-free fit in the sandboxed child
MAX_ALTERNATIVES = 6
