"""Scores of a trained candidate: fit per split (raw and normalised), reduced model,
regularizers, closure share, parameters and their errors against the truth."""

from __future__ import annotations

import math

import torch

from hyarch.core.data import Trajectories
from hyarch.core.fields import reduced, rollout
from hyarch.core.model import HybridModel


def normalised_mse(pred: torch.Tensor, data: Trajectories, scales: torch.Tensor) -> torch.Tensor:
    """Masked MSE in per-state normalised units, skipping the initial point.

    ``pred`` may carry a leading replica dimension; the result then has one per replica.
    """
    err = ((pred - data.y) / scales)[..., 1:, :] ** 2
    mask = data.mask[:, 1:].to(err.dtype)
    return (err * mask).sum(dim=(-3, -2, -1)) / mask.sum().clamp_min(1)


# the ranking's rule needs a spread over at least this many folds: a split with fewer
# trajectories is cut into contiguous blocks of time (blocked cross-validation)
MIN_FOLDS = 5


def per_trajectory_nmse(pred: torch.Tensor, data: Trajectories, scales: torch.Tensor,
                        blocks: int | None = None) -> torch.Tensor:
    """One normalised MSE per fold (masked, the initial point skipped): what the ranking's
    rule compares fold by fold. A fold is a trajectory, or, with ``blocks`` > 1, a
    contiguous block of one trajectory's observed time points (trajectory-major): the
    folds of a blocked cross-validation, for a split with too few trajectories to estimate
    a spread from. ``blocks`` None: enough blocks for ``MIN_FOLDS`` folds in all."""
    if blocks is None:
        blocks = math.ceil(MIN_FOLDS / max(int(pred.shape[-3]), 1))
    err = ((pred - data.y) / scales)[:, 1:] ** 2
    mask = data.mask[:, 1:].to(err.dtype)
    err = torch.where(mask > 0, err, torch.zeros_like(err))
    # blocks of the time points that hold an observation (a conditioning window, a
    # sampling gap: no fold is empty)
    seen = torch.nonzero(mask.sum(dim=(0, 2)) > 0).reshape(-1)
    if not len(seen):
        seen = torch.arange(err.shape[1])
    out = []
    for idx in seen.tensor_split(max(1, min(blocks, len(seen)))):
        out.append(err[:, idx].sum(dim=(1, 2)) / mask[:, idx].sum(dim=(1, 2)).clamp_min(1))
    return torch.stack(out, dim=1).reshape(-1)


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None


def fit_scores(
    pred: torch.Tensor, data: Trajectories, scales: torch.Tensor
) -> dict:
    """mse (raw units), nmse (normalised), log10_mse and per-state values."""
    pred = pred.detach()
    diff = (pred - data.y)[:, 1:]
    mask = data.mask[:, 1:].to(diff.dtype)
    per_col_sq = (diff ** 2 * mask).sum(dim=(0, 1))
    per_col_n = mask.sum(dim=(0, 1)).clamp_min(1)
    per_state = {}
    shapes = data.state_shapes or tuple(() for _ in data.state_names)
    off = 0
    raw_means, norm_means = [], []
    for name, shp in zip(data.state_names, shapes, strict=True):
        size = math.prod(shp) if shp else 1
        sl = slice(off, off + size)
        mse = float(per_col_sq[sl].sum() / per_col_n[sl].sum())
        nmse = mse / float(scales[off]) ** 2
        per_state[name] = {"mse": _finite(mse), "nmse": _finite(nmse)}
        raw_means.append(mse)
        norm_means.append(nmse)
        off += size
    mse = float(sum(raw_means) / len(raw_means))
    nmse = float(sum(norm_means) / len(norm_means))
    return {
        "mse": _finite(mse),
        "nmse": _finite(nmse),
        "log10_mse": _finite(math.log10(mse)) if mse > 0 else None,
        "log10_nmse": _finite(math.log10(nmse)) if nmse > 0 else None,
        "per_state": per_state,
    }


def split_scores(
    model: HybridModel, data: Trajectories, scales: torch.Tensor, *,
    method: str = "rk4", substeps: int = 1,
) -> tuple[dict, dict, torch.Tensor]:
    """Scores of the full and the reduced model on one split, and the full prediction."""
    with torch.no_grad():
        pred = rollout(model, data, method=method, substeps=substeps)
        full = fit_scores(pred, data, scales)
        if model.closures():
            with reduced(model):
                pred0 = rollout(model, data, method=method, substeps=substeps)
            red = fit_scores(pred0, data, scales)
        else:
            red = full
    return full, red, pred


def parameter_errors(values: dict[str, float], truth: dict[str, float]) -> dict[str, float]:
    """|fitted - true| / |true| for each parameter whose truth is known."""
    out = {}
    for name, true in truth.items():
        if name in values and true != 0:
            out[name] = abs(values[name] - true) / abs(true)
    return out
