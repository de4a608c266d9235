"""The candidate contract: ``HybridModel``, physical parameters and states by name.

A candidate file defines ``class Model(HybridModel)`` with ``setup()`` and
``derivatives(t, s, u)``. The core instantiates it with the space's state and input
names, optionally with ``replicas > 1``: then every physical parameter and closure holds
R independent copies, states arrive with shape ``(R, batch)``, and one vectorised rollout
trains R restarts at once.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

if TYPE_CHECKING:
    from hyarch.core.closure import Closure


class ContractError(Exception):
    """A candidate does not satisfy the contract (names, shapes, declarations)."""


class UnknownName(ContractError, AttributeError):
    """``s.foo`` for a state (or input) the space does not declare. Also an
    AttributeError, so ``hasattr(s, "foo")`` and ``getattr(s, "foo", default)`` work."""


class Named:
    """Tensors addressed by name: ``s.theta`` or ``s["theta"]``.

    Kept deliberately thin: it is built on every derivative evaluation.
    """

    __slots__ = ("_values", "_kind")

    def __init__(self, values: dict[str, torch.Tensor], kind: str = "state") -> None:
        object.__setattr__(self, "_values", values)
        object.__setattr__(self, "_kind", kind)

    def __getattr__(self, name: str) -> torch.Tensor:
        if name.startswith("__"):  # copy, pickle and torch.compile probe dunders
            raise AttributeError(name)
        try:
            return self._values[name]
        except KeyError:
            raise UnknownName(
                f"unknown {self._kind} {name!r}; valid names: {', '.join(self._values) or '(none)'}"
            ) from None

    def __getitem__(self, name: str) -> torch.Tensor:
        return self.__getattr__(name)

    def __contains__(self, name: str) -> bool:
        return name in self._values

    def __iter__(self):
        return iter(self._values)

    def keys(self):
        return self._values.keys()

    def items(self):
        return self._values.items()

    def __len__(self) -> int:
        return len(self._values)

    def __setattr__(self, name, value):
        raise ContractError(f"{self._kind}s are read-only inside derivatives()")

    def __repr__(self) -> str:
        return f"Named({', '.join(self._values)})"


_NO_INPUTS = Named({}, "input")


@dataclass(frozen=True)
class ParameterSpec:
    """A declared physical parameter: initial value, bounds and how it is transformed."""

    name: str
    init: float
    lower: float
    upper: float
    log: bool
    description: str = ""
    unit: str = ""
    # a random effect: the value varies by trajectory (subject) around this population
    # value, on the log scale for log-transformed parameters and additively otherwise
    individual: bool = False

    def to_raw(self, value: float) -> float:
        lo, hi, v = self.lower, self.upper, value
        if self.log:
            lo, hi, v = math.log(lo), math.log(hi), math.log(v)
        frac = (v - lo) / (hi - lo)
        frac = min(max(frac, 1e-6), 1 - 1e-6)
        return math.log(frac / (1 - frac))

    def from_raw(self, raw: torch.Tensor) -> torch.Tensor:
        frac = torch.sigmoid(raw)
        if self.log:
            lo, hi = math.log(self.lower), math.log(self.upper)
            value = torch.exp(lo + (hi - lo) * frac)
        else:
            value = self.lower + (self.upper - self.lower) * frac
        # rounding (exp of log(lower) in float32) must not step outside the bounds
        return value.clamp(self.lower, self.upper)


class _Pending:
    """What ``parameter()`` returns until ``__setattr__`` knows the attribute's name."""

    def __init__(self, init, bounds, log, description, unit, individual=False):
        self.args = (init, bounds, log, description, unit, individual)


