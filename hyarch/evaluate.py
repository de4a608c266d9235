"""Train and score one candidate on a space: the record every proposer's code ends as."""

from __future__ import annotations

import math
import sys
import time
import traceback
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from hyarch.core.candidate import check_forward, load_model_class, make_factory
from hyarch.core.metrics import parameter_errors, split_scores
from hyarch.core.model import ContractError, HybridModel
from hyarch.core.regularizers import REGULARIZERS, Context, closure_share
from hyarch.core.train import FitResult, TrainingError, fit
from hyarch.spaces.space import SPLITS, Space


@dataclass(frozen=True)
class Outcome:
    """The JSON-able result and, when training succeeded, the trained model."""

    result: dict[str, Any]
    model: HybridModel | None = None
    fit: FitResult | None = None


# a closure that supplies less of the derivative than this learned nothing worth distilling
MIN_SHARE_TO_DISTILL = 0.02
# nor does the closure of a candidate that does not fit (validation nMSE above 1%): what it
# learned is a patch over a wrong model, and its distilled terms (often large cancelling
# coefficients) make unstable mechanistic candidates
MAX_NMSE_TO_DISTILL = 1e-2


def worth_distilling(result: dict[str, Any]) -> bool:
    """A closure that did real work (its share) in a candidate that fits (validation).

    The sandbox skips distilling the others (about a second each) and the search keeps
    only these."""
    val = ((result.get("metrics") or {}).get("val") or {}).get("nmse")
    return (float(result.get("closure_share") or 0.0) >= MIN_SHARE_TO_DISTILL
            and val is not None and float(val) <= MAX_NMSE_TO_DISTILL)


def failed(reason: str, seconds: float = 0.0, **extra) -> dict[str, Any]:
    return {
        "status": "failed", "reason": reason, "parameters": {}, "param_rel_error": {},
        "metrics": {}, "reduced": {}, "regularizers": {}, "closure_share": None,
        "n_neural_params": None, "seconds": round(seconds, 3), **extra,
    }


def _num(x: float) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None


def evaluate_source(
    space: Space, source: str, *, filename: str = "model.py", device: str = "cpu",
    overrides: dict[str, Any] | None = None,
) -> Outcome:
    """Train and score candidate code. Never raises for a bad candidate: a failed record.

    A bad training configuration is not the candidate's fault: its ValueError propagates.
    """
    start = time.perf_counter()
    cfg = space.train_config(device=device, **(overrides or {}))
    try:
        cls = load_model_class(source, filename)
        scales = space.scales()
        factory = make_factory(cls, space.states, space.inputs, scales, space.shapes)
        model = factory(replicas=1)
        train = space.train
        check_forward(model, train.y0(), train.t[:, 0], None if train.u is None else train.u[:, 0])
        fitted = fit(factory, train, space.val, cfg)
    except (ContractError, TrainingError) as e:
        return Outcome(failed(str(e), time.perf_counter() - start))
    except SyntaxError as e:
        return Outcome(failed(f"syntax error at line {e.lineno}: {e.msg}",
                              time.perf_counter() - start))
    except Exception as e:  # the candidate's own bug: report where it happened
        tb = traceback.extract_tb(e.__traceback__)
        frames = [f for f in tb if f.filename == filename]
        where = f" at line {frames[-1].lineno} ({frames[-1].line})" if frames else ""
        return Outcome(failed(f"{type(e).__name__}{where}: {e}", time.perf_counter() - start,
                              traceback=traceback.format_exc(limit=8)))
    result = score(space, fitted, cfg.method, cfg.substeps)
    result["seconds"] = round(time.perf_counter() - start, 3)
    return Outcome(result, fitted.model, fitted)


def score(space: Space, fitted: FitResult, method: str, substeps: int) -> dict[str, Any]:
    model = fitted.model.cpu()
    scales = fitted.scales.cpu()
    metrics, red_metrics = {}, {}
    preds = {}
    for name in SPLITS:
        data = space.splits.get(name)
        if data is None:
            continue
        full, red, pred = split_scores(model, data, scales, method=method, substeps=substeps)
        metrics[name], red_metrics[name], preds[name] = full, red, pred
    val = space.val
    ctx = Context(model, val, preds["val"], scales, method, substeps)
    regs = {}
    for name, fn in REGULARIZERS.items():
        try:
            with torch.no_grad():
                regs[name] = _num(fn(ctx).reshape(-1)[0])
        except Exception as e:  # a regularizer that cannot run is reported, not fatal
            regs[name] = None
            regs.setdefault("errors", {})[name] = str(e)
    with torch.no_grad():
        share = _num(closure_share(ctx).reshape(-1)[0]) if model.closures() else 0.0
    params = model.physical_values()
    status, reason = "ok", None
    if metrics["val"]["nmse"] is None:
        status, reason = "failed", "the trained model's validation rollout is NaN or infinite"
    return {
        "status": status,
        "reason": reason,
        "parameters": params,
        "param_rel_error": parameter_errors(params, space.truth),
        "metrics": metrics,
        "reduced": red_metrics,
        "regularizers": regs,
        "closure_share": share,
        "n_neural_params": model.n_neural_params(),
        "training": {
            "iterations": fitted.iterations, "stopped": fitted.stopped,
            "train_nmse": _num(fitted.train_loss), "val_nmse": _num(fitted.val_loss),
            "seconds": round(fitted.seconds, 3),
        },
    }


def evaluate(space: Space | str | Path, file: str | Path, **kw) -> dict[str, Any]:
    """Public entry: train and score the candidate file ``file`` on ``space``."""
    from hyarch.spaces.loader import load_space

    sp = space if isinstance(space, Space) else load_space(space)
    path = Path(file)
    return evaluate_source(sp, path.read_text(), filename=str(path), **kw).result


class _CallableModule(types.ModuleType):
    """Importing this module rebinds ``hyarch.evaluate`` from the public function to the
    module, so the module itself forwards calls: ``hyarch.evaluate(space, file)`` works
    whatever was imported first."""

    def __call__(self, space: Space | str | Path, file: str | Path, **kw) -> dict[str, Any]:
        return evaluate(space, file, **kw)


sys.modules[__name__].__class__ = _CallableModule
