"""Loading a search space: YAML with line numbers, validation, data and splits."""

from __future__ import annotations

import csv
import hashlib
import inspect
import json
import math
import os
import pickle
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pydantic
import yaml

from hyarch.core.data import Trajectories
from hyarch.spaces.errors import SpaceError, suggest
from hyarch.spaces.schema import SpaceSpec
from hyarch.spaces.simulators import Simulated, SimulationError, get_simulator
from hyarch.spaces.space import Space


def builtin_dir(kind: str) -> Path:
    """``search_spaces`` or ``prompts``: beside the checkout, else shipped in the package."""
    here = Path(__file__).resolve().parents[2] / kind
    if here.is_dir():
        return here
    import importlib.util

    # an installed wheel ships them as data packages without __init__.py (namespace
    # packages), so ask the import system where the folder is
    spec = importlib.util.find_spec(f"hyarch.{kind}")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"hyarch.{kind} is not installed with the package")
    return Path(next(iter(spec.submodule_search_locations)))


def builtin_spaces() -> dict[str, Path]:
    return {p.stem: p for p in sorted(builtin_dir("search_spaces").glob("*.yaml"))}


def resolve_space_path(ref: str | Path) -> Path:
    p = Path(ref)
    if p.is_file():
        return p
    spaces = builtin_spaces()
    if str(ref) in spaces:
        return spaces[str(ref)]
    if p.suffix in (".yaml", ".yml") or "/" in str(ref):
        raise SpaceError(f"no such file; built-in spaces: {', '.join(spaces)}", file=str(ref))
    raise SpaceError(
        f"no search space named {str(ref)!r}{suggest(str(ref), spaces)};"
        f" built-in: {', '.join(spaces)}, or give a path to a YAML file"
    )


def _line_of(node, loc: tuple) -> int | None:
    """Line (1-based) of the YAML node at ``loc``, or of its nearest parent."""
    line = node.start_mark.line + 1 if node is not None else None
    for key in loc:
        if isinstance(node, yaml.MappingNode):
            nxt = None
            for k, v in node.value:
                if k.value == str(key):
                    nxt = v
                    line = k.start_mark.line + 1
                    break
            if nxt is None:
                return line
            node = nxt
        elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
            node = node.value[key]
            line = node.start_mark.line + 1
        else:
            return line
    return line


def _field_names(model, loc) -> list[str]:
    """Valid keys at ``loc`` (for suggestions on unknown keys)."""
    cls = model
    for key in loc[:-1]:
        if isinstance(key, int) or cls is None:
            continue
        f = getattr(cls, "model_fields", {}).get(key)
        if f is None:
            return []
        ann = f.annotation
        args = getattr(ann, "__args__", ())
        cands = [a for a in (ann, *args) if isinstance(a, type) and issubclass(a, pydantic.BaseModel)]
        if not cands:
            for a in args:
                cands += [b for b in getattr(a, "__args__", ()) if isinstance(b, type)
                          and issubclass(b, pydantic.BaseModel)]
        cls = cands[0] if cands else None
    return list(getattr(cls, "model_fields", {})) if cls is not None else []


def parse_spec(text: str, file: str = "<space>") -> SpaceSpec:
    """Parse and validate YAML text; every problem is reported with its line."""
    try:
        root = yaml.compose(text)
        raw = yaml.safe_load(text)
    except RecursionError:
        raise SpaceError("malformed YAML: nested too deeply", file=file) from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        problem = getattr(e, "problem", None) or str(e)
        raise SpaceError(f"malformed YAML: {problem}", file=file,
                         line=mark.line + 1 if mark else None) from None
    if not isinstance(raw, dict):
        raise SpaceError("a search space is a YAML mapping (name:, states:, data:, ...)",
                         file=file, line=1)
    _check_duplicate_keys(root, file)
    _check_numbers(raw, root, file)
    try:
        spec = SpaceSpec.model_validate(raw)
    except pydantic.ValidationError as e:
        lines = []
        first_line = None
        for err in e.errors():
            loc = tuple(err["loc"])
            line = _line_of(root, loc)
            first_line = first_line or line
            field = ".".join(str(x) for x in loc) or "(top level)"
            msg = err["msg"]
            if err["type"] == "extra_forbidden":
                valid = _field_names(SpaceSpec, loc)
                msg = f"unknown key {loc[-1]!r}{suggest(loc[-1], valid)}"
                if valid:
                    msg += f"; valid keys here: {', '.join(valid)}"
            elif err["type"] == "missing":
                msg = "required field is missing"
            lines.append(f"  line {line}: {field}: {msg}" if line else f"  {field}: {msg}")
        raise SpaceError(
            "invalid search space:\n" + "\n".join(lines), file=file, line=first_line
        ) from None
    _check_simulator_options(spec, root, file)
    return spec


