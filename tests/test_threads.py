"""One threading policy: every command that trains takes ``--threads`` (default 1, what a
search gives each worker), and the number reaches the sandboxed child's limits."""

from __future__ import annotations

import pytest

from hyarch.cli import _register_extras, build_parser


@pytest.mark.parametrize("argv", [["search", "damped_pendulum"],
                                  ["evaluate", "damped_pendulum", "m.py"],
                                  ["baselines", "damped_pendulum"],
                                  ["distill", "damped_pendulum", "m.py"]])
def test_every_training_command_takes_threads_default_one(argv):
    _register_extras()  # the commands main() adds (search, baselines, distill...)
    parser = build_parser()
    assert parser.parse_args(argv).threads == 1
    assert parser.parse_args([*argv, "--threads", "3"]).threads == 3


def test_search_workers_get_the_threads_asked_for(tmp_path):
    from hyarch.agent.config import SearchConfig
    from hyarch.agent.loop import Session

    one = Session(SearchConfig(space="damped_pendulum", run_dir=tmp_path / "a"))
    two = Session(SearchConfig(space="damped_pendulum", run_dir=tmp_path / "b", threads=2))
    for session in (one, two):
        session._prepare()  # what run_search does first: the run folder and the limits
    assert (one.limits.threads, two.limits.threads) == (1, 2)


def test_baselines_pass_threads_to_each_sandboxed_training(monkeypatch):
    import hyarch.evaluate
    from hyarch.sandbox.runner import SandboxResult, failed
    from hyarch.spaces.baselines import run_baselines
    from hyarch.spaces.loader import load_space

    seen = []

    def fake(space, source, *, limits=None, **kw):
        seen.append(limits.threads)
        return SandboxResult(failed("not trained in this test"))

    monkeypatch.setattr(hyarch.evaluate, "evaluate_source", fake)
    run_baselines(load_space("damped_pendulum"), labels=("prior", "aphynity"), threads=2)
    assert seen == [2, 2]