class HybridModel(nn.Module):
    """Base class of every candidate. Subclasses implement ``setup`` and ``derivatives``.

    ``self.parameter(init, bounds)`` declares a bounded physical parameter (a smooth
    sigmoid transform, in log space for positive bounds spanning two decades or more);
    ``Closure(...)`` attributes are the neural parts.
    """

    def __init__(
        self,
        states: Sequence[str],
        inputs: Sequence[str] = (),
        *,
        replicas: int = 1,
        scales: dict[str, float] | None = None,
        shapes: dict[str, tuple[int, ...]] | None = None,
    ) -> None:
        super().__init__()
        object.__setattr__(self, "_specs", {})
        self.state_names: tuple[str, ...] = tuple(states)
        self.input_names: tuple[str, ...] = tuple(inputs)
        shapes = shapes or {}
        self.state_shapes: tuple[tuple[int, ...], ...] = tuple(
            tuple(shapes.get(n, ())) for n in self.state_names
        )
        self._layout = []
        offset = 0
        for n, shp in zip(self.state_names, self.state_shapes):
            size = math.prod(shp) if shp else 1
            self._layout.append((n, offset, size, shp))
            offset += size
        self.state_size = offset
        # all states scalar: one unbind/stack per derivative call instead of S slices
        self._scalar_states = all(not shp for shp in self.state_shapes)
        self._state_set = frozenset(self.state_names)
        self._cache_depth = 0
        self.replicas = int(replicas)
        self.scales = dict(scales or {})
        self._raw = nn.ParameterDict()
        from hyarch.core.closure import _BUILDING

        token = _BUILDING.set(self)
        try:
            self.setup()
        finally:
            _BUILDING.reset(token)
        if not self.state_names:
            raise ContractError("a model needs at least one state")

    # -- the contract ---------------------------------------------------------------
    def setup(self) -> None:  # pragma: no cover - overridden by candidates
        """Declare physical parameters and closures."""

    def derivatives(self, t: torch.Tensor, s: Named, u: Named) -> dict[str, torch.Tensor]:
        raise ContractError("the candidate must define derivatives(self, t, s, u)")

    def parameter(
        self,
        init: float,
        bounds: tuple[float, float],
        *,
        log: bool | None = None,
        description: str = "",
        unit: str = "",
        individual: bool = False,
    ) -> Any:
        """Declare a physical parameter; assign it to an attribute to name it.

        ``individual=True`` makes it a random effect: each trajectory (subject) has its own
        value, the population value times exp(eta) for a log-scaled parameter (plus eta
        otherwise), eta ~ N(0, omega^2) with omega fitted (see ``hyarch.core.twin``)."""
        return _Pending(init, bounds, log, description, unit, individual)

    # -- parameter plumbing ---------------------------------------------------------
    def __setattr__(self, name: str, value: Any) -> None:
        if isinstance(value, _Pending):
            self._declare(name, *value.args)
            return
        super().__setattr__(name, value)

    def __getattr__(self, name: str) -> Any:
        specs = self.__dict__.get("_specs")
        if specs is not None and name in specs:
            return self._physical_value(name)
        return super().__getattr__(name)

    def _physical_value(self, name: str) -> torch.Tensor:
        spec = self._specs[name]
        value = spec.from_raw(self._raw[name])
        twin = self._modules.get("twin_")
        if spec.individual and twin is not None and twin.bound is not None:
            return twin.individual_value(spec, value)
        if self.replicas == 1:
            return value.reshape(())
        return value.reshape(self.replicas, 1)

    @contextlib.contextmanager
    def cached_parameters(self):
        """Transform the physical parameters once for a whole rollout.

        Inside the block ``self.omega0_sq`` is a plain instance attribute holding the
        bounded value (still differentiable with respect to the raw parameter), so the
        hundreds of derivative calls of a rollout skip the sigmoid and the lookup; every
        Closure's layers are prepared once the same way.
        Re-entrant; the values are dropped on exit, so an optimizer step is never missed.
        """
        closures = contextlib.ExitStack()
        if self._cache_depth == 0:
            for name in self._specs:
                self.__dict__[name] = self._physical_value(name)
            for c in self.closures():  # their layers too, scaling folded in
                closures.enter_context(c.prepared())
        self.__dict__["_cache_depth"] = self._cache_depth + 1
        try:
            with closures:
                yield self
        finally:
            self.__dict__["_cache_depth"] -= 1
            if self._cache_depth == 0:
                for name in self._specs:
                    self.__dict__.pop(name, None)

    def _declare(self, name, init, bounds, log, description, unit, individual=False) -> None:
        try:
            lo, hi = (float(b) for b in bounds)
            init = float(init)
        except (TypeError, ValueError):
            raise ContractError(
                f"parameter {name!r}: bounds must be two numbers (lo, hi), got {bounds!r}"
            ) from None
        if not (lo < hi):
            raise ContractError(f"parameter {name!r}: lower bound {lo} must be below upper {hi}")
        if not (lo <= init <= hi):
            raise ContractError(f"parameter {name!r}: init {init} is outside bounds ({lo}, {hi})")
        if log is None:
            log = lo > 0 and hi / lo >= 100
        if log and lo <= 0:
            raise ContractError(f"parameter {name!r}: log=True needs a positive lower bound")
        spec = ParameterSpec(name, init, lo, hi, bool(log), description, unit, bool(individual))
        self._specs[name] = spec
        raw = torch.full((self.replicas,), spec.to_raw(init), dtype=torch.get_default_dtype())
        self._raw[name] = nn.Parameter(raw)

    @property
    def parameter_specs(self) -> dict[str, ParameterSpec]:
        return dict(self._specs)

    def physical_values(self, replica: int = 0) -> dict[str, float]:
        """Fitted physical parameters by name (for one replica)."""
        with torch.no_grad():
            return {
                n: float(s.from_raw(self._raw[n])[replica]) for n, s in self._specs.items()
            }

    def set_physical(self, values: dict[str, float | Sequence[float]]) -> None:
        """Set physical parameters by value (a float, or one per replica)."""
        with torch.no_grad():
            for name, v in values.items():
                spec = self._specs[name]
                vs = [v] * self.replicas if isinstance(v, (int, float)) else list(v)
                raw = torch.tensor([spec.to_raw(float(x)) for x in vs], dtype=self._raw[name].dtype)
                self._raw[name].copy_(raw.to(self._raw[name].device))

    def without_closure(self, path: str) -> None:
        """Put the closure's null value, with no weights, where the Closure at ``path`` is
        (a name as ``named_modules`` gives it: ``net``, ``nets.0``, ``nets.prey``). A
        distilled candidate calls this in its ``setup`` after its hybrid's: the wiring
        stays, the network goes, whatever shape that ``setup`` has."""
        from hyarch.core.closure import Closure, RemovedClosure

        try:
            old = self.get_submodule(path)
        except AttributeError:
            raise ContractError(f"no module {path!r} to remove") from None
        if not isinstance(old, Closure):
            raise ContractError(f"{path!r} is a {type(old).__name__}, not a Closure")
        parent_path, _, leaf = path.rpartition(".")
        parent = self.get_submodule(parent_path) if parent_path else self
        parent._modules[leaf] = RemovedClosure(old.input_names, outputs=old.outputs,
                                               kind=old.kind)

    def closures(self) -> list[Closure]:
        from hyarch.core.closure import Closure

        return [m for m in self.modules() if isinstance(m, Closure)]

    def physical_raw_parameters(self) -> list[nn.Parameter]:
        return list(self._raw.values())

    def individual_parameters(self) -> list[nn.Parameter]:
        """Per-trajectory unknowns: random-effect deviations and fitted initial states."""
        twin = self._modules.get("twin_")
        return [] if twin is None else list(twin.parameters())

    def neural_parameters(self) -> list[nn.Parameter]:
        skip = {id(p) for p in self._raw.values()} | {
            id(p) for p in self.individual_parameters()}
        return [p for p in self.parameters() if id(p) not in skip]

    @property
    def individual_names(self) -> tuple[str, ...]:
        return tuple(n for n, s in self._specs.items() if s.individual)

    def observe(self, s: Named, u: Named) -> dict[str, torch.Tensor] | None:
        """What is measured, by name, from the states (an observation model).

        The default, None, means the measured quantities are states themselves (those with
        a data column). A candidate overrides it when the data are functions of the states:
        a tumour's diameter from its volume, reported cases from incidence, a sensor's gain
        and offset (declared with ``parameter`` like any other)."""
        return None

    def n_neural_params(self) -> int:
        """Neural parameters of one replica."""
        return sum(p.numel() for p in self.neural_parameters()) // max(self.replicas, 1)

    # -- the vector field used by the integrators ----------------------------------
    def vector_field(
        self, t: torch.Tensor, y: torch.Tensor, u: torch.Tensor | None
    ) -> torch.Tensor:
        """dy/dt for stacked states ``y`` (..., S); ``u`` (..., I) or None."""
        s = Named(self.split_states(y), "state")
        if u is None or not self.input_names:
            uu = _NO_INPUTS
        else:
            uu = Named(dict(zip(self.input_names, u.unbind(-1))), "input")
        out = self.derivatives(t, s, uu)
        return self.stack_derivatives(out, y)

    def split_states(self, y: torch.Tensor) -> dict[str, torch.Tensor]:
        """Views of the stacked states (..., S) by name, field states in their own shape."""
        if self._scalar_states:
            return dict(zip(self.state_names, y.unbind(-1)))
        lead = y.shape[:-1]
        out = {}
        for n, off, size, shp in self._layout:
            if not shp:
                out[n] = y[..., off]
            else:
                out[n] = y[..., off:off + size].reshape(*lead, *shp)
        return out

    def stack_derivatives(self, out: Any, y: torch.Tensor) -> torch.Tensor:
        if not isinstance(out, dict):
            raise ContractError(
                f"derivatives() must return a dict {{state: tensor}}, got {type(out).__name__}"
            )
        names = self.state_names
        lead = y.shape[:-1]
        if self._scalar_states and out.keys() == self._state_set:
            cols = [out[n] for n in names]
            if all(isinstance(v, torch.Tensor) and v.shape == lead for v in cols):
                return cols[0].unsqueeze(-1) if len(cols) == 1 else torch.stack(cols, dim=-1)
        if out.keys() != self._state_set:
            missing = [n for n in names if n not in out]
            extra = [n for n in out if n not in names]
            parts = []
            if missing:
                parts.append(f"missing derivative for state(s) {', '.join(map(repr, missing))}")
            if extra:
                parts.append(f"unknown state(s) {', '.join(map(repr, extra))}")
            raise ContractError(
                "derivatives() " + "; ".join(parts) + f" (states are {', '.join(names)})"
            )
        cols = []
        for n, _off, size, shp in self._layout:
            v = out[n]
            if not isinstance(v, torch.Tensor):
                v = torch.as_tensor(v, dtype=y.dtype, device=y.device)
            shape = (*lead, *shp)
            if v.shape != shape:
                try:
                    v = v.expand(shape)
                except RuntimeError:
                    raise ContractError(
                        f"derivative of {n!r} has shape {tuple(v.shape)}, expected {tuple(shape)}"
                        " (one value per trajectory)"
                    ) from None
            cols.append(v.reshape(*lead, size))
        if len(cols) == 1:
            return cols[0]
        return torch.cat(cols, dim=-1)
