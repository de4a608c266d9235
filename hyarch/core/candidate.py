"""Turning a candidate file into a model class, and checking it against the contract."""

from __future__ import annotations

import linecache
import types
from pathlib import Path

import torch

from hyarch.core.model import ContractError, HybridModel


def load_model_class(source: str, filename: str = "<candidate>") -> type[HybridModel]:
    """Execute candidate code in a fresh module and return its ``Model`` class."""
    module = types.ModuleType("hyarch_candidate")
    module.__file__ = filename
    # let tracebacks show the candidate's own lines, even though it is not a file on disk
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    code = compile(source, filename, "exec")
    exec(code, module.__dict__)  # noqa: S102 - candidates run in the sandbox's child process
    cls = module.__dict__.get("Model")
    if cls is None:
        raise ContractError("the file must define `class Model(HybridModel)`")
    if not (isinstance(cls, type) and issubclass(cls, HybridModel)):
        raise ContractError("`Model` must be a subclass of hyarch.HybridModel")
    return cls


def load_model_file(path: str | Path) -> tuple[type[HybridModel], str]:
    p = Path(path)
    try:
        source = p.read_text()
    except OSError as e:
        raise FileNotFoundError(f"{p}: cannot read candidate file: {e.strerror}") from None
    return load_model_class(source, str(p)), source


def make_factory(cls, states, inputs, scales, shapes=None):
    def factory(replicas: int = 1) -> HybridModel:
        return cls(states, inputs, replicas=replicas, scales=scales, shapes=shapes)
    return factory


def check_forward(model: HybridModel, y0: torch.Tensor, t0: torch.Tensor, u0) -> None:
    """One derivative evaluation: right names, right shapes, finite values."""
    with torch.no_grad():
        out = model.vector_field(t0, y0, u0)
    if out.shape != y0.shape:
        raise ContractError(f"derivatives have shape {tuple(out.shape)}, expected {tuple(y0.shape)}")
    if not bool(torch.isfinite(out).all()):
        raise ContractError("derivatives() returned NaN or infinite values at the first data point")
