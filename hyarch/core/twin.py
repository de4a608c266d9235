"""Digital twins: per-trajectory unknowns, latent states and what is measured.

A model of *this* patient or *this* plant meets data that the plain core cannot take:

- **latent states**: a state with no data column (a drug's depot, an epidemic's exposed
  compartment), or one missing at a trajectory's start. Its initial value comes from a rule
  of the space (a constant, or an expression in the inputs and measured values at the
  start, e.g. ``gut: Dose``) or is fitted per trajectory within bounds;
- **observation models**: the candidate's optional ``observe(s, u)`` returns the measured
  quantities by name (a concentration from an amount, reported cases from incidence); the
  loss and every metric are on what was measured;
- **individual parameters**: ``parameter(..., individual=True)`` is a random effect, one
  value per trajectory (subject): the population value times exp(eta) for a positive
  parameter (eta added otherwise), eta ~ N(0, omega^2), omega fitted with the population
  values (see ``hyarch.core.twin_fit``).

``Twin`` holds the per-trajectory unknowns as a submodule of the candidate (``model.twin_``),
so they are saved, copied and trained with it. ``hyarch.core.fields.rollout`` calls it: the
start of every state, and the measured quantities from the integrated states.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import torch
from torch import nn

from hyarch.core.data import Trajectories
from hyarch.core.model import ContractError, HybridModel, Named, ParameterSpec

# names an initial-value expression may call, besides the inputs and measured quantities
FUNCTIONS = {"exp": torch.exp, "log": torch.log, "sqrt": torch.sqrt, "abs": torch.abs,
             "minimum": torch.minimum, "maximum": torch.maximum, "pi": math.pi}
OMEGA_START = 0.3  # a random effect's initial spread: 30% between subjects


@dataclass(frozen=True)
class Initial:
    """How one state's value at a trajectory's start is found: a constant ``value``, an
    ``expr`` in the inputs and measured quantities at the start, or fitted per trajectory
    within ``bounds`` from ``init`` (neither value nor expr)."""

    value: float | None = None
    expr: str | None = None
    bounds: tuple[float, float] | None = None
    init: float | None = None

    @property
    def fitted(self) -> bool:
        return self.value is None and self.expr is None

    @classmethod
    def parse(cls, state: str, raw) -> Initial:
        """From a space's ``initial``: a number, an expression, or ``{init, bounds}``."""
        where = f"initial value of state {state!r}"
        if isinstance(raw, bool):
            raise ValueError(f"{where}: {raw!r} is not a number, an expression or"
                             " {init, bounds}")
        if isinstance(raw, (int, float)):
            if not math.isfinite(raw):
                raise ValueError(f"{where}: {raw!r} is not finite")
            return cls(value=float(raw))
        if isinstance(raw, str):
            try:
                compile(raw, "<initial>", "eval")
            except SyntaxError as e:
                raise ValueError(f"{where}: {raw!r} is not an expression: {e.msg}") from None
            return cls(expr=raw)
        if isinstance(raw, Mapping):
            extra = set(raw) - {"init", "bounds"}
            b = raw.get("bounds")
            ok = (isinstance(b, (list, tuple)) and len(b) == 2 and all(
                isinstance(x, (int, float)) and not isinstance(x, bool) for x in b)
                and b[0] < b[1])
            if extra or not ok:
                raise ValueError(f"{where}: a fitted start is {{init, bounds: [lo, hi]}} with"
                                 f" lo < hi, got {dict(raw)!r}")
            lo, hi = float(b[0]), float(b[1])
            init = float(raw.get("init", (lo + hi) / 2))
            if not lo <= init <= hi:
                raise ValueError(f"{where}: init {init} is outside [{lo}, {hi}]")
            return cls(bounds=(lo, hi), init=init)
        raise ValueError(f"{where}: {raw!r} is not a number, an expression or {{init, bounds}}")


def _deviate(spec: ParameterSpec, population: torch.Tensor, eta: torch.Tensor) -> torch.Tensor:
    """An individual's value: log-normal around the population value (its median) for a
    positive parameter, the population value plus eta otherwise; within the bounds."""
    value = torch.exp(torch.log(population) + eta) if spec.lower > 0 else population + eta
    return value.clamp(spec.lower, spec.upper)


def _strip(trajectory_id: str) -> str:
    """A curriculum window's id (``train3@5``) belongs to its trajectory (``train3``)."""
    return trajectory_id.split("@", 1)[0]


