"""Figures for the review and the report, drawn with matplotlib's Agg backend (no display).

Each function returns a Figure; ``png_bytes`` turns one into PNG data and closes it.
"""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from hyarch.report.summary import Row
    from hyarch.runs import CandidateRecord, Run

SPLIT_TITLES = {"train": "train", "val": "validation", "test": "test",
                "ood": "out of distribution"}


def png_bytes(fig: Figure, dpi: int = 90) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def _positive(x: float | None) -> float | None:
    return x if x is not None and math.isfinite(x) and x > 0 else None


def pareto_plot(rows: list[Row]) -> Figure:
    """Validation error against closure share; marker area grows with neural parameters."""
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    ok = [r for r in rows if r.ok and _positive(r.val_nmse)]
    for group, style in ((lambda r: not r.pareto and not r.baseline,
                          {"c": "#9aa5b1", "label": "candidate"}),
                         (lambda r: r.baseline, {"c": "#e8a33d", "marker": "s",
                                                  "label": "baseline"}),
                         (lambda r: r.pareto and not r.baseline,
                          {"c": "#c0392b", "label": "Pareto front"})):
        sel = [r for r in ok if group(r)]
        if not sel:
            continue
        ax.scatter([r.val_nmse for r in sel], [r.closure_share or 0.0 for r in sel],
                   s=[30 + 12 * math.sqrt(r.n_neural or 0) for r in sel], alpha=0.85,
                   edgecolors="k", linewidths=0.5, **style)
    front = sorted((r for r in ok if r.pareto), key=lambda r: r.val_nmse)
    for r in ok:
        if r.pareto or r.baseline or (r.rank or 99) <= 5:
            ax.annotate(r.id, (r.val_nmse, r.closure_share or 0.0), fontsize=8,
                        xytext=(4, 4), textcoords="offset points")
    if len(front) > 1:
        ax.plot([r.val_nmse for r in front], [r.closure_share or 0.0 for r in front],
                ":", c="#c0392b", lw=1)
    ax.set_xscale("log")
    ax.set_xlabel("validation nmse (log)")
    ax.set_ylabel("closure share of the derivative")
    ax.set_title("Pareto front (marker area ~ neural parameters)")
    ax.grid(alpha=0.3)
    if ok:
        leg = ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=3,
                        frameon=False)
        for h in leg.legend_handles:
            h.set_sizes([36])
    else:
        ax.text(0.5, 0.5, "no finished candidates", ha="center", transform=ax.transAxes)
    return fig


def progress_plot(rows: list[Row]) -> Figure:
    """Each candidate's validation error in proposal order, and the best so far."""
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    by_index = sorted(rows, key=lambda r: r.index)
    best, best_x, best_y = math.inf, [], []
    vals = [r.val_nmse for r in by_index if r.ok and _positive(r.val_nmse)]
    top = max(vals) * 3 if vals else 1.0
    rounds = sorted({r.round for r in by_index if r.round is not None})
    cmap = plt.get_cmap("viridis", max(len(rounds), 1))
    for r in by_index:
        if r.ok and _positive(r.val_nmse):
            best = min(best, r.val_nmse)
            c = cmap(rounds.index(r.round)) if r.round in rounds else "#555"
            ax.scatter([r.index], [r.val_nmse], color=c, s=28, zorder=3,
                       marker="s" if r.baseline else "o")
        elif r.status != "pending":
            ax.scatter([r.index], [top], marker="x", color="#c0392b", s=30, zorder=3)
        if math.isfinite(best):
            best_x.append(r.index)
            best_y.append(best)
    if best_x:
        ax.step(best_x, best_y, where="post", c="k", lw=1.5, label="best so far")
    if any(not r.ok and r.status != "pending" for r in rows):
        ax.scatter([], [], marker="x", color="#c0392b", label="failed")
    for i, rnd in enumerate(rounds):
        ax.scatter([], [], color=cmap(i), s=28, label=f"round {rnd}")
    ax.set_yscale("log")
    ax.set_xlabel("candidate (in proposal order)")
    ax.set_ylabel("validation nmse (log)")
    ax.set_title("search progress")
    ax.grid(alpha=0.3)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=5,
              frameon=False)
    return fig


