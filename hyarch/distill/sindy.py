"""Sparse regression of a closure's contribution on a term library (PySINDy's STLSQ).

Columns and target are scaled to unit RMS, so one threshold grid fits every problem; the
threshold is chosen on held-out (validation) states: the sparsest fit whose R^2 is within
``tolerance`` of the best.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

THRESHOLDS = (0.0, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5)


@dataclass(frozen=True)
class SparseFit:
    """Coefficients in the units of the unscaled columns, and the fit's R^2."""

    coef: np.ndarray
    threshold: float
    r2_train: float
    r2_val: float
    path: tuple[tuple[float, int, float], ...] = ()  # (threshold, terms, val R^2) tried


def r2_score(y: np.ndarray, pred: np.ndarray) -> float:
    """Fraction of the variance of ``y`` explained by ``pred`` (1 - SSE/SST)."""
    sst = float(np.sum((y - y.mean()) ** 2))
    if sst <= 0:
        return float("nan")
    return 1.0 - float(np.sum((y - pred) ** 2)) / sst


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


def sparse_fit(X: np.ndarray, y: np.ndarray, Xv: np.ndarray, yv: np.ndarray, *,
               thresholds=THRESHOLDS, tolerance: float = 0.01) -> SparseFit:
    """Fit ``y ~ X @ coef`` sparsely, choosing the threshold on ``(Xv, yv)``."""
    col = np.sqrt(np.mean(X ** 2, axis=0))
    col[col == 0] = 1.0
    ys = float(np.sqrt(np.mean(y ** 2))) or 1.0
    Xn, yn = X / col, y / ys
    fits = []
    for thr in thresholds:
        c = stlsq(Xn, yn, thr) * ys / col
        if not np.all(np.isfinite(c)):
            continue
        fits.append(SparseFit(c, thr, r2_score(y, X @ c), r2_score(yv, Xv @ c)))
    if not fits:
        raise ValueError("sparse regression failed for every threshold")
    best = max(f.r2_val for f in fits if np.isfinite(f.r2_val)) if any(
        np.isfinite(f.r2_val) for f in fits) else float("nan")
    ok = [f for f in fits if np.isfinite(f.r2_val) and f.r2_val >= best - tolerance]
    pool = ok or fits
    chosen = min(pool, key=lambda f: (int(np.count_nonzero(f.coef)), -np.nan_to_num(f.r2_val)))
    path = tuple((f.threshold, int(np.count_nonzero(f.coef)), f.r2_val) for f in fits)
    return SparseFit(chosen.coef, chosen.threshold, chosen.r2_train, chosen.r2_val, path)
