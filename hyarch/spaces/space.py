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
    # the sandboxed child fits on part of the training split but keeps the loss's units
    fixed_scales: dict[str, float] | None = None

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
    def measured(self) -> tuple[str, ...]:
        """The data's columns: the states themselves, or what observe() returns."""
        return self.spec.measured

    @property
    def twin(self) -> bool:
        return self.spec.is_twin

    def conditioning(self, split: str) -> int:
        """How many leading samples of ``split``'s trajectories a prediction conditions on
        (and are then left out of its scores): for a twin, the space's
        ``splits.condition`` when the split holds individuals training never saw; without
        latent states, ``splits.condition`` for every split (each trajectory's start is
        estimated from them: ``hyarch.core.starts``); else 0."""
        n = self.spec.splits.condition
        data = self.splits.get(split)
        if not (n and data is not None):
            return 0
        if not self.twin:
            return n
        known = set(self.train.ids)
        return n if any(i not in known for i in data.ids) else 0

    def initial_rules(self) -> dict:
        """Each state's start rule (``hyarch.core.twin.Initial``) where the space gives one."""
        from hyarch.core.twin import Initial

        return {n: Initial.parse(n, v.initial) for n, v in self.spec.states.items()
                if v.initial is not None}

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

    def fit_and_selection(self) -> tuple[Trajectories, Trajectories]:
        """The training split cut into the part a candidate fits and the part it stops on.

        Candidates are ranked on ``val``, which training never sees, so early stopping and
        best-weight selection need observations of their own: every fifth training
        trajectory (at least one), or with a single training trajectory its last fifth
        (at least three points), starting from the observation at the cut.

        A twin fits the whole training split: its fit is a likelihood's optimum with no
        early stopping, and a subject held out of the fit would have no individual values.
        """
        if self.twin:
            return self.train, self.train
        return selection_split(self.train)

    def scales(self) -> dict[str, float]:
        if self.fixed_scales is not None:
            return dict(self.fixed_scales)
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


SELECTION_SHARE = 0.2


def selection_split(train: Trajectories) -> tuple[Trajectories, Trajectories]:
    """(fit, selection): see ``Space.fit_and_selection``."""
    n, T = train.n, train.length
    if n >= 2:
        k = max(1, round(n * SELECTION_SHARE))
        # evenly spread over the split, so that the selection is not one corner of it
        sel = sorted({min(n - 1, int((i + 0.5) * n / k)) for i in range(k)})
        fit = [i for i in range(n) if i not in sel]
        return train.select(fit), train.select(sel)
    cut = min(max(2, T - max(3, round(T * SELECTION_SHARE))), T - 2)
    if cut < 2:
        raise ValueError(f"a single training trajectory of {T} points is too short to hold"
                         " out a selection part (at least 5 points are needed)")
    return _time_slice(train, 0, cut + 1), _time_slice(train, cut, T)


def _time_slice(tr: Trajectories, a: int, b: int) -> Trajectories:
    from dataclasses import replace

    return replace(tr, t=tr.t[:, a:b], y=tr.y[:, a:b], mask=tr.mask[:, a:b],
                   u=None if tr.u is None else tr.u[:, a:b])