def trajectories_plot(space, preds: dict, title: str = "", n_traj: int = 3) -> Figure:
    """Observed data (dots) against the model's rollout (lines): one row per split, one
    column per state, a few trajectories each. ``preds`` maps splits to (B, T, S) arrays
    (the predictions the evaluation stored)."""
    splits = [s for s in preds if s in space.splits]
    states = list(space.measured)
    sizes = [max(1, math.prod(space.shapes.get(n, ()) or (1,))) for n in states]
    fig, axes = plt.subplots(len(splits), len(states), squeeze=False,
                             figsize=(3.4 * len(states) + 0.6, 2.3 * len(splits) + 0.4))
    colours = plt.get_cmap("tab10")
    for i, split in enumerate(splits):
        data = space.splits[split]
        pred = preds[split]
        if hasattr(pred, "detach"):  # a tensor
            pred = pred.detach().cpu().numpy()
        pred = np.asarray(pred, dtype=float)
        if pred.ndim == 4:  # a replica dimension
            pred = pred[0]
        off = 0
        for j, (name, size) in enumerate(zip(states, sizes, strict=True)):
            ax = axes[i][j]
            col = off  # field states: the first component stands for the field
            for k in range(min(n_traj, data.n)):
                t = data.t[k].cpu().numpy()
                m = data.mask[k, :, col].cpu().numpy().astype(bool)
                y = data.y[k, :, col].cpu().numpy()
                c = colours(k % 10)
                ax.plot(t[m], y[m], "o", ms=2.5, color=c, alpha=0.7)
                ax.plot(t, pred[k, :, col], "-", lw=1.3, color=c)
            if i == 0:
                ax.set_title(name + (" (first component)" if size > 1 else ""), fontsize=9)
            if j == 0:
                ax.set_ylabel(SPLIT_TITLES.get(split, split), fontsize=9)
            ax.tick_params(labelsize=7)
            ax.grid(alpha=0.3)
            off += size
    for ax in axes[-1]:
        ax.set_xlabel("time", fontsize=8)
    fig.suptitle((title + ": " if title else "") + "data (dots) and model rollout (lines)",
                 fontsize=10)
    fig.tight_layout()
    return fig


def parameters_plot(rows: list[Row], truth: dict[str, float]) -> Figure | None:
    """Each candidate's fitted value of every known parameter, relative to its truth."""
    names = [n for n in truth if any(n in r.parameters for r in rows)]
    if not names or not rows:
        return None
    fig, ax = plt.subplots(figsize=(6.4, 0.5 + 0.45 * len(rows) * len(names)))
    labels, vals = [], []
    for name in names:
        for r in rows:
            if name in r.parameters and truth[name]:
                labels.append(f"{r.id} {name}")
                vals.append(100 * (r.parameters[name] - truth[name]) / abs(truth[name]))
    ax.barh(range(len(vals)), vals, color=["#c0392b" if abs(v) > 5 else "#2e86c1"
                                            for v in vals])
    ax.set_yticks(range(len(vals)), labels, fontsize=8)
    ax.axvline(0, c="k", lw=0.8)
    ax.set_xlabel("fitted - true, % of true")
    ax.set_title("physical parameters against the truth")
    ax.grid(alpha=0.3, axis="x")
    ax.invert_yaxis()
    return fig


def fit_plot(run: Run, rec: CandidateRecord, space=None) -> tuple[Path | None, str | None]:
    """candidates/<id>/fit.png (train and validation, from the stored predictions), made
    once; or None and the one-line reason why there is none."""
    from hyarch.report.replay import ReplayError, load_run_space, stored_predictions

    path = rec.path / "fit.png"
    if path.is_file():
        return path, None
    try:
        preds = stored_predictions(rec, None, ("train", "val"), run=run)
        space = space or load_run_space(run)
        preds = stored_predictions(rec, space, ("train", "val"), run=run)
    except ReplayError as e:
        return None, str(e)
    from hyarch.runs import atomic_write

    atomic_write(path, png_bytes(trajectories_plot(space, preds, title=rec.id)))
    return path, None


def write_fit_plot(run: Run, rec: CandidateRecord, space=None) -> Path | None:
    """candidates/<id>/fit.png (train and validation), made once; None if it cannot be."""
    return fit_plot(run, rec, space)[0]