class Twin(nn.Module):
    """Per-trajectory unknowns of a candidate: random-effect deviations ``eta[name]`` and
    fitted starts ``x0[state]``, each (replicas, trajectories); the spreads ``log_omega``
    (not trained by gradient: ``twin_fit`` updates them between its steps)."""

    def __init__(self, model: HybridModel, ids: Iterable[str],
                 initial: Mapping[str, Initial] | None = None) -> None:
        super().__init__()
        if any(model.state_shapes):
            raise ContractError("latent states, observation models and individual parameters"
                                " need scalar states")
        self.ids: tuple[str, ...] = tuple(dict.fromkeys(_strip(i) for i in ids))
        self._index = {i: k for k, i in enumerate(self.ids)}  # read by every rollout
        self.initial: dict[str, Initial] = dict(initial or {})
        unknown = [s for s in self.initial if s not in model.state_names]
        if unknown:
            raise ContractError(f"initial values given for {unknown}, which are not states"
                                f" ({', '.join(model.state_names)})")
        R, G = model.replicas, len(self.ids)
        self.eta = nn.ParameterDict(
            {n: nn.Parameter(torch.zeros(R, G)) for n in model.individual_names})
        self.log_omega = nn.ParameterDict(
            {n: nn.Parameter(torch.full((R,), math.log(OMEGA_START)), requires_grad=False)
             for n in model.individual_names})
        self.x0 = nn.ParameterDict()
        self._x0_specs: dict[str, ParameterSpec] = {}
        for state, rule in self.initial.items():
            if rule.fitted:
                self._add_fitted(state, rule, R, G)
        self.bound: tuple[torch.Tensor, torch.Tensor] | None = None
        self.trailing = False  # per-trajectory values as (..., B, 1): for observe()

    def _add_fitted(self, state: str, rule: Initial, R: int, G: int) -> None:
        lo, hi = rule.bounds
        spec = ParameterSpec(f"{state}0", rule.init, lo, hi, lo > 0 and hi / lo >= 100)
        self._x0_specs[state] = spec
        self.x0[state] = nn.Parameter(torch.full((R, G), spec.to_raw(rule.init)))

    def fitted_parameters(self) -> list[nn.Parameter]:
        return [*self.eta.values(), *self.x0.values()]

    # -- which trajectories a rollout is about ------------------------------------------
    @contextlib.contextmanager
    def bound_to(self, data: Trajectories):
        """Per-trajectory values for ``data``'s rows; a trajectory the twin has not fitted
        (a new subject) gets the population value and the starts' initial guesses."""
        index = [self._index.get(_strip(i), -1) for i in data.ids]
        idx = torch.tensor([max(k, 0) for k in index], dtype=torch.long, device=data.t.device)
        known = torch.tensor([k >= 0 for k in index], device=data.t.device)
        before, self.bound = self.bound, (idx, known)
        try:
            yield self
        finally:
            self.bound = before

    def _per_trajectory(self, table: torch.Tensor) -> torch.Tensor:
        """(R, G) -> (R, B) for the bound rows; unknown trajectories read 0."""
        idx, known = self.bound
        return table[:, idx] * known.to(table.dtype)

    def _shape(self, value: torch.Tensor) -> torch.Tensor:
        """(R, B) -> (B,) for one replica; (..., B, 1) while observing."""
        if value.shape[0] == 1:
            value = value[0]
        return value.unsqueeze(-1) if self.trailing else value

    def individual_value(self, spec: ParameterSpec, population: torch.Tensor) -> torch.Tensor:
        eta = self._per_trajectory(self.eta[spec.name])
        return self._shape(_deviate(spec, population.reshape(-1, 1), eta))

    def omegas(self, replica: int = 0) -> dict[str, float]:
        return {n: math.exp(float(v[replica])) for n, v in self.log_omega.items()}

    def values_by_trajectory(self, model: HybridModel, replica: int = 0) -> dict[str, dict]:
        """Every fitted trajectory's individual parameters and fitted starts."""
        out: dict[str, dict] = {}
        with torch.no_grad():
            for name in model.individual_names:
                spec = model.parameter_specs[name]
                pop = spec.from_raw(model._raw[name])[replica]
                v = _deviate(spec, pop, self.eta[name][replica])
                out[name] = dict(zip(self.ids, (float(x) for x in v)))
            for state, spec in self._x0_specs.items():
                v = spec.from_raw(self.x0[state][replica])
                out[f"{state}(0)"] = dict(zip(self.ids, (float(x) for x in v)))
        return out

    # -- the start of every state -------------------------------------------------------
    def initial_state(self, model: HybridModel, data: Trajectories) -> torch.Tensor:
        """(B, S) for one replica, (R, B, S) for several: each state's start."""
        first = {n: data.y[:, 0, j] for j, n in enumerate(data.state_names)}
        seen = {n: data.mask[:, 0, j] for j, n in enumerate(data.state_names)}
        env: dict = dict(FUNCTIONS)
        env.update(first)
        if data.u is not None:
            env.update({n: data.u[:, 0, k] for k, n in enumerate(data.input_names)})
        R, B = model.replicas, data.n
        cols = []
        for state in model.state_names:
            rule = self.initial.get(state)
            if rule is not None and rule.value is not None:
                v = torch.full((B,), rule.value, dtype=data.y.dtype, device=data.y.device)
            elif rule is not None and rule.expr is not None:
                v = self._evaluate(state, rule.expr, env, B, data.y)
            elif state in first:
                if state in self.x0:
                    v = torch.where(seen[state], first[state], self._fitted(state))
                elif not bool(seen[state].all()):
                    raise ContractError(
                        f"state {state!r} is not measured at the start of trajectory"
                        f" {data.ids[int((~seen[state]).nonzero()[0])]!r}; give it an initial"
                        " value or bounds to fit it in the space's states.<name>.initial")
                else:
                    v = first[state]
            elif state in self.x0:
                v = self._fitted(state)
            else:
                raise ContractError(
                    f"state {state!r} has no data column and no initial value; give one in"
                    f" the space (states.{state}.initial: a number, an expression of inputs"
                    " or measured quantities, or {init, bounds} to fit it per trajectory)")
            v = v.expand(R, B) if R > 1 else v.reshape(B) if v.ndim < 2 else v[0]
            cols.append(v)
        return torch.stack(cols, dim=-1)

    def _fitted(self, state: str) -> torch.Tensor:
        spec = self._x0_specs[state]
        idx, known = self.bound
        raw = self.x0[state][:, idx]
        raw = torch.where(known, raw, torch.full_like(raw, spec.to_raw(spec.init)))
        return spec.from_raw(raw)  # (R, B)

    @staticmethod
    def _evaluate(state, expr, env, B, like) -> torch.Tensor:
        try:
            v = eval(compile(expr, "<initial>", "eval"), {"__builtins__": {}}, env)  # noqa: S307
        except NameError as e:
            raise ContractError(f"initial value of {state!r}: {e}; it may use the inputs and"
                                " measured quantities at the start, and"
                                f" {', '.join(k for k in FUNCTIONS)}") from None
        v = torch.as_tensor(v, dtype=like.dtype, device=like.device)
        return v.expand(B) if v.ndim == 0 else v

    # -- what was measured ----------------------------------------------------------------
    def observed(self, model: HybridModel, states: torch.Tensor,
                 data: Trajectories) -> torch.Tensor:
        """(..., B, T, S) states -> (..., B, T, O) measured quantities in data's order."""
        names = data.state_names
        s = Named(dict(zip(model.state_names, states.unbind(-1))), "state")
        u = (Named({}, "input") if data.u is None else
             Named(dict(zip(data.input_names, data.u.unbind(-1))), "input"))
        self.trailing = True
        try:
            out = model.observe(s, u)
        finally:
            self.trailing = False
        if out is None:
            missing = [n for n in names if n not in model.state_names]
            if missing:
                raise ContractError(f"the data measure {missing}, which are not states; the"
                                    " candidate's observe(s, u) must return them")
            pos = [model.state_names.index(n) for n in names]
            return states[..., pos]
        if not isinstance(out, dict):
            raise ContractError(f"observe() must return a dict {{quantity: tensor}}, got"
                                f" {type(out).__name__}")
        missing = [n for n in names if n not in out]
        if missing:
            raise ContractError(f"observe() does not return {missing} (it returns"
                                f" {sorted(out)}; the data measure {list(names)})")
        shape = states.shape[:-1]
        cols = []
        for n in names:
            v = torch.as_tensor(out[n], dtype=states.dtype, device=states.device)
            try:
                cols.append(v.expand(shape))
            except RuntimeError:
                raise ContractError(f"observe()[{n!r}] has shape {tuple(v.shape)}, expected"
                                    f" {tuple(shape)} (one value per time point)") from None
        return torch.stack(cols, dim=-1)


def is_twin(model: HybridModel, names: Iterable[str] | None = None) -> bool:
    """Does this candidate on data measuring ``names`` need the twin machinery?"""
    names = tuple(names) if names is not None else model.state_names
    overrides = type(model).observe is not HybridModel.observe
    return bool(model.individual_names) or overrides or names != model.state_names


def attach(model: HybridModel, ids: Iterable[str],
           initial: Mapping[str, Initial] | None = None) -> Twin:
    """Give ``model`` per-trajectory unknowns for trajectories ``ids``."""
    twin = Twin(model, ids, initial)
    device = next(iter(model.parameters()), torch.zeros(())).device
    model.twin_ = twin.to(device)
    return model.twin_