def _check_duplicate_keys(node, file: str, path: tuple = ()) -> None:
    """YAML keeps the last of two equal keys without a word: here it is an error."""
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for k, v in node.value:
            key = str(k.value)
            line = k.start_mark.line + 1
            if key in seen:
                field = ".".join(str(x) for x in (*path, key))
                raise SpaceError(f"duplicate key {key!r} (first given on line {seen[key]}):"
                                 " YAML would keep only the last one", file=file, line=line,
                                 field=field)
            seen[key] = line
            _check_duplicate_keys(v, file, (*path, key))
    elif isinstance(node, yaml.SequenceNode):
        for i, v in enumerate(node.value):
            _check_duplicate_keys(v, file, (*path, i))


MAX_NUMBER = 1e300  # beyond: infinity in all but name
MAX_INT = 10**9  # no count, width or length in a space is this large (seeds excepted)


def _check_numbers(value, root, file: str, path: tuple = ()) -> None:
    """NaN and infinity are nowhere meaningful in a space (a split fraction, a parameter,
    a bound, a truth value); they are errors where they are written."""
    if isinstance(value, dict):
        for k, v in value.items():
            _check_numbers(v, root, file, (*path, k))
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _check_numbers(v, root, file, (*path, i))
    elif (isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_INT
          and not str(path[-1] if path else "").endswith("seed")):
        field = ".".join(str(x) for x in path)
        raise SpaceError(f"{value} is absurdly large for a size or count (at most {MAX_INT:,})",
                         file=file, line=_line_of(root, path), field=field)
    elif isinstance(value, float) and not (math.isfinite(value) and abs(value) <= MAX_NUMBER):
        field = ".".join(str(x) for x in path)
        raise SpaceError(f"{value!r} is not a usable number here (NaN and infinity are not"
                         " allowed in a space)", file=file, line=_line_of(root, path),
                         field=field)


def _simulator_options(fn) -> set[str] | None:
    """The option names a simulator reads (``options.get("x")``, ``options["x"]``, also in
    the module's helpers it hands ``options`` to), or None when they cannot be told."""
    import ast

    module = sys.modules.get(fn.__module__)
    try:
        tree = ast.parse(inspect.getsource(module))
    except (OSError, TypeError):
        return None
    reads: dict[str, set[str]] = {}
    calls: dict[str, set[str]] = {}
    for fdef in tree.body:
        if not isinstance(fdef, ast.FunctionDef):
            continue
        keys, callees = reads.setdefault(fdef.name, set()), calls.setdefault(fdef.name, set())
        for node in ast.walk(fdef):
            if isinstance(node, ast.Call):
                f = node.func
                if (isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name)
                        and f.value.id == "options" and f.attr in ("get", "pop")
                        and node.args and isinstance(node.args[0], ast.Constant)):
                    keys.add(str(node.args[0].value))
                elif isinstance(f, ast.Name) and any(
                        isinstance(a, ast.Name) and a.id == "options" for a in node.args):
                    callees.add(f.id)
            elif (isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name)
                  and node.value.id == "options" and isinstance(node.slice, ast.Constant)):
                keys.add(str(node.slice.value))
            elif (isinstance(node, ast.Name) and node.id == "options"
                  and not isinstance(node.ctx, ast.Load)):
                return None  # options rebound: cannot tell
    if fn.__name__ not in reads:
        return None
    out, todo, done = set(), [fn.__name__], set()
    while todo:
        name = todo.pop()
        if name in done:
            continue
        done.add(name)
        out |= reads.get(name, set())
        todo += list(calls.get(name, ()))
    return out


