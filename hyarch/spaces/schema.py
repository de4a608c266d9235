"""The search-space format, validated with pydantic (unknown keys are errors)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

MAX_WIDTH, MAX_DEPTH = 4096, 16  # a closure network's largest layer and depth


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Variable(Strict):
    description: str = ""
    unit: str = ""
    shape: tuple[int, ...] = ()
    # false: a latent state, with no data column (a drug's depot, an exposed compartment)
    measured: bool = True
    # the state's value at each trajectory's start when the data do not give it: a number,
    # an expression of the inputs and measured quantities at the start (``Dose``), or
    # {init, bounds: [lo, hi]} to fit it per trajectory (see hyarch.core.twin)
    initial: float | str | dict[str, Any] | None = None

    @field_validator("initial")
    @classmethod
    def _initial(cls, v):
        if v is not None:
            from hyarch.core.twin import Initial

            Initial.parse("", v)  # a ValueError that says what would be valid
        return v


class SimulatorData(Strict):
    name: str
    parameters: dict[str, float] = {}
    options: dict[str, Any] = {}
    noise: float = Field(0.0, ge=0.0, description="Gaussian noise, relative to each state's std")
    seed: int = 0
    trajectories: dict[str, int] = {"train": 25, "val": 25, "test": 25}
    # with splits.by: initial_condition, how many to simulate before splitting them
    count: int | None = Field(None, ge=2, le=100_000)
    ood: dict[str, Any] | None = None  # {trajectories: N, options: {...}} simulated apart

    @field_validator("trajectories")
    @classmethod
    def _trajectories(cls, v):
        unknown = set(v) - {"train", "val", "test", "ood"}
        if unknown:
            raise ValueError(f"unknown split(s) {sorted(unknown)}; valid: train, val, test, ood")
        if any(n < 1 or n > 100_000 for n in v.values()):
            raise ValueError("each split needs from 1 to 100000 trajectories")
        return v

    @field_validator("ood")
    @classmethod
    def _ood(cls, v):
        if v is None:
            return v
        unknown = set(v) - {"trajectories", "options"}
        if unknown:
            raise ValueError(f"unknown key(s) {sorted(unknown)} in ood; valid: trajectories,"
                             " options")
        if not isinstance(v.get("options", {}), dict):
            raise ValueError("ood.options must be a mapping of simulator options")
        n = v.get("trajectories", 25)
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise ValueError(f"ood.trajectories must be a positive integer, got {n!r}")
        return v


class CsvData(Strict):
    """A user's CSV: long format (a row per sample, an optional trajectory id column) or a
    single wide series (no id column: one trajectory). ``columns`` maps a state or input
    name to the CSV header when they differ (``{hare: "Hare (thousands)"}``)."""

    path: str
    time: str = "t"
    trajectory: str | None = None
    split: str | None = None
    columns: dict[str, str] = {}
    missing: Literal["error", "mask"] = "error"
    delimiter: str | None = Field(None, min_length=1, max_length=1)


class Data(Strict):
    simulator: SimulatorData | None = None
    csv: CsvData | None = None

    @model_validator(mode="after")
    def _one_source(self):
        if (self.simulator is None) == (self.csv is None):
            raise ValueError("give exactly one data source: 'simulator' or 'csv'")
        return self


class Splits(Strict):
    by: Literal["trajectory", "time", "initial_condition", "column", "simulator"] = "trajectory"
    fractions: dict[str, float] = {"train": 0.6, "val": 0.2, "test": 0.2}
    state: str | None = None  # for by: initial_condition
    ood_quantile: float = Field(0.7, gt=0.0, lt=1.0)
    # a twin meeting a new individual (a trajectory not in training): its first `condition`
    # samples estimate its own deviations and starts (the population held fixed), and the
    # rest are scored; 0 predicts it from the population values alone. Both are reported.
    # Without latent states: every predicted trajectory starts where the model best matches
    # its first `condition` samples (the first observation is as noisy as any other;
    # hyarch.core.starts), and the rest are scored. 0: rollouts start at the first sample.
    condition: int = Field(0, ge=0, le=10_000)
    in_distribution_quantile: float = Field(0.5, gt=0.0, le=1.0)
    seed: int = 0

    @field_validator("fractions")
    @classmethod
    def _fractions(cls, v):
        unknown = set(v) - {"train", "val", "test", "ood"}
        if unknown:
            raise ValueError(f"unknown split(s) {sorted(unknown)}; valid: train, val, test, ood")
        if "train" not in v or "val" not in v:
            raise ValueError("fractions need at least 'train' and 'val'")
        if abs(sum(v.values()) - 1.0) > 1e-6:
            raise ValueError(f"fractions must sum to 1, they sum to {sum(v.values()):g}")
        return v


class Term(Strict):
    """One hypothesis term: code for a derivative, with its parameters."""

    name: str
    expr: str
    parameters: dict[str, dict[str, Any]] = {}
    description: str = ""
    # the same mechanism in other states' derivatives, sharing its parameters: a flux that
    # leaves one compartment and enters another (predation, infection, a reaction) is one
    # hypothesis, chosen or left out as a whole. {state: expr}
    also: dict[str, str] = {}

    @field_validator("expr")
    @classmethod
    def _expr(cls, v):
        try:
            compile(v, "<hypothesis>", "eval")
        except SyntaxError as e:
            raise ValueError(f"expr {v!r} is not a Python expression: {e.msg}") from None
        return v

    @field_validator("also")
    @classmethod
    def _also(cls, v):
        for state, expr in v.items():
            try:
                compile(expr, "<hypothesis>", "eval")
            except SyntaxError as e:
                raise ValueError(f"also.{state}: {expr!r} is not a Python expression:"
                                 f" {e.msg}") from None
        return v

    def parts(self, state: str) -> list[tuple[str, str]]:
        """(state, expression) for every derivative the term enters; ``state`` is the one
        it is listed under."""
        return [(state, self.expr), *self.also.items()]

    @field_validator("parameters")
    @classmethod
    def _parameters(cls, v):
        """Each parameter as a candidate declares it: ``{init, bounds: [lo, hi]}``."""
        for name, p in v.items():
            if not name.isidentifier():
                raise ValueError(f"parameter name {name!r} is not a Python identifier")
            extra = set(p) - {"init", "bounds", "log", "description", "unit"}
            if extra:
                raise ValueError(f"parameter {name!r}: unknown key(s) {sorted(extra)}; valid:"
                                 " init, bounds, log, description, unit")
            b = p.get("bounds")
            ok = (isinstance(b, (list, tuple)) and len(b) == 2
                  and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in b))
            if not ok:
                raise ValueError(f"parameter {name!r}: bounds must be [lo, hi], got {b!r}")
            lo, hi = b
            if not lo < hi:
                raise ValueError(f"parameter {name!r}: lower bound {lo} is not below {hi}")
            init = p.get("init", (lo + hi) / 2)
            if isinstance(init, bool) or not isinstance(init, (int, float)) \
                    or not lo <= init <= hi:
                raise ValueError(f"parameter {name!r}: init {init!r} is not a number within"
                                 f" [{lo}, {hi}]")
        return v


class ClosureSite(Strict):
    state: str
    inputs: tuple[str, ...]
    hidden: tuple[tuple[int, ...], ...] = ((32, 32), (64, 64))
    kind: Literal["additive", "multiplicative"] = "additive"

    @field_validator("hidden")
    @classmethod
    def _hidden(cls, v):
        for h in v:
            if not 1 <= len(h) <= MAX_DEPTH or not all(1 <= w <= MAX_WIDTH for w in h):
                raise ValueError(f"hidden layers {list(h)}: from 1 to {MAX_DEPTH} layers of 1 to"
                                 f" {MAX_WIDTH} units each")
        return v


class Training(Strict):
    method: str = "rk4"
    substeps: int = Field(1, ge=1)
    lr: float = Field(5e-3, gt=0)
    lr_physical: float = Field(5e-2, gt=0)
    windows: tuple[int, ...] = (2, 4, 8, 16)
    stage_iters: int = Field(300, ge=0)
    final_iters: int = Field(1500, ge=0)
    patience: int = Field(100, ge=1)
    restarts: int = Field(4, ge=1)
    lbfgs: Literal["auto", "always", "never"] = "auto"
    gauss_newton: bool = True
    regularizers: dict[str, float] = {"closure_norm": 1e-3}
    adaptive: bool = False
    max_seconds: float = Field(600.0, gt=0)
    seed: int = 0

    @field_validator("method")
    @classmethod
    def _method(cls, v):
        from hyarch.core.rollout import check_method

        return check_method(v)  # a ValueError naming the valid solvers

    @field_validator("regularizers")
    @classmethod
    def _regularizers(cls, v):
        from hyarch.core.train import TRAIN_REGULARIZERS

        bad = [n for n in v if n not in TRAIN_REGULARIZERS]
        if bad:
            raise ValueError(f"cannot train on {bad}; valid: {', '.join(TRAIN_REGULARIZERS)}")
        return v


class Objectives(Strict):
    fit: Literal["val_nmse"] = "val_nmse"
    regularizer: str = "closure_share"
    complexity: Literal["n_neural_params", "none"] = "n_neural_params"
    closure_share_cap: float | None = None
    # plausible range per physical parameter: outside it a candidate is infeasible
    plausible: dict[str, tuple[float, float]] = {}


class Budget(Strict):
    candidates: int = Field(24, ge=1)
    minutes: float | None = None
    tokens: int | None = None
    cost: float | None = None
    patience_rounds: int = Field(4, ge=1)
    per_round: int = Field(4, ge=1)


class Llm(Strict):
    model: str = "gpt-4o-mini"
    temperature: float = Field(0.7, ge=0.0, le=2.0)
    samples: int = Field(2, ge=1)
    max_tokens: int = Field(2048, ge=64)  # a candidate file (~1k tokens) and a few sentences
    repair_attempts: int = Field(2, ge=0)
    timeout: float = Field(120.0, gt=0)
    prices: dict[str, float] = {}  # USD per million tokens: {input: .., output: ..}
    # code: the LLM writes the whole candidate file; structured: it fills a JSON form
    # (terms, new terms, closures) that hyarch's template renders (for small models)
    format: Literal["code", "structured"] = "code"


class SpaceSpec(Strict):
    name: str
    description: str = ""
    states: dict[str, Variable]
    inputs: dict[str, Variable] = {}
    # what the data measure when it is not the states themselves: each candidate's
    # observe(s, u) returns these by name (a concentration from an amount, reported cases)
    observations: dict[str, Variable] = {}
    data: Data
    splits: Splits = Splits()
    prior: str | None = None
    truth: dict[str, float] = {}
    hypotheses: dict[str, list[Term]] = {}
    closures: list[ClosureSite] = []
    training: Training = Training()
    objectives: Objectives = Objectives()
    budget: Budget = Budget()
    llm: Llm = Llm()
    # baseline candidate files by label (prior, neural_ode, aphynity); missing ones are
    # generated from the prior and the closure sites by ``hyarch baselines``
    baselines: dict[str, str] = {}
    notes: str = ""

    @field_validator("states")
    @classmethod
    def _states(cls, v):
        if not v:
            raise ValueError("declare at least one state")
        for name in v:
            if not name.isidentifier():
                raise ValueError(f"state name {name!r} is not a Python identifier")
        return v

    @property
    def measured(self) -> tuple[str, ...]:
        """The data's columns besides time and inputs: the observations, or the states
        that are not latent."""
        if self.observations:
            return tuple(self.observations)
        return tuple(n for n, v in self.states.items() if v.measured)

    @property
    def is_twin(self) -> bool:
        """Latent states, start rules or an observation model: fitted by
        ``hyarch.core.twin_fit`` (see docs/twins.md)."""
        return bool(self.observations) or any(
            not v.measured or v.initial is not None for v in self.states.values())

    @model_validator(mode="after")
    def _cross(self):
        names = set(self.states) | set(self.inputs)
        for name, v in self.states.items():
            if (not v.measured or self.observations) and v.initial is None:
                why = ("the data measure observations, not states" if self.observations
                       else "a latent state (measured: false)")
                raise ValueError(f"states.{name}: {why}: it needs an initial value: a number,"
                                 " an expression of the inputs and measured quantities, or"
                                 " {init, bounds} to fit it per trajectory")
            if v.shape and (v.initial is not None or not v.measured):
                raise ValueError(f"states.{name}: field states cannot be latent or have an"
                                 " initial rule")
        clash = set(self.observations) & (set(self.states) | set(self.inputs))
        if clash:
            raise ValueError(f"observations {sorted(clash)} are also states or inputs; name"
                             " what is measured apart from the states")
        if not self.measured:
            raise ValueError("nothing is measured: mark at least one state measured or"
                             " declare observations")
        both = set(self.states) & set(self.inputs)
        if both:
            raise ValueError(f"{sorted(both)} declared both as states and as inputs")
        for name in self.inputs:
            if not name.isidentifier():
                raise ValueError(f"input name {name!r} is not a Python identifier")
        if self.data.csv is not None:
            bad = [k for k in self.data.csv.columns if k not in names | set(self.observations)]
            if bad:
                raise ValueError(f"data.csv.columns: {bad} are not states or inputs"
                                 f" ({', '.join(sorted(names))})")
        for state in self.hypotheses:
            if state not in self.states:
                raise ValueError(
                    f"hypotheses: {state!r} is not a state (states: {', '.join(self.states)})"
                )
        for site in self.closures:
            if site.state not in self.states:
                raise ValueError(f"closures: state {site.state!r} is not a state")
            bad = [n for n in site.inputs if n not in names]
            if bad:
                raise ValueError(
                    f"closures: inputs {bad} are not states or inputs ({', '.join(sorted(names))})"
                )
        return self
