"""Fuzzing the loader: whatever a user writes, the answer is a space or a SpaceError.

A traceback from deep inside pydantic, numpy or csv tells a user nothing; these tests feed
random text, random mutations of a valid space and random CSV files through the loader.
"""

from __future__ import annotations

import copy
import os
import textwrap

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hyarch.spaces.errors import SpaceError
from hyarch.spaces.loader import build_splits, load_space, parse_spec

# HYARCH_FUZZ_EXAMPLES=5000 for a deeper run than CI's
FUZZ = settings(max_examples=int(os.environ.get("HYARCH_FUZZ_EXAMPLES", "120")), deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])

VALID = {
    "name": "fuzz",
    "states": {"x": {"unit": "m"}, "v": {}},
    "inputs": {"f": {}},
    "data": {"csv": {"path": "data.csv", "time": "t", "trajectory": "run"}},
    "splits": {"by": "trajectory", "fractions": {"train": 0.5, "val": 0.25, "test": 0.25}},
    "training": {"lr": 0.01, "windows": [2, 4]},
    "closures": [{"state": "v", "inputs": ["x", "v"], "hidden": [[8]]}],
    "hypotheses": {"v": [{"name": "drag", "expr": "-c * s.v",
                          "parameters": {"c": {"init": 0.1, "bounds": [0, 1]}}}]},
}

SIM = {
    "name": "fuzz_sim",
    "states": {"theta": {}, "omega": {}},
    "data": {"simulator": {"name": "damped_pendulum", "options": {"points": 6},
                           "trajectories": {"train": 2, "val": 1}}},
    "truth": {"omega0_sq": 1.0, "alpha": 0.2},
}

scalars = st.one_of(st.none(), st.booleans(), st.integers(-3, 50),
                    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=8))
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=6), inner, max_size=3)),
    max_leaves=6)


def _paths(obj, prefix=()):
    yield prefix
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _paths(v, (*prefix, i))


@st.composite
def mutated(draw, base):
    """A valid space with a few keys deleted, replaced or added."""
    doc = copy.deepcopy(base)
    for _ in range(draw(st.integers(1, 3))):
        paths = [p for p in _paths(doc) if p]
        path = draw(st.sampled_from(paths))
        parent = doc
        for k in path[:-1]:
            parent = parent[k]
        action = draw(st.sampled_from(["delete", "replace", "add"]))
        if action == "delete" and isinstance(parent, dict):
            del parent[path[-1]]
        elif action == "add" and isinstance(parent, dict):
            parent[draw(st.text(min_size=1, max_size=8))] = draw(values)
        else:
            parent[path[-1]] = draw(values)
    return doc


def _dump(doc) -> str:
    return yaml.safe_dump(doc, allow_unicode=True)


@FUZZ
@given(st.text(max_size=300))
def test_any_text_is_a_spec_or_a_space_error(text):
    try:
        parse_spec(text, "fuzz.yaml")
    except SpaceError as e:
        assert str(e).startswith("fuzz.yaml")


@FUZZ
@given(mutated(VALID))
def test_mutated_csv_space_loads_or_says_why(tmp_path, doc):
    (tmp_path / "data.csv").write_text(
        "run,t,x,v,f\n" + "".join(f"r{r},{k},{r + k},{k},0\n" for r in range(4) for k in range(4)))
    path = tmp_path / "space.yaml"
    path.write_text(_dump(doc))
    try:
        load_space(path)
    except SpaceError:
        pass


@FUZZ
@given(mutated(SIM))
def test_mutated_simulator_space_builds_or_says_why(doc):
    try:
        spec = parse_spec(_dump(doc), "sim.yaml")
        sim = spec.data.simulator
        sizes = [*sim.trajectories.values(), sim.count or 0, (sim.ood or {}).get("trajectories")]
        if any(isinstance(v, (int, float)) and v > 500 for v in sizes):
            return  # a user may ask for a long simulation; that is not a crash
        build_splits(spec)
    except SpaceError:
        pass


