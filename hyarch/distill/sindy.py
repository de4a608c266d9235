"""Sparse regression of a closure's contribution on a term library (PySINDy's STLSQ).

Columns and target are scaled to unit RMS, so one threshold grid fits every problem (and
a fit of cancelling giant coefficients on nearly collinear columns is recognised); the
threshold is chosen on held-out (validation) states: among the fits whose share of the
closure's output explained is within
``tolerance`` of the best, one made of preferred terms only (the mechanism's own
parameters, the space's hypotheses) if there is one, else the sparsest.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np

THRESHOLDS = (0.0, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5)
# On unit-RMS columns and target, a coefficient above this means a term ten times the size of
# the whole closure output, which other terms must cancel: nearly collinear columns fitting
# their small difference (2e8 and -2e8 on a parameter shift and the state it multiplies), not
# a mechanism. Such fits are left out of the path.
MAX_GAIN = 10.0
# the path is also given the best fit of each size up to this (exhaustive best-subset
# selection; no more than MAX_SUBSETS least-squares fits of one size)
BEST_SUBSET_SIZE = 3
MAX_SUBSETS = 50_000


@dataclass(frozen=True)
class SparseFit:
    """Coefficients in the units of the unscaled columns, and the fit's R^2."""

    coef: np.ndarray
    threshold: float
    r2_train: float
    r2_val: float
    explained_val: float = float("nan")  # uncentred: share of the closure's output explained
    path: tuple[tuple[float, int, float], ...] = ()  # (threshold, terms, val explained)
    # the Pareto front of the path: per number of fitted values, the fit that explains the
    # most, kept only where it explains more than every sparser one (sparsest first)
    front: tuple[SparseFit, ...] = ()
    # the chosen fit without each one of its droppable terms, the rest refitted (least
    # squares): is every term needed? (the rollout of each, refitted, answers)
    reduced: tuple[SparseFit, ...] = ()
    # the chosen fit with one of its droppable terms swapped for the other column that,
    # in its place, explains the most, where that is within the choice's tolerance of the
    # best: on these points the regression cannot tell the two terms apart (a constant
    # and x near an equilibrium; the rollout, refitted, may)
    swapped: tuple[SparseFit, ...] = ()


def r2_score(y: np.ndarray, pred: np.ndarray) -> float:
    """Fraction of the variance of ``y`` explained by ``pred`` (1 - SSE/SST)."""
    sst = float(np.sum((y - y.mean()) ** 2))
    if sst <= 0:
        return float("nan")
    return 1.0 - float(np.sum((y - pred) ** 2)) / sst


def explained(y: np.ndarray, pred: np.ndarray) -> float:
    """Share of the closure's output (about its null value 0) explained: 1 - SSE/sum(y^2).

    R^2 measures against the mean, which is harsh when a closure is large but nearly
    constant over the visited states; the closure's own zero is the natural reference.
    """
    ss = float(np.sum(y ** 2))
    if ss <= 0:
        return float("nan")
    return 1.0 - float(np.sum((y - pred) ** 2)) / ss


