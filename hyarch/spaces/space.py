"""``Space``: a validated search space with its data split into tensors."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from hyarch.core.data import Trajectories, named_scales
from hyarch.core.train import TrainConfig
from hyarch.spaces.schema import SpaceSpec

SPLITS = ("train", "val", "test", "ood")


@dataclass(frozen=True)
class Space:
    """A problem as hyarch sees it. ``splits`` maps train/val/test/ood to trajectories.

    Test and OOD data are for reports only: nothing that ranks or prompts reads them.
    """

    spec: SpaceSpec
    path: Path | None
    splits: dict[str, Trajectories]

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def states(self) -> tuple[str, ...]:
        return tuple(self.spec.states)

    @property
    def inputs(self) -> tuple[str, ...]:
        return tuple(self.spec.inputs)

    @property
    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {n: tuple(v.shape) for n, v in self.spec.states.items() if v.shape}

    @property
    def truth(self) -> dict[str, float]:
        return dict(self.spec.truth)

    @property
    def train(self) -> Trajectories:
        return self.splits["train"]

    @property
    def val(self) -> Trajectories:
        return self.splits["val"]

    def scales(self) -> dict[str, float]:
        return named_scales(self.train)

    def prior_path(self) -> Path | None:
        if not self.spec.prior:
            return None
        p = Path(self.spec.prior)
        if not p.is_absolute() and self.path is not None:
            p = self.path.parent / p
        return p

    def train_config(self, **overrides) -> TrainConfig:
        t = self.spec.training
        kw = dict(
            method=t.method, substeps=t.substeps, lr=t.lr, lr_physical=t.lr_physical,
            windows=tuple(t.windows), stage_iters=t.stage_iters, final_iters=t.final_iters,
            patience=t.patience, restarts=t.restarts, lbfgs=t.lbfgs,
            gauss_newton=t.gauss_newton,
            regularizers=dict(t.regularizers), adaptive=t.adaptive,
            max_seconds=t.max_seconds, seed=t.seed,
        )
        kw.update({k: v for k, v in overrides.items() if v is not None})
        return TrainConfig(**kw)