def _check_simulator_options(spec: SpaceSpec, root, file: str) -> None:
    sim = spec.data.simulator
    if sim is None:
        return
    try:
        fn = get_simulator(sim.name)
    except ValueError as e:
        raise SpaceError(str(e), file=file, line=_line_of(root, ("data", "simulator", "name")),
                         field="data.simulator.name") from None
    known = _simulator_options(fn)
    if not known:
        return
    given = [(("data", "simulator", "options"), sim.options)]
    if sim.ood and isinstance(sim.ood.get("options"), dict):
        given.append((("data", "simulator", "ood", "options"), sim.ood["options"]))
    for loc, options in given:
        for key in options:
            if key not in known:
                raise SpaceError(
                    f"unknown option {key!r} for simulator {sim.name!r}"
                    f"{suggest(key, sorted(known))}; valid: {', '.join(sorted(known))}",
                    file=file, line=_line_of(root, (*loc, key)),
                    field=".".join((*loc, key)))


def load_space(ref: str | Path) -> Space:
    """Load, validate and split a search space (a path or a built-in name)."""
    path = resolve_space_path(ref)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise SpaceError(f"cannot read: {e.strerror}", file=str(path)) from None
    except UnicodeDecodeError:
        raise SpaceError("not a UTF-8 text file", file=str(path)) from None
    spec = parse_spec(text, str(path))
    splits = build_splits(spec, path)
    space = Space(spec=spec, path=path, splits=splits)
    prior = space.prior_path()
    if prior is not None:
        line = _line_of(yaml.compose(text), ("prior",))
        if not prior.is_file():
            raise SpaceError(f"prior file {spec.prior!r} does not exist (looked at {prior})",
                             file=str(path), line=line, field="prior")
        check_prior(space)
    _check_hypotheses(spec, prior.read_text() if prior is not None else "", text, str(path))
    return space


HYPOTHESIS_MODULES = ("torch", "math")


def declared_parameters(source: str) -> set[str]:
    """The names a prior (or any candidate file) declares with ``self.X = self.parameter(``,
    read from its text, never run."""
    import re

    return set(re.findall(r"self\.(\w+)\s*=\s*self\.parameter\(", source))


def _check_hypotheses(spec: SpaceSpec, prior_source: str, text: str, file: str) -> None:
    """Every name in a hypothesis expression must be known, checked without running it:
    the term's parameters, the prior's, ``s.<state>``, ``u.<input>``, ``t``, ``torch`` and
    ``math``, and Python's builtins (``abs``, ``min``)."""
    import ast
    import builtins

    prior_params = declared_parameters(prior_source)
    root = None
    for state, terms in spec.hypotheses.items():
        for i, term in enumerate(terms):
            known = (set(term.parameters) | prior_params | {"s", "u", "t"}
                     | set(HYPOTHESIS_MODULES) | set(dir(builtins)))
            problem = None
            loc = ("hypotheses", state, i, "expr")
            for other in term.also:
                if other not in spec.states:
                    problem = (f"also: {other!r} is not a state"
                               f"{suggest(other, list(spec.states))}; states:"
                               f" {', '.join(spec.states)}")
                    loc = ("hypotheses", state, i, "also")
            nodes = [n for _, e in term.parts(state) for n in ast.walk(ast.parse(e, mode="eval"))]
            for node in ([] if problem else nodes):
                if isinstance(node, ast.Name) and node.id not in known:
                    valid = sorted(set(term.parameters) | prior_params)
                    problem = (f"unknown name {node.id!r}{suggest(node.id, valid + ['s', 'u'])};"
                               f" a term may use its parameters"
                               f" ({', '.join(term.parameters) or 'none'}), the prior's"
                               f" ({', '.join(sorted(prior_params)) or 'none'}), s.<state>,"
                               " u.<input>, t, torch and math")
                elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
                    base, attr = node.value.id, node.attr
                    if base == "s" and attr not in spec.states:
                        problem = (f"s.{attr}: {attr!r} is not a state"
                                   f"{suggest(attr, list(spec.states))}; states:"
                                   f" {', '.join(spec.states)}")
                    elif base == "u" and attr not in spec.inputs:
                        problem = (f"u.{attr}: {attr!r} is not an input"
                                   f"{suggest(attr, list(spec.inputs))}; inputs:"
                                   f" {', '.join(spec.inputs) or 'none'}")
                    elif base in HYPOTHESIS_MODULES and not hasattr(
                            __import__(base), attr):
                        problem = f"{base}.{attr} does not exist"
                if problem:
                    break
            if problem:
                root = root if root is not None else yaml.compose(text)
                raise SpaceError(f"hypothesis {term.name!r}: {problem}", file=file,
                                 line=_line_of(root, loc), field=".".join(map(str, loc)))


