"""Reloading a run's search space and a candidate's trained weights, to plot what it predicts.

Candidate code is untrusted and this runs it in the reviewer's own process, so only candidates
that finished with status ``ok`` are replayed (they ran to completion in the sandbox), their code
passes the sandbox's static checks again first (import allow-list, forbidden names), and
weights are loaded with ``weights_only=True``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hyarch.runs import CandidateRecord, Run


class ReplayError(Exception):
    """A candidate or a run's space that cannot be reloaded, with the reason."""


def load_run_space(run: Run):
    """The run's search space, from ``space`` in run.yaml (a path or a built-in name)."""
    from hyarch.spaces.errors import SpaceError
    from hyarch.spaces.loader import load_space

    ref = run.config().get("space")
    if not ref:
        raise ReplayError(f"{run.path / 'run.yaml'}: no 'space' field, cannot reload the data")
    candidates = [ref]
    p = Path(str(ref))
    if not p.is_absolute():
        candidates.append(run.path / p)
    last: Exception | None = None
    for c in candidates:
        try:
            return load_space(c)
        except (SpaceError, FileNotFoundError, OSError) as e:
            last = e
    raise ReplayError(f"{run.path / 'run.yaml'}: space {ref!r} cannot be loaded: {last}")


def build_model(rec: CandidateRecord, space, replicas: int = 1):
    """An untrained instance of the candidate's model on ``space``."""
    from hyarch.core.candidate import load_model_class, make_factory
    from hyarch.sandbox.checks import CheckError, check_source

    try:
        check_source(rec.source, str(rec.path / "model.py"))
    except CheckError as e:
        raise ReplayError(f"candidate {rec.id}: not replayed: {e}") from None
    cls = load_model_class(rec.source, str(rec.path / "model.py"))
    return make_factory(cls, space.states, space.inputs, space.scales(), space.shapes)(
        replicas=replicas)


def load_trained(rec: CandidateRecord, space):
    """The trained one-replica model of a finished candidate, or ReplayError with why not."""
    import torch

    if rec.status != "ok":
        raise ReplayError(f"candidate {rec.id} did not finish ({rec.status})")
    weights = rec.path / "weights.pt"
    if not weights.is_file():
        raise ReplayError(f"candidate {rec.id} has no weights.pt")
    try:
        model = build_model(rec, space)
        state = torch.load(weights, map_location="cpu", weights_only=True)
        model.load_state_dict(state)
    except Exception as e:  # a stale or mismatched checkpoint: say so, keep the report going
        raise ReplayError(f"candidate {rec.id}: cannot reload weights: {e}") from None
    model.eval()
    return model


def predict(model, space, split: str):
    """The model's rollout over one split's trajectories, as a (B, T, S) tensor."""
    import torch

    from hyarch.core.fields import rollout

    cfg = space.train_config()
    with torch.no_grad():
        return rollout(model, space.splits[split], method=cfg.method, substeps=cfg.substeps)


def predictions(rec: CandidateRecord, space, splits=("train", "test", "ood")) -> dict[str, Any]:
    """Rollouts of a finished candidate on each split the space has."""
    model = load_trained(rec, space)
    return {s: predict(model, space, s) for s in splits if s in space.splits}


def parameter_bounds(rec: CandidateRecord, space) -> dict[str, Any]:
    """The candidate's ParameterSpecs by name (bounds, init, unit), or {} if it will not build."""
    try:
        return build_model(rec, space).parameter_specs
    except Exception:  # ReplayError, or the candidate's own error: the table says "-"
        return {}
