"""What the child does with a job: build the candidate, train it, predict, report claims.

This module runs where candidate code runs (in the isolated child, or in the caller's
process with ``--no-sandbox``). It sees the training split and a selection split for
early stopping; of every split it is scored on it sees only initial states, time grids
and inputs. It returns predictions; the parent computes every score from them.
"""

from __future__ import annotations

import io
import json
import math
import time
import traceback
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np
import torch

from hyarch.core.candidate import check_forward, load_model_class, make_factory
from hyarch.core.data import Trajectories
from hyarch.core.fields import accurate_rollout, reduced, rollout
from hyarch.core.model import ContractError
from hyarch.core.progress import TrainingProgress
from hyarch.core.regularizers import (
    Context,
    closure_norm,
    closure_share,
    decorrelation,
    sensitivity,
)
from hyarch.core.starts import estimate_starts, refit_from_starts
from hyarch.core.train import TrainingError, fit
from hyarch.core.twin import is_twin
from hyarch.core.twin_fit import condition, fit_twin

# regularizers that need the model, computed on the child's own rollout of the validation
# starts (no observation needed); ``reduced_fit`` needs the data and is computed by the parent
MODEL_REGULARIZERS = {"closure_norm": closure_norm, "decorrelation": decorrelation,
                      "sensitivity": sensitivity}


def traj_to_job(tr: Trajectories, *, starts_only: bool = False, keep: int = 1
                ) -> dict[str, Any]:
    """A split as plain tensors; with ``starts_only`` the observations after the first
    ``keep`` points are zeroed: the child gets initial states (and, for a twin meeting new
    individuals, the samples it conditions on), grids, inputs and the mask only."""
    y = tr.y.detach().cpu()
    if starts_only:
        y = torch.zeros_like(y)
        y[:, :keep] = tr.y[:, :keep]
    return {"t": tr.t.detach().cpu(), "y": y, "mask": tr.mask.detach().cpu(),
            "u": None if tr.u is None else tr.u.detach().cpu(),
            "state_names": list(tr.state_names), "input_names": list(tr.input_names),
            "ids": list(tr.ids), "state_shapes": [list(s) for s in tr.state_shapes]}


def traj_from_job(d: dict[str, Any]) -> Trajectories:
    return Trajectories(d["t"], d["y"], d["mask"], d["u"], tuple(d["state_names"]),
                        tuple(d["input_names"]), tuple(d["ids"]),
                        tuple(tuple(s) for s in d["state_shapes"]))


def child_space(job: dict[str, Any]):
    """The space as the child sees it: no truth, no data source, and splits ``train`` (the
    fitting part) and ``val`` (the selection split used for early stopping)."""
    from hyarch.spaces.schema import SpaceSpec
    from hyarch.spaces.space import Space

    spec = SpaceSpec.model_validate(json.loads(job["spec"]))
    return Space(spec=spec, path=None,
                 splits={"train": traj_from_job(job["fit"]), "val": traj_from_job(job["selection"])},
                 fixed_scales=dict(job["scales"]))


def failed_header(reason: str, start: float, **extra) -> dict[str, Any]:
    if len(reason) > 4000:  # the parent cuts it again; this keeps the reply small
        reason = reason[:4000] + f" ... [{len(reason) - 4000} more characters cut]"
    extra = {k: (v[-4000:] if isinstance(v, str) else v) for k, v in extra.items()}
    return {"status": "failed", "reason": reason,
            "seconds": round(time.perf_counter() - start, 3), **extra}


def _num(x) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None