def check_prior(space: Space) -> None:
    """Vet the prior's code statically (syntax, imports, a ``Model`` class), naming the
    prior file and the line.

    Loading a space never runs the prior: it is code like any candidate's, and runs only
    in the sandbox (``hyarch validate --fit-prior``, or as the search's first candidate),
    where a contract error (wrong state names, shapes, NaN) fails it with its reason.
    """
    from hyarch.sandbox.checks import CheckError, check_source

    path = space.prior_path()
    assert path is not None
    try:
        source = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise SpaceError(f"cannot read the prior: {e}", file=str(path), field="prior") from None
    try:
        check_source(source, str(path))
    except CheckError as e:
        line = None
        if str(e).startswith("line "):
            try:
                line = int(str(e).split()[1].rstrip(":"))
            except ValueError:
                line = None
        if str(e).startswith("syntax error at line "):
            line = int(str(e).split()[4].rstrip(":"))
        raise SpaceError(f"the prior is not a valid candidate: {e}", file=str(path),
                         line=line, field="prior") from None


# -- data -------------------------------------------------------------------------------
def _to_traj(items: list[Simulated], spec: SpaceSpec, ids) -> Trajectories:
    if not items:
        raise SpaceError("a split has no trajectories")
    T = max(len(s.t) for s in items)
    S = items[0].y.shape[1]
    sizes = {n: math.prod(v.shape) if v.shape else 1 for n, v in spec.states.items()}
    if spec.is_twin:  # the columns are what is measured (scalar states or observations)
        sizes = {n: 1 for n in spec.measured}
    if S != sum(sizes.values()):
        raise SpaceError(
            f"the data has {S} value(s) per sample but the states need {sum(sizes.values())}"
            f" ({', '.join(f'{n}: {k}' for n, k in sizes.items())}); check states.*.shape"
            " against the simulator's options", field="states")
    t = np.zeros((len(items), T))
    y = np.full((len(items), T, S), np.nan)
    n_in = len(spec.inputs)
    u = np.zeros((len(items), T, n_in)) if n_in else None
    for i, s in enumerate(items):
        n = len(s.t)
        t[i, :n] = s.t
        if n < T:  # pad the grid past the end; padded points are masked out
            dt = s.t[-1] - s.t[-2] if n > 1 else 1.0
            t[i, n:] = s.t[-1] + dt * np.arange(1, T - n + 1)
        y[i, :n] = s.y
        if u is not None and s.u is not None:
            u[i, :n] = s.u
            u[i, n:] = s.u[-1]
    shapes = {n: tuple(v.shape) for n, v in spec.states.items() if v.shape}
    return Trajectories.from_arrays(t, y, u, states=tuple(sizes),
                                    inputs=tuple(spec.inputs), ids=ids, shapes=shapes)


# bump when the way simulated data are made changes outside the simulators' own code
DATA_VERSION = 3