cells = st.one_of(st.sampled_from(["", "nan", "NA", "inf", "-1", "0", "1e3", "x", "r0", "r1",
                                   "train", "val", "test", "ood", '"', "1,2"]),
                  st.floats(-5, 5).map(str), st.text(max_size=4))


@FUZZ
@given(header=st.lists(st.sampled_from(["run", "t", "x", "v", "f", "split", "extra", "t"]),
                       min_size=0, max_size=7),
       rows=st.lists(st.lists(cells, max_size=7), max_size=12),
       split_col=st.booleans(), missing=st.sampled_from(["error", "mask"]),
       by=st.sampled_from(["trajectory", "time", "initial_condition", "column"]))
def test_random_csv_loads_or_says_why(tmp_path, header, rows, split_col, missing, by):
    body = "\n".join(",".join(r) for r in [header, *rows]) + "\n"
    (tmp_path / "data.csv").write_text(body)
    extra = ", split: split" if split_col else ""
    path = tmp_path / "space.yaml"
    path.write_text(textwrap.dedent(f"""\
        name: fuzz_csv
        states: {{x: {{}}, v: {{}}}}
        inputs: {{f: {{}}}}
        data: {{csv: {{path: data.csv, trajectory: run, missing: {missing}{extra}}}}}
        splits: {{by: {by}, fractions: {{train: 0.5, val: 0.5}}}}
        """))
    try:
        sp = load_space(path)
    except SpaceError as e:
        assert "data.csv" in str(e) or "space.yaml" in str(e) or "split" in str(e)
    else:
        assert sp.train.n >= 1 and sp.val.n >= 1


def _leaves(obj, prefix=()):
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _leaves(v, (*prefix, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _leaves(v, (*prefix, i))
    elif isinstance(obj, (int, float)) and not isinstance(obj, bool):
        yield prefix


@FUZZ
@given(base=st.sampled_from([VALID, SIM]), data=st.data(),
       bad=st.sampled_from([float("nan"), float("inf"), float("-inf"), 10**11, -(10**12)]))
def test_nan_infinity_and_absurd_numbers_are_rejected_where_written(tmp_path, base, data, bad):
    """Any number of a valid space replaced by NaN, infinity or an absurd size: an error
    naming that field and its line, never a crash (or a silent acceptance) further on."""
    doc = copy.deepcopy(base)
    path = data.draw(st.sampled_from([p for p in _leaves(doc) if not str(p[-1]).endswith("seed")]))
    parent = doc
    for k in path[:-1]:
        parent = parent[k]
    parent[path[-1]] = bad
    (tmp_path / "data.csv").write_text(
        "run,t,x,v,f\n" + "".join(f"r{r},{k},{r + k},{k},0\n" for r in range(4) for k in range(4)))
    (tmp_path / "space.yaml").write_text(_dump(doc))
    try:
        load_space(tmp_path / "space.yaml")
    except SpaceError as e:
        field = ".".join(str(x) for x in path)
        assert "space.yaml:" in str(e) and field in str(e), (field, str(e))
    else:
        raise AssertionError(f"{'.'.join(map(str, path))} = {bad} was accepted")


@FUZZ
@given(base=st.sampled_from([VALID, SIM]), data=st.data())
def test_a_repeated_top_level_key_is_an_error(base, data):
    lines = _dump(base).splitlines()
    key = data.draw(st.sampled_from(list(base)))
    text = "\n".join(lines + [f"{key}: {data.draw(st.integers(0, 9))}"]) + "\n"
    try:
        parse_spec(text, "dup.yaml")
    except SpaceError as e:
        assert f"duplicate key {key!r}" in str(e) and f"dup.yaml:{len(lines) + 1}:" in str(e)
    else:
        raise AssertionError(f"a second {key!r} was accepted")
