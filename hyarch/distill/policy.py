"""Which trained closures are worth distilling (about a second each)."""

from __future__ import annotations

# a closure that supplies less of the derivative than this learned nothing worth distilling
MIN_SHARE_TO_DISTILL = 0.02
# nor does the closure of a candidate that does not fit: what it learned is a patch over a
# wrong model, and its distilled terms (often large cancelling coefficients) make unstable
# mechanistic candidates. "Fits" is ODEBench's accuracy criterion (d'Ascoli et al. 2024,
# after Strogatz): the rollout explains at least 90% of each state's variance, R^2 >= 0.9,
# a selection nMSE of at most 0.1. (It was 1%: on ODEBench s12 and s14 the hybrid of a
# logistic law less one term, stopped by the quick schedule at nMSE 0.023, was never
# distilled, and each search ended after two of its six candidates.) What is distilled is
# refitted and ranked like any candidate: a poor term loses there.
MAX_NMSE_TO_DISTILL = 0.1


def worth_distilling(closure_share: float | None, nmse: float | None) -> bool:
    """A closure that did real work (its share) in a candidate that fits."""
    return (float(closure_share or 0.0) >= MIN_SHARE_TO_DISTILL
            and nmse is not None and float(nmse) <= MAX_NMSE_TO_DISTILL)
# a distillation with more terms than this is a curve fit, not a mechanism: it is neither
# queued as a candidate nor added to the offline grammar
MAX_DISTILLED_TERMS = 4
# how many of a closure's sparse fits (the path's Pareto front) are refitted as candidates
# for the rollout to choose among; each is a network-free fit in the sandboxed child
MAX_ALTERNATIVES = 6