def _add_noise(items: list[Simulated], level: float, rng, std) -> list[Simulated]:
    """Gaussian observation noise, ``level`` times ``std`` (each state's standard deviation
    in the training data: one instrument for every split), on every observation but each
    trajectory's first: the experiment sets its initial state (a release angle, a seeding,
    an inoculum), and rollouts start from it. A noisy start would make the true model's
    error grow with the dynamics (tenfold on the SEIR problem)."""
    if level <= 0:
        return items
    out = []
    for s in items:
        eps = level * std * rng.normal(size=s.y.shape)
        eps[0] = 0.0
        out.append(Simulated(s.t, s.y + eps, s.u))
    return out


def build_splits(spec: SpaceSpec, path: Path | None = None) -> dict[str, Trajectories]:
    if spec.data.simulator is not None:
        groups = _simulated_groups(spec)
    else:
        groups = _csv_groups(spec, path)
    out = {}
    if spec.is_twin and spec.data.simulator is not None:
        # a simulator gives every state (then, for a space with observations, the observed
        # quantities); the data keep what is measured
        n_states = len(spec.states)
        width = next((s.y.shape[1] for v in groups.values() for s in v), n_states)
        if spec.observations:
            if width != n_states + len(spec.observations):
                raise SpaceError(
                    f"simulator {spec.data.simulator.name!r} gives {width} columns; with"
                    f" observations it must give the {n_states} states, then the"
                    f" {len(spec.observations)} observed quantities", field="observations")
            keep = list(range(n_states, width))
        else:
            keep = [list(spec.states).index(n) for n in spec.measured]
        groups = {k: [replace(s, y=s.y[:, keep]) for s in v] for k, v in groups.items()}
    for name, items in groups.items():
        if items:
            ids = [f"{name}{i}" for i in range(len(items))]
            if spec.is_twin and all(s.key for s in items):
                ids = [s.key for s in items]  # a subject keeps its id across splits
            out[name] = _to_traj(items, spec, ids)
    for need in ("train", "val"):
        if need not in out:
            raise SpaceError(f"the {need!r} split is empty; check 'splits' and the data",
                             field="splits")
    return out


def _cache_file(spec: SpaceSpec, fn) -> Path | None:
    """Where the simulated trajectories of ``spec`` are kept between processes.

    Simulating a space's data (100 trajectories through scipy's solver at tight tolerances)
    takes about a second, paid by every sandboxed candidate of a search; the result depends
    only on the data section, the truth, the split rule, the states and the simulator's
    code, which make the key. ``HYARCH_CACHE=off`` turns it off; the folder is
    ``$HYARCH_CACHE`` or ``~/.cache/hyarch/data``.
    """
    where = os.environ.get("HYARCH_CACHE", "")
    if where.lower() in ("off", "0", "no", "false"):
        return None
    try:
        code = inspect.getsource(sys.modules[fn.__module__])
    except (OSError, TypeError, KeyError):
        return None  # a simulator without source: no key to trust
    key = json.dumps([spec.data.model_dump(mode="json"), spec.truth,
                      spec.splits.model_dump(mode="json"), list(spec.states), code,
                      DATA_VERSION],
                     sort_keys=True, default=str)
    digest = hashlib.sha256(key.encode()).hexdigest()[:32]
    root = Path(where) if where else Path.home() / ".cache" / "hyarch" / "data"
    return root / f"{digest}.pkl"


def _simulated_groups(spec: SpaceSpec) -> dict[str, list[Simulated]]:
    sim = spec.data.simulator
    try:
        fn = get_simulator(sim.name)
    except ValueError as e:
        raise SpaceError(str(e), field="data.simulator.name") from None
    cache = _cache_file(spec, fn)
    if cache is not None and cache.is_file():
        try:
            with open(cache, "rb") as fh:
                return pickle.load(fh)
        except Exception:  # noqa: BLE001 - a broken cache file is simulated again
            pass
    groups = _simulate(spec, fn)
    if cache is not None:
        try:
            cache.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache.with_suffix(f".{os.getpid()}.tmp")
            with open(tmp, "wb") as fh:
                pickle.dump(groups, fh)
            os.replace(tmp, cache)  # atomic: parallel workers never read half a file
        except OSError:
            pass  # a read-only home: simulate every time
    return groups


