"""Scores computed by the parent from what the child predicted.

The child never held the observations of the validation, test or OOD splits; here they
meet its predictions. Fit metrics (raw and normalised, per state), the reduced model's
fit and ``reduced_fit`` are computed from the data; the candidate's own claims (fitted
parameter values, neural parameter count, closure share and the field-based regularizers,
which only the model can compute) are accepted as finite numbers or dropped.
"""

from __future__ import annotations

from typing import Any

import torch

from hyarch.core.data import state_scales
from hyarch.core.metrics import fit_scores, normalised_mse, parameter_errors, per_trajectory_nmse
from hyarch.core.starts import without_first
from hyarch.sandbox.protocol import Reply, number, text

MAX_PARAMETERS = 500


def _failed(reason: str, seconds: float, **extra) -> dict[str, Any]:
    from hyarch.sandbox.runner import failed

    return failed(reason, seconds, **extra)


def score_reply(space, reply: Reply, seconds: float, source: str | None = None
                ) -> dict[str, Any]:
    from hyarch.sandbox.runner import scrub

    h = reply.header
    status = h.get("status")
    if status == "failed":
        extra = {}
        if isinstance(h.get("traceback"), str):
            extra["traceback"] = scrub(h["traceback"], 4000)
        return _failed(scrub(str(h.get("reason") or "the candidate failed")), seconds, **extra)
    if status != "ok":
        return _failed("the evaluation process returned a result with no valid status", seconds)
    scales = state_scales(space.train)
    metrics, red = {}, {}
    preds = {}
    # the selection split (part of train, used by training to stop) is scored too: choices
    # made for training (tuning) read it, never the validation split that ranks
    _, selection = space.fit_and_selection()
    scored = {**space.splits, "selection": selection}
    population: dict[str, Any] = {}
    for name, data in scored.items():
        full = reply.arrays.get(f"{name}.full")
        reduced = reply.arrays.get(f"{name}.reduced")
        if full is None or reduced is None:
            return _failed(f"the evaluation process returned no predictions for the {name!r}"
                           " split", seconds)
        if (n := space.conditioning(name)) and name != "selection":
            # a twin conditioned on these samples of new individuals: scored on the rest
            data = without_first(data, n)
            scored[name] = data
            pop = reply.arrays.get(f"{name}.population")
            if pop is None:
                return _failed(f"the evaluation process returned no population prediction"
                               f" for the {name!r} split", seconds)
            population[name] = _split_metrics(torch.as_tensor(pop, dtype=data.y.dtype),
                                              data, scales)
        pf = torch.as_tensor(full, dtype=data.y.dtype)
        pr = torch.as_tensor(reduced, dtype=data.y.dtype)
        preds[name] = (pf, pr)
        metrics[name] = _split_metrics(pf, data, scales)
        red[name] = _split_metrics(pr, data, scales)
    params = _parameters(h.get("parameters"))
    if params is None:
        return _failed("the evaluation process returned malformed parameters", seconds)
    regs: dict[str, Any] = {}
    claims = h.get("regularizers") if isinstance(h.get("regularizers"), dict) else {}
    for k in ("closure_norm", "decorrelation", "sensitivity"):
        regs[k] = number(claims.get(k))
    val = scored["val"]
    rf = float(normalised_mse(preds["val"][1], val, scales))
    regs["reduced_fit"] = rf if rf == rf and rf not in (float("inf"),) else None
    share = number(h.get("closure_share"))
    n_neural = h.get("n_neural_params")
    if not isinstance(n_neural, int) or isinstance(n_neural, bool) or n_neural < 0:
        n_neural = None
    if source is not None:  # a claim of fewer weights than the code declares is not taken
        from hyarch.sandbox.checks import network_floor

        floor = network_floor(source)
        if floor and (n_neural is None or n_neural < floor):
            n_neural = floor
    training = {}
    if isinstance(h.get("training"), dict):
        t = h["training"]
        training = {k: number(t.get(k)) for k in ("iterations", "train_nmse", "selection_nmse",
                                                   "seconds", "substeps")}
        if isinstance(t.get("stopped"), str):
            training["stopped"] = t["stopped"][:200]
    integration = {}
    raw_int = h.get("integration") if isinstance(h.get("integration"), dict) else {}
    for name in space.splits:
        a = raw_int.get(name)
        if isinstance(a, dict):
            sub = a.get("substeps")
            integration[name] = {
                "method": text(a.get("method", ""), 40),
                "substeps": sub if isinstance(sub, int) and not isinstance(sub, bool) else None,
                "error": number(a.get("error")), "converged": a.get("converged") is True}
            if isinstance(a.get("failed"), str):  # this split could not be predicted: why
                integration[name]["failed"] = text(a["failed"], 300)
    status, reason = "ok", None
    if metrics["val"]["nmse"] is None:
        status, reason = "failed", "the trained model's validation rollout is NaN or infinite"
    own = number(h.get("seconds"))
    specs = {}
    raw_specs = h.get("parameter_specs") if isinstance(h.get("parameter_specs"), dict) else {}
    for name in params:
        sp = raw_specs.get(name)
        if isinstance(sp, dict):
            specs[name] = {"init": number(sp.get("init")), "lower": number(sp.get("lower")),
                           "upper": number(sp.get("upper")), "log": sp.get("log") is True,
                           "unit": text(sp.get("unit", ""), 40)}
    return {
        "status": status,
        "reason": reason,
        "parameters": params,
        "param_rel_error": parameter_errors(
            {k: v for k, v in params.items() if v is not None}, space.truth),
        "parameter_specs": specs,
        "metrics": metrics,
        "reduced": red,
        "regularizers": regs,
        "closure_share": None if share is None else max(share, 0.0),
        "n_neural_params": n_neural,
        "training": training,
        "integration": integration,
        "seconds": round(own if own is not None else seconds, 3),
        **({"twin": {**twin, **({"population": population,
                                 "condition": space.spec.splits.condition}
                                if population else {})}}
           if (twin := _twin(h.get("twin"))) else {}),
    }


