"""The Jinja2 prompts and the candidate template."""

import jinja2
import pytest
import torch

from hyarch.agent.base import Feedback, PoolEntry
from hyarch.agent.prompting import (
    propose_messages,
    refine_messages,
    render,
    render_candidate,
    repair_messages,
    system_prompt,
)
from hyarch.core.candidate import check_forward, load_model_class, make_factory
from hyarch.evaluate import evaluate_source
from hyarch.spaces.loader import builtin_dir, load_space

QUICK = dict(stage_iters=3, final_iters=6, restarts=1, windows=(2,), patience=3, lbfgs="never")


@pytest.fixture(scope="module")
def space():
    torch.set_num_threads(1)
    return load_space("damped_pendulum")


def numbers(tree):
    if isinstance(tree, dict):
        for v in tree.values():
            yield from numbers(v)
    elif isinstance(tree, float):
        yield tree


def spellings(x):
    """How a template could print ``x``; too short a spelling ("1") matches anything."""
    out = {f"{x:.{d}g}" for d in (3, 4, 5, 6)} | {repr(x)}
    return {s for s in out if sum(c.isdigit() for c in s) >= 3}


def test_refine_prompt_from_real_results_carries_no_test_or_ood_number(tiny_space):
    space = tiny_space
    src = (builtin_dir("search_spaces") / "damped_pendulum" / "aphynity.py").read_text()
    ok = evaluate_source(space, src, overrides=QUICK).result
    bad_src = src.replace("torch.sin(s.theta)", "torch.sin(s.theta, s.omega)")
    bad = evaluate_source(space, bad_src, overrides=QUICK).result
    assert ok["status"] == "ok" and bad["status"] == "failed"
    assert set(ok["metrics"]) >= {"test", "ood"}  # the record does hold them
    pool = PoolEntry.from_result("c0001", src, {"proposer": "file"}, ok,
                                 {"verdict": "pinned", "notes": ["keep this one"]})
    failure = PoolEntry.from_result("c0002", bad_src, {"proposer": "file"}, bad)
    messages, parents = refine_messages(space, Feedback(round=1, pool=(pool,),
                                                        failures=(failure,)))
    text = "\n".join(m["content"] for m in messages)
    assert parents == ("c0001",)
    # what must be there: validation numbers, fitted parameters, the failure's reason
    assert f"{ok['metrics']['val']['nmse']:.4g}" in text
    for k, v in ok["metrics"]["val"]["per_state"].items():
        assert f"{k} {v['nmse']:.4g}" in text
    assert f"omega0_sq = {ok['parameters']['omega0_sq']:.5g}" in text
    assert bad["reason"] in text and "keep this one" in text
    # what must not: any test or OOD figure, full or reduced model, in any spelling
    hidden = [x for part in ("metrics", "reduced") for split in ("test", "ood")
              for x in numbers(ok[part][split])]
    assert len(hidden) >= 16
    leaked = [s for x in hidden for s in spellings(x) if s in text]
    assert not leaked, leaked
    assert "1.09662271" not in text  # nor the true parameter values


def test_first_prompt_describes_the_space(space):
    system, user = propose_messages(space, Feedback(round=0))
    assert system["role"] == "system" and "class Model(HybridModel)" in system["content"]
    for needle in ("`torch`, `math`, `numpy`, `hyarch`", "No files, sockets, subprocesses",
                   "(here: `theta`, `omega`)"):
        assert needle in system["content"]
    u = user["content"]
    for needle in ("# The system: damped_pendulum", "- `theta` [rad]: angle from the downward",
                   "- `omega` [rad/s]", "```python\nimport torch", "`quadratic_drag`",
                   "`-c_drag * s.omega * torch.abs(s.omega)`", "parameter `c_drag` in [0, 5]",
                   "closure (additive) on d(omega)/dt with inputs (theta, omega)",
                   "What a good model is", "No exogenous inputs"):
        assert needle in u, needle
    assert "A good answer" not in u and "alpha: 0.2" not in u


def test_templates_are_strict():
    with pytest.raises(jinja2.UndefinedError):
        render("repair.j2", attempt=1, attempts=2)