def _simulate(spec: SpaceSpec, fn) -> dict[str, list[Simulated]]:
    sim = spec.data.simulator
    params = {**spec.truth, **sim.parameters}
    if spec.splits.by == "column" or (spec.splits.by == "time" and not spec.is_twin):
        raise SpaceError(
            f"splits.by: {spec.splits.by} is for CSV data (and for twin spaces' simulated"
            " outbreaks: time); simulated data is split by trajectory (counts in"
            " data.simulator.trajectories, OOD in data.simulator.ood) or by"
            " initial_condition", field="splits.by")

    def run(n: int, rng, options: dict) -> list[Simulated]:
        try:
            items = fn(params, n, rng, options)
        except KeyError as e:
            raise SpaceError(
                f"simulator {sim.name!r} needs parameter {e.args[0]!r}; give it under truth:"
                f" or data.simulator.parameters (given: {', '.join(params) or 'none'})",
                field="data.simulator.parameters") from None
        except SimulationError as e:  # our own words, whatever the SciPy version says
            raise SpaceError(f"simulator {sim.name!r}: {e}; check the parameters (truth:,"
                             " data.simulator.parameters) and options (points, dt)",
                             field="data.simulator") from None
        except Exception as e:  # options come from the user: any failure is their input's
            raise SpaceError(f"simulator {sim.name!r} failed with these parameters and options:"
                             f" {type(e).__name__}: {e}", field="data.simulator") from None
        return items

    def std_of(items):
        return np.nanstd(np.concatenate([s.y for s in items]), axis=0)

    groups: dict[str, list[Simulated]] = {}
    if spec.splits.by == "time":  # a twin follows the same trajectories into the future
        n = sim.trajectories.get("train", 25)
        rng = np.random.default_rng(sim.seed)
        items = run(n, rng, dict(sim.options))
        items = [replace(s, key=f"traj{i}")
                 for i, s in enumerate(_add_noise(items, sim.noise, rng, std_of(items)))]
        return _split_csv(spec, [(s.key, s, None, None) for s in items], None)
    if spec.splits.by == "initial_condition":
        total = sim.count or sum(sim.trajectories.values())
        rng = np.random.default_rng(sim.seed)
        items = run(total, rng, dict(sim.options))
        return _split_by_initial(_add_noise(items, sim.noise, rng, std_of(items)), spec)
    rngs = {}
    for i, (name, count) in enumerate(sim.trajectories.items()):
        rngs[name] = np.random.default_rng([sim.seed, i])
        groups[name] = run(count, rngs[name], dict(sim.options))
    if sim.ood:
        opts = {**sim.options, **sim.ood.get("options", {})}
        n = int(sim.ood.get("trajectories", 25))
        rngs["ood"] = np.random.default_rng([sim.seed, 99])
        groups["ood"] = run(n, rngs["ood"], opts)
    if sim.noise > 0:
        std = std_of(groups.get("train") or next(iter(groups.values())))
        groups = {k: _add_noise(v, sim.noise, rngs[k], std) for k, v in groups.items()}
    return groups


def _split_by_initial(items: list[Simulated], spec: SpaceSpec) -> dict[str, list[Simulated]]:
    state = spec.splits.state or next(iter(spec.states))
    if state not in spec.states:
        raise SpaceError(f"splits.state {state!r} is not a state{suggest(state, spec.states)}",
                         field="splits.state")
    j = list(spec.states).index(state)
    start = np.array([s.y[0, j] for s in items])
    lo_cut = np.quantile(start, spec.splits.in_distribution_quantile)
    hi_cut = np.quantile(start, spec.splits.ood_quantile)
    pool = [s for s, v in zip(items, start, strict=False) if v <= lo_cut]
    ood = [s for s, v in zip(items, start, strict=False) if v >= hi_cut]
    rng = np.random.default_rng(spec.splits.seed)
    order = rng.permutation(len(pool))
    fr = {k: v for k, v in spec.splits.fractions.items() if k != "ood"}
    total = sum(fr.values())
    groups: dict[str, list[Simulated]] = {}
    at = 0
    for k, (name, f) in enumerate(fr.items()):
        n = len(pool) - at if k == len(fr) - 1 else int(round(len(pool) * f / total))
        groups[name] = [pool[i] for i in order[at:at + n]]
        at += n
    groups["ood"] = ood
    return groups


