"""Tuning one candidate's training settings with an inner, single-objective Optuna study.

The search's own study is multi-objective, where Optuna cannot prune; tuning is a separate
single-objective study on the selection error (the part of the training split that
training stops on; never the validation split that ranks) with pruning. Each trial trains at low
fidelity first (a short final phase), reports that to a median pruner, and only trials
that are not pruned pay for the full training. Tuned: learning rates, the closure-norm
weight and the closures' width (for candidates with networks).
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import optuna

from hyarch.evaluate import evaluate_source
from hyarch.record import Evaluation
from hyarch.spaces.space import Space

optuna.logging.set_verbosity(optuna.logging.WARNING)

_HIDDEN = re.compile(r"hidden\s*=\s*\(([\d\s,]+)\)")


def scale_widths(source: str, scale: float) -> str:
    """The candidate's code with every ``hidden=(...)`` layer width scaled."""
    def repl(m: re.Match) -> str:
        sizes = [max(2, int(round(int(x) * scale))) for x in m.group(1).split(",") if x.strip()]
        return "hidden=(" + ", ".join(map(str, sizes)) + ("," if len(sizes) == 1 else "") + ")"
    return _HIDDEN.sub(repl, source)


@dataclass(frozen=True)
class TuneResult:
    untuned: dict[str, Any]
    tuned: dict[str, Any]
    settings: dict[str, Any]  # the best training overrides (and width_scale)
    source: str  # the candidate code with the tuned widths
    trials: int
    pruned: int


def _val(result: dict[str, Any]) -> float:
    ev = Evaluation.from_dict(result)
    # the selection split: tuning is a training choice, and the validation split that
    # ranks candidates must stay unseen by every training choice
    v = ev.selection_nmse if ev.ok else None
    return math.inf if v is None else v


def tune(space: Space, source: str, n_trials: int, *, seed: int = 0, device: str = "cpu",
         overrides: dict[str, Any] | None = None,
         progress: Callable[[str], None] | None = None) -> TuneResult:
    """Tune ``source``'s training settings over ``n_trials``; compare with untuned."""
    say = progress or (lambda m: None)
    base = dict(overrides or {})
    t0 = time.perf_counter()
    untuned = evaluate_source(space, source, device=device, overrides=base).result
    one = time.perf_counter() - t0  # a full training: what the final retraining costs
    say(f"untuned: selection nmse {_val(untuned):.3g} ({one:.0f} s); {n_trials} trial(s) to go,"
        f" each one short training and, unless pruned, a full one")
    has_net = "Closure(" in source
    cfg = space.train_config(**base)
    low_iters = max(cfg.final_iters // 4, 20)

    def objective(trial: optuna.Trial) -> float:
        settings: dict[str, Any] = {
            "lr": trial.suggest_float("lr", 1e-4, 3e-2, log=True),
            "lr_physical": trial.suggest_float("lr_physical", 3e-3, 3e-1, log=True),
        }
        src = source
        if has_net:
            settings["regularizers"] = {
                "closure_norm": trial.suggest_float("closure_norm", 1e-6, 1e-1, log=True)}
            scale = trial.suggest_categorical("width_scale", [0.5, 1.0, 2.0])
            src = scale_widths(source, scale)
        low = evaluate_source(space, src, device=device,
                              overrides={**base, **settings, "final_iters": low_iters}).result
        trial.report(_val(low), step=0)
        if trial.should_prune():
            raise optuna.TrialPruned()
        full = evaluate_source(space, src, device=device, overrides={**base, **settings}).result
        value = _val(full)
        return value if math.isfinite(value) else 1e9

    study = optuna.create_study(
        direction="minimize", sampler=optuna.samplers.TPESampler(seed=seed),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0))
    t_trials = time.perf_counter()

    def report(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        k = trial.number + 1
        what = (f"selection nmse {trial.value:.3g} with {trial.params}"
                if trial.state == optuna.trial.TrialState.COMPLETE else trial.state.name.lower())
        left = (time.perf_counter() - t_trials) / k * (n_trials - k) + one
        say(f"trial {k}/{n_trials}: {what}; about {left:.0f} s left")

    study.optimize(objective, n_trials=n_trials, catch=(RuntimeError, ValueError),
                   callbacks=[report])
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    pruned = sum(1 for t in study.trials if t.state == optuna.trial.TrialState.PRUNED)
    if not done:
        return TuneResult(untuned, untuned, {}, source, len(study.trials), pruned)
    best = study.best_params
    settings = {k: v for k, v in best.items() if k in ("lr", "lr_physical")}
    src = source
    if "closure_norm" in best:
        settings["regularizers"] = {"closure_norm": best["closure_norm"]}
    if "width_scale" in best:
        src = scale_widths(source, best["width_scale"])
    tuned = evaluate_source(space, src, device=device, overrides={**base, **settings}).result
    if _val(tuned) > _val(untuned):  # keep the untuned training when tuning did not help
        tuned, settings, src = untuned, {}, source
    out_settings = {**settings, **({"width_scale": best["width_scale"]}
                                   if "width_scale" in best and src != source else {})}
    return TuneResult(untuned, tuned, out_settings, src, len(study.trials), pruned)