def test_repair_prompt(space):
    failed = PoolEntry(id="c9", source="class Model: pass\n", proposer="llm:x", status="failed",
                       reason="ContractError: derivatives missing 'omega'",
                       traceback="\n".join(f"frame {i}" for i in range(50)))
    (_, user) = repair_messages(space, failed, 2, 3)
    u = user["content"]
    assert "repair attempt 2 of 3" in u and "derivatives missing 'omega'" in u
    assert "frame 49" in u and "frame 5\n" not in u  # the traceback's tail only
    assert "class Model: pass" in u


def test_system_prompt_without_a_space():
    assert "(here:" not in system_prompt()


PENDULUM = dict(
    docstring='The pendulum with viscous friction and a "learned" correction.',
    parameters=[{"name": "omega0_sq", "init": 1.0, "lo": 0.01, "hi": 10.0},
                {"name": "alpha", "init": 0.5, "lo": 0.0, "hi": 5}],
    closures=[{"attr": "correction", "inputs": ["theta", "omega"], "hidden": [16, 16],
               "kind": "additive"},
              {"attr": "gain", "inputs": ["theta"], "hidden": [8], "kind": "multiplicative"}],
    derivatives={"theta": "s.omega",
                 "omega": "-self.omega0_sq * torch.sin(s.theta) * self.gain(s.theta)"
                          " - self.alpha * s.omega + self.correction(s.theta, s.omega)"},
)


def _build(space, source):
    cls = load_model_class(source, "candidate.py")
    model = make_factory(cls, space.states, space.inputs, space.scales(), space.shapes)()
    train = space.train
    check_forward(model, train.y0(), train.t[:, 0], None)
    return model


def test_candidate_template_renders_a_valid_pendulum(space):
    source = render_candidate(**PENDULUM)
    compile(source, "candidate.py", "exec")
    assert 'inputs=("theta",), hidden=(8,), kind="multiplicative"' in source
    model = _build(space, source)
    assert model.physical_values() == pytest.approx({"omega0_sq": 1.0, "alpha": 0.5})
    kinds = sorted(c.kind for c in model.closures())
    assert kinds == ["additive", "multiplicative"]
    assert model.n_neural_params() > 0


def test_candidate_template_without_closures_is_the_mechanism_alone(space):
    source = render_candidate(
        docstring="Pendulum with Coulomb friction.",
        parameters=[{"name": "omega0_sq", "init": 1.0, "lo": 0.01, "hi": 10.0},
                    {"name": "mu", "init": 0.1, "lo": 0.0, "hi": 5.0}],
        closures=[],
        derivatives={"theta": "s.omega", "omega": "-self.omega0_sq * math.sin(1.0) *"
                     " torch.sin(s.theta) - self.mu * torch.tanh(s.omega / 0.05)"})
    assert "Closure" not in source and "import math" in source
    model = _build(space, source)
    assert model.closures() == [] and set(model.physical_values()) == {"omega0_sq", "mu"}


def test_candidate_template_rejects_bad_names():
    with pytest.raises(ValueError, match="not a Python identifier"):
        render_candidate(**{**PENDULUM, "parameters": [{"name": "omega 0", "init": 1,
                                                         "lo": 0, "hi": 2}]})
    with pytest.raises(ValueError, match="used twice"):
        render_candidate(**{**PENDULUM, "closures": [{**PENDULUM["closures"][0],
                                                       "attr": "alpha"}]})


def test_the_system_prompts_example_is_valid_and_no_builtin_spaces_answer():
    """Small models copy the example word for word: it must pass the checks, and it must
    not be the model of any built-in space (it was the pendulum hybrid)."""
    from hyarch.agent.extract import code_blocks
    from hyarch.agent.prompting import system_prompt
    from hyarch.sandbox.checks import check_source
    from hyarch.spaces.loader import builtin_dir

    (example,) = code_blocks(system_prompt())
    check_source(example)
    for path in builtin_dir("search_spaces").glob("*.yaml"):
        builtin = load_space(path)
        names = set(builtin.spec.states) | set(builtin.spec.inputs)
        assert not any(f"s.{n}" in example or f"u.{n}" in example for n in names), path.name