def stlsq(X: np.ndarray, y: np.ndarray, threshold: float, ridge: float = 1e-4) -> np.ndarray:
    """One STLSQ fit on unit-RMS columns (PySINDy's optimizer). The ridge (per point)
    only steers which terms survive: the kept ones are refitted without it."""
    import pysindy as ps

    if threshold <= 0:
        return np.linalg.lstsq(X, y, rcond=None)[0]
    opt = ps.STLSQ(threshold=threshold, alpha=ridge * len(y), max_iter=50, unbias=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        opt.fit(X, y.reshape(-1, 1))
    coef = np.asarray(opt.coef_).reshape(-1)
    # the refit on the kept terms can leave some below the threshold: drop them and refit
    for _ in range(X.shape[1]):
        keep = np.abs(coef) >= threshold
        if keep.all() or not (coef != 0).any():
            break
        coef = np.zeros_like(coef)
        if keep.any():
            coef[keep] = np.linalg.lstsq(X[:, keep], y, rcond=None)[0]
        if (np.abs(coef[keep]) >= threshold).all():
            break
    return coef


def _path(X, y, Xv, yv, thresholds, cols: np.ndarray) -> list[SparseFit]:
    scale = np.sqrt(np.mean(X ** 2, axis=0))
    scale[scale == 0] = 1.0
    ys = float(np.sqrt(np.mean(y ** 2))) or 1.0
    Xn, yn = X[:, cols] / scale[cols], y / ys
    fits = []
    for thr in thresholds:
        cn = stlsq(Xn, yn, thr)
        if not np.all(np.isfinite(cn)) or np.max(np.abs(cn), initial=0.0) > MAX_GAIN:
            continue
        c = np.zeros(X.shape[1])
        c[cols] = cn * ys / scale[cols]
        if not np.all(np.isfinite(c)):
            continue
        fits.append(SparseFit(c, thr, r2_score(y, X @ c), r2_score(yv, Xv @ c),
                              explained(yv, Xv @ c)))
    return fits


def _best_subsets(X, y, Xv, yv, largest: int) -> list[SparseFit]:
    """For each size k up to ``largest``, the k columns whose least-squares fit leaves the
    smallest training residual (best-subset selection, exhaustive: small k only). STLSQ's
    threshold path jumps over sizes (on ODEBench's system 23 it went from 1 term to 3, and
    ``-sin(x)`` alone was never tried); the front and the choice see these too."""
    from itertools import combinations

    scale = np.sqrt(np.mean(X ** 2, axis=0))
    ok = np.flatnonzero(scale > 0)
    ys = float(np.sqrt(np.mean(y ** 2))) or 1.0
    Xn, yn = X[:, ok] / scale[ok], y / ys
    gram, xty = Xn.T @ Xn, Xn.T @ yn
    out = []
    for k in range(1, min(largest, len(ok)) + 1):
        subsets = np.array(list(combinations(range(len(ok)), k)))
        if len(subsets) > MAX_SUBSETS:
            break
        A = gram[subsets[:, :, None], subsets[:, None, :]]  # (N, k, k)
        b = xty[subsets]  # (N, k)
        well = np.linalg.cond(A) < 1e10  # collinear pairs: no unique fit, not a candidate
        if not well.any():
            continue
        coef = np.linalg.solve(A[well], b[well][..., None])[..., 0]
        sse_drop = np.einsum("nk,nk->n", coef, b[well])  # |y|^2 - SSE of each fit
        sse_drop[np.max(np.abs(coef), axis=1) > MAX_GAIN] = -np.inf
        i = int(np.argmax(sse_drop))
        if not np.isfinite(sse_drop[i]):
            continue
        c = np.zeros(X.shape[1])
        c[ok[subsets[well][i]]] = coef[i] * ys / scale[ok[subsets[well][i]]]
        out.append(SparseFit(c, math.nan, r2_score(y, X @ c), r2_score(yv, Xv @ c),
                             explained(yv, Xv @ c)))
    return out


def _on_support(X, y, Xv, yv, support: np.ndarray) -> SparseFit:
    """Least squares on the columns in ``support`` (a boolean mask)."""
    c = np.zeros(X.shape[1])
    if support.any():
        c[support] = np.linalg.lstsq(X[:, support], y, rcond=None)[0]
    return SparseFit(c, math.nan, r2_score(y, X @ c), r2_score(yv, Xv @ c),
                     explained(yv, Xv @ c))


def sparse_fit(X: np.ndarray, y: np.ndarray, Xv: np.ndarray, yv: np.ndarray, *,
               thresholds=THRESHOLDS, tolerance: float = 0.01,
               preferred: np.ndarray | None = None, prefer_tolerance: float = 0.02,
               hidden: np.ndarray | None = None,
               droppable: np.ndarray | None = None) -> SparseFit:
    """Fit ``y ~ X @ coef`` sparsely, choosing the threshold on ``(Xv, yv)``.

    The answer is the sparsest fit whose share explained (on ``Xv, yv``) is within
    ``tolerance`` of the best. ``preferred`` (a boolean mask of columns): fits using
    only these are also tried, and the sparsest of them within ``prefer_tolerance`` of
    the best wins over any fit that needs other columns: an expert's term that explains
    the closure nearly as well beats a generic one. ``hidden``: per column, how many
    parameters its term carries besides its coefficient (a saturating form's K); "sparsest"
    counts them, so ``x/(K + x)`` (two fitted values) loses to ``x`` (one) when both explain
    the closure as well. ``droppable`` (a boolean mask, default every column): the terms
    ``reduced`` leaves out one at a time.
    """
    every = np.arange(X.shape[1])
    fits = _path(X, y, Xv, yv, thresholds, every)
    if preferred is not None and preferred.any() and not preferred.all():
        fits += _path(X, y, Xv, yv, thresholds, every[preferred])
    if hidden is not None and (simple := np.asarray(hidden) == 0).any() and not simple.all():
        fits += _path(X, y, Xv, yv, thresholds, every[simple])  # the path without them
    fits += _best_subsets(X, y, Xv, yv, BEST_SUBSET_SIZE)
    if not fits:
        raise ValueError("sparse regression failed for every threshold (no finite fit whose"
                         f" terms stay within {MAX_GAIN:g} times the closure's output)")
    finite = [f.explained_val for f in fits if np.isfinite(f.explained_val)]
    best = max(finite) if finite else float("nan")

    def within(f: SparseFit, tol: float) -> bool:
        return bool(np.isfinite(f.explained_val) and f.explained_val >= best - tol)

    cost = np.ones(X.shape[1]) + (0 if hidden is None else np.asarray(hidden, dtype=float))

    def rank(f: SparseFit):
        return (float(cost[f.coef != 0].sum()), -np.nan_to_num(f.explained_val))

    pool = []
    if preferred is not None:
        pool = [f for f in fits if within(f, prefer_tolerance)
                and not np.any(f.coef[~preferred] != 0)]
    pool = pool or [f for f in fits if within(f, tolerance)] or fits
    chosen = min(pool, key=rank)
    path = tuple((f.threshold, int(np.count_nonzero(f.coef)), f.explained_val) for f in fits)
    front, top = [], -math.inf
    for f in sorted((f for f in fits if np.isfinite(f.explained_val)), key=rank):
        if f.explained_val > top:
            front.append(f)
            top = f.explained_val
    drop = np.ones(X.shape[1], bool) if droppable is None else np.asarray(droppable, bool)
    on = chosen.coef != 0
    reduced = tuple(_on_support(X, y, Xv, yv, on & (every != j))
                    for j in every[on & drop] if (on & drop).sum() > 1)
    swapped = []
    for j in every[on & drop]:
        rivals = [_on_support(X, y, Xv, yv, (on & (every != j)) | (every == k))
                  for k in every[~on & drop]]
        rivals = [f for f in rivals if within(f, tolerance)]
        if rivals:
            swapped.append(max(rivals, key=lambda f: f.explained_val))
    return SparseFit(chosen.coef, chosen.threshold, chosen.r2_train, chosen.r2_val,
                     chosen.explained_val, path, tuple(front), reduced, tuple(swapped))
