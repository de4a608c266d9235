"""Trajectories as tensors, and the per-state scales the loss is measured on."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import torch


@dataclass(frozen=True)
class Trajectories:
    """A batch of observed trajectories on (possibly per-trajectory) time grids.

    ``t`` (B, T); ``y`` (B, T, S) with missing values zero-filled and flagged in ``mask``;
    ``u`` (B, T, I) exogenous inputs, piecewise constant from each sample to the next.
    """

    t: torch.Tensor
    y: torch.Tensor
    mask: torch.Tensor
    u: torch.Tensor | None
    state_names: tuple[str, ...]
    input_names: tuple[str, ...] = ()
    ids: tuple[str, ...] = field(default=())
    state_shapes: tuple[tuple[int, ...], ...] = ()

    @classmethod
    def from_arrays(
        cls, t, y, u=None, *, states, inputs=(), ids=None, shapes=None
    ) -> Trajectories:
        y = torch.as_tensor(y, dtype=torch.get_default_dtype())
        if y.ndim == 2:
            y = y.unsqueeze(0)
        t = torch.as_tensor(t, dtype=y.dtype)
        if t.ndim == 1:
            t = t.unsqueeze(0).expand(y.shape[0], -1).clone()
        mask = torch.isfinite(y)
        y = torch.where(mask, y, torch.zeros_like(y))
        if u is not None:
            u = torch.as_tensor(u, dtype=y.dtype)
            if u.ndim == 2:
                u = u.unsqueeze(0)
        ids = tuple(ids) if ids is not None else tuple(str(i) for i in range(y.shape[0]))
        shapes = tuple(tuple((shapes or {}).get(n, ())) for n in states)
        return cls(t, y, mask, u, tuple(states), tuple(inputs), ids, shapes)

    @property
    def n(self) -> int:
        return self.y.shape[0]

    @property
    def length(self) -> int:
        return self.y.shape[1]

    def to(self, device) -> Trajectories:
        return replace(
            self, t=self.t.to(device), y=self.y.to(device), mask=self.mask.to(device),
            u=None if self.u is None else self.u.to(device),
        )

    def select(self, index) -> Trajectories:
        index = torch.as_tensor(index, dtype=torch.long)
        return replace(
            self, t=self.t[index], y=self.y[index], mask=self.mask[index],
            u=None if self.u is None else self.u[index],
            ids=tuple(self.ids[i] for i in index.tolist()),
        )

    def y0(self) -> torch.Tensor:
        return self.y[:, 0]

    def windows(self, width: int) -> Trajectories:
        """Every sub-trajectory of ``width`` steps, starting at every observed point.

        The short-window curriculum fits these: from each observed state, predict a few
        steps ahead, so that an oscillator's phase cannot drift into a local minimum.
        """
        T = self.length
        width = min(width, T - 1)
        if width >= T - 1:
            return self
        n_win = T - width

        def cut(x):
            # (B, T, ...) -> (B * n_win, width + 1, ...)
            w = x.unfold(1, width + 1, 1)  # (B, n_win, ..., width+1)
            w = w.movedim(-1, 2)
            return w.reshape(-1, width + 1, *x.shape[2:])

        mask = cut(self.mask)
        start_ok = mask[:, 0].all(dim=-1)
        keep = start_ok.nonzero().squeeze(-1)
        ids = tuple(f"{i}@{k}" for i in self.ids for k in range(n_win))
        out = Trajectories(
            cut(self.t)[keep], cut(self.y)[keep], mask[keep],
            None if self.u is None else cut(self.u)[keep],
            self.state_names, self.input_names,
            tuple(ids[i] for i in keep.tolist()), self.state_shapes,
        )
        return out


def state_scales(train: Trajectories, floor: float = 1e-8) -> torch.Tensor:
    """Per-state standard deviation over the training data (masked), the loss's units.

    Returned per stacked column; the columns of a field state share one scale.
    """
    shapes = train.state_shapes or tuple(() for _ in train.state_names)
    cols = []
    off = 0
    for shp in shapes:
        size = math.prod(shp) if shp else 1
        y = train.y[..., off:off + size]
        m = train.mask[..., off:off + size].to(y.dtype)
        count = m.sum().clamp_min(1)
        mean = (y * m).sum() / count
        std = ((((y - mean) ** 2) * m).sum() / count).sqrt()
        scale = std if std > floor else mean.abs().clamp_min(1.0)
        cols.append(scale.expand(size))
        off += size
    return torch.cat(cols)


def named_scales(train: Trajectories) -> dict[str, float]:
    """One scale per state and input name (for closure inputs), plus the horizon."""
    per_col = state_scales(train)
    shapes = train.state_shapes or tuple(() for _ in train.state_names)
    out, off = {}, 0
    for name, shp in zip(train.state_names, shapes):
        out[name] = float(per_col[off])
        off += math.prod(shp) if shp else 1
    us = input_scales(train)
    if us is not None:
        out.update({n: float(v) for n, v in zip(train.input_names, us)})
    out["__time__"] = float((train.t[:, -1] - train.t[:, 0]).abs().max().clamp_min(1e-8))
    return out


def input_scales(train: Trajectories) -> torch.Tensor | None:
    if train.u is None:
        return None
    std = train.u.reshape(-1, train.u.shape[-1]).std(dim=0)
    return torch.where(std > 1e-8, std, torch.ones_like(std))