def _read_csv(path: Path, delimiter: str | None = None) -> tuple[list[str], list[list[str]]]:
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            rows = list(csv.reader(fh, delimiter=delimiter or ","))
    except OSError as e:
        raise SpaceError(f"cannot read data: {e.strerror}", file=str(path)) from None
    except (csv.Error, UnicodeDecodeError) as e:
        raise SpaceError(f"not a readable CSV file: {e}", file=str(path)) from None
    rows = [r for r in rows if any(c.strip() for c in r)]
    if not rows:
        raise SpaceError("the CSV file is empty", file=str(path))
    return [h.strip() for h in rows[0]], rows[1:]


def _csv_groups(spec: SpaceSpec, space_path: Path | None) -> dict[str, list[Simulated]]:
    c = spec.data.csv
    path = Path(c.path)
    if not path.is_absolute() and space_path is not None:
        path = space_path.parent / path
    if not path.is_file():
        raise SpaceError(f"data file {c.path!r} does not exist (looked at {path})",
                         field="data.csv.path", file=str(space_path) if space_path else None)
    header, rows = _read_csv(path, c.delimiter)
    if not rows:
        raise SpaceError("the CSV file has a header but no data rows", file=str(path))
    dup = sorted({h for h in header if header.count(h) > 1})
    if dup:
        raise SpaceError(f"duplicate column name(s) {dup} in the header", file=str(path), line=1)
    needed = [c.time, *spec.measured, *spec.inputs]
    needed += [x for x in (c.trajectory, c.split) if x]
    column = {n: c.columns.get(n, n) for n in needed}
    for col in needed:
        if column[col] not in header:
            what = ("time column (data.csv.time)" if col == c.time else
                    "observation" if col in spec.observations else
                    "state" if col in spec.states else "input" if col in spec.inputs else
                    "trajectory id column" if col == c.trajectory else "split column")
            hint = "" if col in c.columns else (
                f"; map it with data.csv.columns: {{{col}: <header>}}"
                if col in spec.states or col in spec.inputs else "")
            if col in spec.states and not spec.observations:
                hint += (f"; or, if {col!r} is not measured, mark it states.{col}.measured:"
                         " false with an initial value")
            raise SpaceError(
                f"missing column {column[col]!r} for {what}{suggest(column[col], header)};"
                f" columns are: {', '.join(header)}{hint}",
                file=str(path), line=1,
            )
    idx = {n: header.index(column[n]) for n in needed}

    def text(row, col) -> str:
        return row[idx[col]].strip() if idx[col] < len(row) else ""

    def number(row, r, name) -> float:
        cell, col = text(row, name), column[name]
        if cell == "" or cell.lower() in ("nan", "na", "null"):
            if name in spec.measured and c.missing == "mask":
                return math.nan
            policy = ("missing values are an error; set data.csv.missing: mask to leave them"
                      " out of the loss" if name in spec.measured else
                      "time and input cells must always be present")
            raise SpaceError(f"empty or NaN cell in column {col!r} ({policy})",
                             file=str(path), line=r)
        try:
            v = float(cell)
        except ValueError:
            raise SpaceError(f"column {col!r}: {cell!r} is not a number", file=str(path),
                             line=r) from None
        if math.isinf(v):
            raise SpaceError(f"column {col!r}: infinite value", file=str(path), line=r)
        return v

    series: dict[str, list[tuple[int, list[str]]]] = {}
    last, runs = None, 0
    for r, row in enumerate(rows, start=2):
        if c.trajectory:
            key = text(row, c.trajectory)
            if not key:
                raise SpaceError(f"empty trajectory id in column {column[c.trajectory]!r}",
                                 file=str(path), line=r)
        elif c.split:  # one series cut into contiguous runs by its split label
            label = text(row, c.split)
            runs += label != last
            last, key = label, f"{label}#{runs}"
        else:
            key = "series"
        series.setdefault(key, []).append((r, row))
    trajs = []
    for key, items in series.items():
        if len(items) < 2:
            raise SpaceError(f"trajectory {key!r} has a single sample; a trajectory needs at"
                             " least two", file=str(path), line=items[0][0])
        t = np.array([number(row, r, c.time) for r, row in items])
        bad = np.nonzero(np.diff(t) <= 0)[0]
        if len(bad):
            r = items[bad[0] + 1][0]
            raise SpaceError(
                f"time must increase within trajectory {key!r}: {t[bad[0]]:g} then"
                f" {t[bad[0] + 1]:g}", file=str(path), line=r)
        y = np.array([[number(row, r, s) for s in spec.measured] for r, row in items])
        u = (np.array([[number(row, r, i) for i in spec.inputs] for r, row in items])
             if spec.inputs else None)
        split = None
        if c.split:
            labels = [text(row, c.split) for _, row in items]
            for (r, _), label in zip(items, labels, strict=False):
                if label not in ("train", "val", "test", "ood"):
                    raise SpaceError(f"split column {column[c.split]!r}: label {label!r} is not"
                                     " one of train, val, test, ood", file=str(path), line=r)
                if label != labels[0]:
                    raise SpaceError(f"trajectory {key!r} has several split labels"
                                     f" ({labels[0]!r}, then {label!r}); give one per trajectory",
                                     file=str(path), line=r)
            split = labels[0]
        trajs.append((key, Simulated(t, y, u, key), split, items))
    return _split_csv(spec, trajs, path)