def _numbers(d: Any, limit: int = MAX_PARAMETERS) -> dict[str, float | None]:
    if not isinstance(d, dict):
        return {}
    return {text(k, 100): number(v) for k, v in list(d.items())[:limit]}


def _twin(t: Any) -> dict[str, Any]:
    """A twin's claims: likelihood, noise levels, spreads, per-trajectory values (numbers
    only; the parent recomputes every fit metric itself)."""
    if not isinstance(t, dict):
        return {}
    out: dict[str, Any] = {k: number(t.get(k)) for k in ("neg2loglik", "aic", "bic")}
    for k in ("n_obs", "n_estimated", "n_random_effects", "n_fitted_starts"):
        v = t.get(k)
        out[k] = v if isinstance(v, int) and not isinstance(v, bool) and v >= 0 else None
    out["sigma"], out["omega"] = _numbers(t.get("sigma")), _numbers(t.get("omega"))
    unc = t.get("uncertainty") if isinstance(t.get("uncertainty"), dict) else {}
    flags = unc.get("flags") if isinstance(unc.get("flags"), list) else []
    out["uncertainty"] = {"parameters": _numbers(unc.get("parameters")),
                          "states": _numbers(unc.get("states")),
                          "flags": [text(f, 200) for f in flags[:50]]}
    ind = t.get("individual") if isinstance(t.get("individual"), dict) else {}
    out["individual"] = {text(k, 100): _numbers(v, 100_000)
                         for k, v in list(ind.items())[:MAX_PARAMETERS]}
    return out


def _split_metrics(pred: torch.Tensor, data, scales) -> dict[str, Any]:
    out = fit_scores(pred, data, scales)
    finite = bool(torch.isfinite(pred[:, 1:][data.mask[:, 1:]]).all())
    out["diverged"] = not finite
    # one normalised MSE per trajectory (or per block of one, when the split has fewer than
    # MIN_FOLDS trajectories): the ranking's rule compares them
    per = per_trajectory_nmse(pred, data, scales)
    out["per_trajectory_nmse"] = [number(float(v)) for v in per]
    return out


def _parameters(p: Any) -> dict[str, float] | None:
    if p is None:
        return {}
    if not isinstance(p, dict) or len(p) > MAX_PARAMETERS:
        return None
    out = {}
    for k, v in p.items():
        if not isinstance(k, str) or not k.isidentifier() or len(k) > 100:
            return None
        x = number(v)
        if x is None and v is not None:
            return None
        out[k] = x
    return out