def run_job(job: dict[str, Any], lockdown=None,
            progress: Callable[[TrainingProgress], None] | None = None,
            ) -> tuple[dict, dict[str, np.ndarray], bytes | None]:
    """Train and predict. Returns (header, arrays, weights); never raises for the candidate.

    ``lockdown``, if given, is called after everything hyarch needs is imported and before
    the first line of candidate code runs. ``progress``, if given, hears how training goes
    (``TrainingProgress``) and when predicting, distilling and profiling begin."""
    start = time.perf_counter()
    say = progress or (lambda event: None)
    space = child_space(job)
    cfg = space.train_config(device=job.get("device", "cpu"), **(job.get("overrides") or {}))
    filename = job.get("filename", "model.py")
    requests = {name: traj_from_job(d) for name, d in job["predict"].items()}
    conditioning = {k: int(v) for k, v in (job.get("condition") or {}).items()}
    post = job.get("post") or {}
    if post.get("distill") or post.get("profile"):
        import hyarch.distill  # noqa: F401 - imports read files: before the lockdown
    # (torch imports torch._dynamo lazily at the first optimizer step: reading is allowed)
    if lockdown is not None:
        lockdown()
    try:
        cls = load_model_class(job["source"], filename)
        factory = make_factory(cls, space.states, space.inputs, space.scales(), space.shapes)
        model = factory(replicas=1)
        train = space.train
        twin = space.twin or is_twin(model, train.state_names)
        if twin:  # latent states, an observation model or individual parameters
            _check_twin(model, train, space.initial_rules())
        else:
            check_forward(model, train.y0(), train.t[:, 0],
                          None if train.u is None else train.u[:, 0])
        if job.get("check_only"):
            return {"status": "ok", "reason": None, "checked": True}, {}, None
        if twin:
            fitted = fit_twin(factory, train, space.val, cfg, initial=space.initial_rules(),
                              progress=progress)
            train_substeps = cfg.substeps
        else:
            fitted = fit(factory, train, space.val, cfg, progress=progress)
            fitted, train_substeps = _refit_accurately(
                factory, train, space.val, cfg, fitted,
                progress=progress and (lambda e: progress(replace(e, fit=2))))
            # scored from estimated starts: a network-free candidate is fitted from them too
            fitted = refit_from_starts(
                factory, train, space.val, replace(cfg, substeps=train_substeps), fitted,
                conditioning.get("val", 0),
                progress=progress and (lambda e: progress(replace(e, fit=3))))
    except (ContractError, TrainingError) as e:
        return failed_header(str(e), start), {}, None
    except SyntaxError as e:
        return failed_header(f"syntax error at line {e.lineno}: {e.msg}", start), {}, None
    except MemoryError:
        return failed_header("the candidate ran out of memory (MemoryError)", start), {}, None
    except PermissionError as e:
        return failed_header(f"the sandbox refused an operation: {e} (a candidate may not"
                             " write files, open sockets, start processes or signal other"
                             " processes)", start), {}, None
    except Exception as e:  # the candidate's own bug: report where it happened
        tb = traceback.extract_tb(e.__traceback__)
        frames = [f for f in tb if f.filename == filename]
        where = f" at line {frames[-1].lineno} ({frames[-1].line})" if frames else ""
        return failed_header(f"{type(e).__name__}{where}: {e}", start,
                             traceback=traceback.format_exc(limit=8)), {}, None
    model = fitted.model.cpu()
    arrays: dict[str, np.ndarray] = {}
    scales = fitted.scales.cpu()
    header: dict[str, Any] = {"status": "ok", "reason": None}
    accuracy: dict[str, Any] = {}
    try:
        with torch.no_grad():
            for i, (name, data) in enumerate(requests.items()):
                say(TrainingProgress("predicting", i, len(requests)))
                try:
                    out, accuracy[name] = _predict(model, data, conditioning.get(name, 0),
                                                   scales, cfg)
                except Exception as e:  # noqa: BLE001
                    if name == "val":  # the split that ranks: the candidate fails, with why
                        raise
                    # another split (the test's, say) cannot fail a candidate that the
                    # ranking split scores: its predictions are NaN, scored as diverged
                    nan = np.full(tuple(data.y.shape), np.nan)
                    out = {"full": nan, "reduced": nan}
                    if conditioning.get(name):
                        out["population"] = nan
                    accuracy[name] = {"method": cfg.method, "substeps": None, "error": None,
                                      "converged": False,
                                      "failed": f"{type(e).__name__}: {e}"[:300]}
                arrays.update({f"{name}.{k}": v for k, v in out.items()})
        header.update(_claims(model, requests.get("val"), arrays, scales, cfg,
                              accuracy.get("val", {}).get("substeps")))
        if model._modules.get("twin_") is not None:
            header["twin"] = _twin_claims(model)
        header["integration"] = accuracy
    except Exception as e:  # noqa: BLE001 - a model that cannot predict fails with why
        return failed_header(f"prediction failed: {type(e).__name__}: {e}", start), {}, None
    header["training"] = {
        "iterations": fitted.iterations, "stopped": fitted.stopped,
        "substeps": train_substeps,
        "train_nmse": _num(fitted.train_loss), "selection_nmse": _num(fitted.val_loss),
        "seconds": round(fitted.seconds, 3),
    }
    # what is left of the wall-clock limit, less a reserve for saving and replying
    left = float(job.get("time_limit") or math.inf) - (time.perf_counter() - start) - 30.0
    header["post"] = _post(post, space, job["source"], model, header, say, cfg, scales, left)
    buf = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, buf)
    header["seconds"] = round(time.perf_counter() - start, 3)
    return header, arrays, buf.getvalue()