def _split_csv(spec, trajs, path) -> dict[str, list[Simulated]]:
    by = spec.splits.by
    fr = spec.splits.fractions
    if by == "simulator":
        raise SpaceError("splits.by: simulator is for simulated data; split a CSV by"
                         " trajectory, time, initial_condition or column", field="splits.by")
    groups: dict[str, list[Simulated]] = {k: [] for k in fr}
    if by == "column" or (spec.data.csv is not None and spec.data.csv.split):
        if not spec.data.csv.split:
            raise SpaceError("splits.by: column needs data.csv.split (the column name)",
                             field="splits.by")
        groups = {}
        for _, s, split, _ in trajs:
            groups.setdefault(split or "train", []).append(s)
        return groups
    if by == "time":
        groups = {k: [] for k in fr}
        for _, s, _, _ in trajs:
            n = len(s.t)
            at = 0
            for k, (name, f) in enumerate(fr.items()):
                m = n - at if k == len(fr) - 1 else int(round(n * f))
                seg = slice(at, at + m)
                if spec.is_twin and at > 0 and m >= 1:
                    # a twin's later segment is predicted from the trajectory's start (its
                    # latent states are known there only): the whole grid, the other
                    # segments' observations masked out
                    y = np.full_like(s.y, np.nan)
                    y[seg] = s.y[seg]
                    groups[name].append(replace(s, y=y))
                elif m >= 2:
                    groups[name].append(Simulated(s.t[seg], s.y[seg],
                                                  None if s.u is None else s.u[seg], s.key))
                at += m
        return groups
    if by == "initial_condition":
        return _split_by_initial([s for _, s, _, _ in trajs], spec)
    rng = np.random.default_rng(spec.splits.seed)
    order = rng.permutation(len(trajs))
    if len(trajs) < len(fr):
        raise SpaceError(
            f"{len(trajs)} trajectory(ies) cannot fill {len(fr)} splits by trajectory;"
            " use splits.by: time for a single series", field="splits.by")
    at = 0
    for k, (name, f) in enumerate(fr.items()):
        m = len(trajs) - at if k == len(fr) - 1 else max(1, int(round(len(trajs) * f)))
        groups[name] = [trajs[i][1] for i in order[at:at + m]]
        at += m
    return groups