def _predict(model, data: Trajectories, points: int, scales, cfg
             ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """One split's predictions (full, reduced and, conditioned on ``points`` samples, from
    the observed start as ``population``), each integrated to SCORING_TOL whatever training
    used, and how accurately the full one was integrated."""
    out: dict[str, np.ndarray] = {}
    used, begin = model, None
    if points:
        if used._modules.get("twin_") is not None:  # new individuals: theirs
            with torch.enable_grad():
                used = condition(model, data, points, cfg)
        else:  # measured states: each start fitted to the first samples
            begin = estimate_starts(model, data, points, scales,
                                    method=cfg.method, substeps=cfg.substeps)
        pop, _ = accurate_rollout(model, data, scales, method=cfg.method,
                                  substeps=cfg.substeps)
        out["population"] = pop.double().numpy()
    pred, acc = accurate_rollout(used, data, scales, method=cfg.method,
                                 substeps=cfg.substeps, y0=begin)
    out["full"] = pred.double().numpy()
    if used.closures():
        with reduced(used):
            pred0, _ = accurate_rollout(used, data, scales, method=cfg.method,
                                        substeps=cfg.substeps, y0=begin)
        out["reduced"] = pred0.double().numpy()
    else:
        out["reduced"] = out["full"]
    return out, {"method": acc.method, "substeps": acc.substeps, "error": acc.error,
                 "converged": acc.converged}


MAX_TRAINING_SUBSTEPS = 16
# a hybrid is trained on at finer substeps at most this many times (each may stiffen its
# field a little more)
ACCURATE_ROUNDS = 2


def _refit_accurately(factory, train, selection, cfg, fitted, progress=None):
    """Train at the substeps the candidate will be scored at. Scores integrate every model
    to SCORING_TOL; a model fitted with a coarser integrator absorbed the integrator's
    error, and loses that fit when scored accurately:
    - a network-free candidate's parameters (the pendulum at one RK4 step per 0.5 s:
      omega0_sq 0.08% off, its validation error 20% above the noise floor), so it is
      fitted again with the substeps that reach the tolerance (a least-squares fit, about
      a second);
    - a hybrid's network, which learns to patch the coarse steps (the SEIR hybrid at one
      RK4 step per 2 days: validation nMSE 0.008 at one substep, 0.58 integrated
      accurately), so it is trained on from its weights, on the full horizon, at those
      substeps, until its own field is integrated accurately (ACCURATE_ROUNDS at most;
      its validation error, at the new substeps, only falls in that training).
    Step doubling on the training data finds the substeps. Returns the fit and its
    substeps."""
    from hyarch.core.rollout import FIXED_STEP

    substeps = cfg.substeps
    if cfg.method not in FIXED_STEP:
        return fitted, substeps
    hybrid = bool(fitted.model.closures())
    for _ in range(ACCURATE_ROUNDS if hybrid else 1):
        with torch.no_grad():
            _, acc = accurate_rollout(fitted.model, train.to(fitted.scales.device),
                                      fitted.scales, method=cfg.method, substeps=substeps,
                                      max_substeps=2 * MAX_TRAINING_SUBSTEPS)
        # the last doubling changed the rollout by less than the tolerance: its coarser
        # side is already that accurate
        need = max(substeps, (acc.substeps or substeps) // 2)
        if not acc.converged or need <= substeps:
            break
        # training's time budget is shared with the first fit (a quarter of it at least:
        # the candidate's wall-clock limit is at least 1.5 budgets and a minute)
        left = max(cfg.max_seconds - fitted.seconds, cfg.max_seconds / 4)
        finer = replace(cfg, substeps=need, max_seconds=left)
        if not hybrid:
            return fit(factory, train, selection, finer, progress=progress), need
        more = fit(factory, train, selection, finer, progress=progress, resume=fitted.model)
        fitted = replace(more, iterations=fitted.iterations + more.iterations,
                         seconds=fitted.seconds + more.seconds,
                         history=fitted.history + more.history,
                         history_seconds=fitted.history_seconds + tuple(
                             fitted.seconds + x for x in more.history_seconds))
        substeps = need
    return fitted, substeps


def _claims(model, val: Trajectories | None, arrays, scales, cfg,
            substeps: int | None) -> dict[str, Any]:
    """What only the model can tell: parameters, size, and the regularizers that compare
    its full and reduced vector fields along its own validation rollout."""
    out: dict[str, Any] = {"parameters": {k: _num(v) for k, v in model.physical_values().items()},
                           "n_neural_params": model.n_neural_params(), "regularizers": {},
                           "closure_share": 0.0,
                           "parameter_specs": {
                               n: {"init": _num(sp.init), "lower": _num(sp.lower),
                                   "upper": _num(sp.upper), "log": bool(sp.log),
                                   "unit": str(sp.unit)[:40]}
                               for n, sp in model.parameter_specs.items()}}
    if val is None:
        return out
    pred = torch.as_tensor(arrays["val.full"], dtype=val.y.dtype)
    if not bool(torch.isfinite(pred).all()):
        return out  # the parent reports the divergence
    if model._modules.get("twin_") is not None:
        # the regularizers compare vector fields along the states, latent ones included,
        # each in units of its own spread along the rollout
        with torch.no_grad():
            pred = rollout(model, val, method=cfg.method, substeps=substeps or cfg.substeps,
                           states=True)
        spread = pred.reshape(-1, pred.shape[-1]).std(dim=0)
        scales = torch.where(spread > 1e-8, spread, torch.ones_like(spread))
    ctx = Context(model, val, pred, scales, cfg.method, substeps or cfg.substeps)
    errors = {}
    for name, fn in MODEL_REGULARIZERS.items():
        try:
            with torch.no_grad():
                out["regularizers"][name] = _num(fn(ctx).reshape(-1)[0])
        except Exception as e:  # noqa: BLE001 - reported, not fatal
            out["regularizers"][name] = None
            errors[name] = str(e)[:300]
    if errors:
        out["regularizers"]["errors"] = errors
    if model.closures():
        with torch.no_grad():
            out["closure_share"] = _num(closure_share(ctx).reshape(-1)[0])
    return out


def _check_twin(model, train: Trajectories, initial) -> None:
    """A twin's first two points, from its start rules through observe(): right names,
    right shapes, finite values."""
    from hyarch.core.twin import attach
    from hyarch.core.twin_fit import prefixes

    probe = prefixes(train.select(list(range(min(2, train.n)))), 2)
    attach(model, probe.ids, initial)
    with torch.no_grad():
        out = rollout(model, probe)
    if not bool(torch.isfinite(out).all()):
        raise ContractError("the model's first step (from its initial values, through"
                            " observe()) gives NaN or infinite values")


def _twin_claims(model) -> dict[str, Any]:
    """A twin's likelihood, noise levels, spreads and each trajectory's own values."""
    twin = model.twin_
    fit_ = getattr(twin, "fit_", None)
    out: dict[str, Any] = {"individual": twin.values_by_trajectory(model)}
    if fit_ is not None:
        out.update(sigma=fit_.sigma, omega=fit_.omega, neg2loglik=_num(fit_.neg2loglik),
                   aic=_num(fit_.aic), bic=_num(fit_.bic), n_obs=fit_.n_obs,
                   n_estimated=fit_.n_estimated, n_random_effects=len(fit_.omega),
                   n_fitted_starts=fit_.n_starts, uncertainty=fit_.uncertainty)
    return out


def _with_and_without(model, data: Trajectories, scales: torch.Tensor, cfg
                      ) -> tuple[list[float], list[float]]:
    """log10 nMSE per fold of ``data``, the closures on and switched off."""
    from hyarch.core.metrics import per_trajectory_nmse

    def folds() -> list[float]:
        pred = rollout(model, data, method=cfg.method, substeps=cfg.substeps)
        per = [float(v) for v in per_trajectory_nmse(pred, data, scales.to(pred))]
        return [math.log10(max(v, 1e-30)) if math.isfinite(v) else math.inf for v in per]

    with torch.no_grad():
        on = folds()
        with reduced(model):
            off = folds()
    return on, off


def _post(post: dict, space, source: str, model, header: dict, say, cfg, scales,
          seconds_left: float = math.inf) -> dict[str, Any]:
    """Post-training steps that need the trained model: distillation (whose candidate
    terms are refitted in the core, within ``seconds_left``), profiles."""
    out: dict[str, Any] = {}
    opts = post.get("distill")
    if opts is not None and model._modules.get("twin_") is not None:
        if model.closures():
            out["distill_error"] = ("distillation fits closures to measured states; this"
                                    " candidate has latent states or an observation model")
        opts = None
    if opts is not None and model.closures():
        from hyarch.distill.policy import worth_distilling

        sel = (header.get("training") or {}).get("selection_nmse")
        try:
            on, off = _with_and_without(model, space.val, scales, cfg)
        except Exception:  # noqa: BLE001 - a rollout that fails without them: they matter
            on, off = [0.0], [math.inf]
        if opts.get("always") or worth_distilling(sel, on, off):
            say(TrainingProgress("distilling"))
            try:
                from hyarch.distill import distill_candidate

                out["distilled"] = distill_candidate(
                    space, source, model, refit=cfg, refit_seconds=seconds_left,
                    **{k: v for k, v in opts.items() if k != "always"})
            except Exception as e:  # noqa: BLE001 - distillation is a bonus, never fatal
                out["distill_error"] = f"{type(e).__name__}: {e}"
    opts = post.get("profile")
    if opts is not None:
        say(TrainingProgress("profiling"))
        try:
            from hyarch.distill.identifiability import profile

            out["profile"] = profile(model, space, **opts)
        except Exception as e:  # noqa: BLE001
            out["profile_error"] = f"{type(e).__name__}: {e}"
    return out
