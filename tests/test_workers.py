"""Several workers on one search: journal file on one machine, PostgreSQL across machines."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import optuna
import pytest

from hyarch.ranking import keys
from hyarch.ranking.study import fail_stale, open_study, pareto_ids, recorded_ids
from hyarch.runs import Run
from tests.search_fixtures import write_space

ROOT = Path(__file__).resolve().parents[1]
PG_URL = os.environ.get("HYARCH_TEST_POSTGRES_URL")


def _space(tmp_path: Path, budget: int) -> Path:
    path = write_space(tmp_path)
    path.write_text(path.read_text().replace("budget: {candidates: 4, per_round: 2}",
                                             f"budget: {{candidates: {budget}, per_round: 1}}"))
    return path


def _worker(space: Path, run: str, cwd: Path, storage: str | None = None) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "hyarch", "worker", "--run", run, "--space", str(space)]
    if storage:
        cmd += ["--storage", storage]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env=env)


def _wait(procs, timeout=500):
    outs = []
    for p in procs:
        out, _ = p.communicate(timeout=timeout)
        outs.append(out)
        assert p.returncode == 0, out[-3000:]
    return outs


def _check_run(study: optuna.Study, runs: list[Run], budget: int) -> None:
    ids = sorted(recorded_ids(study))
    assert ids == sorted(set(ids)) and len(ids) == budget
    # never the same code evaluated twice (a same-moment duplicate is recorded, not trained)
    trained = [t.user_attrs[keys.CODE_HASH] for t in study.get_trials()
               if keys.RESULT in t.user_attrs
               and not (t.user_attrs.get(keys.REASON) or "").startswith("duplicate of")]
    assert len(trained) == len(set(trained)) >= budget // 2
    assert not study.get_trials(states=(optuna.trial.TrialState.RUNNING,))
    for run in runs:  # every worker's folder holds every candidate, finished
        assert sorted(c.id for c in run.finished()) == ids
    workers = {t.user_attrs.get(keys.WORKER) for t in study.get_trials()
               if keys.RESULT in t.user_attrs}
    assert len(workers) >= 2, workers


def test_three_workers_share_a_journal_search(tmp_path):
    space = _space(tmp_path, budget=6)
    procs = [_worker(space, str(tmp_path / "run"), tmp_path) for _ in range(3)]
    _wait(procs)
    run = Run(tmp_path / "run")
    study = open_study(run)
    _check_run(study, [run], 6)
    front = sorted(pareto_ids(study))
    # the same front, read again through a fresh storage handle
    assert sorted(pareto_ids(open_study(Run(tmp_path / "run")))) == front


@pytest.fixture
def postgres_url():
    if not PG_URL:
        pytest.skip("set HYARCH_TEST_POSTGRES_URL=postgresql://user:pw@127.0.0.1/db"
                    " (.ci/postgres.sh starts one) to run the PostgreSQL tests")
    try:
        optuna.storages.RDBStorage(PG_URL)
    except Exception as e:  # no server
        pytest.skip(f"PostgreSQL at {PG_URL} is not reachable ({type(e).__name__});"
                    " run bash .ci/postgres.sh first")
    return PG_URL


@pytest.mark.postgres
def test_two_machines_share_a_postgres_search(tmp_path, postgres_url):
    space = _space(tmp_path, budget=5)
    name = f"pg-{uuid.uuid4().hex[:8]}"
    a, b = tmp_path / "machine_a", tmp_path / "machine_b"
    a.mkdir()
    b.mkdir()
    _wait([_worker(space, name, a, postgres_url), _worker(space, name, b, postgres_url)])
    runs = [Run(a / "runs" / name), Run(b / "runs" / name)]
    study = open_study(runs[0], postgres_url)
    _check_run(study, runs, 5)
    assert pareto_ids(open_study(runs[1], postgres_url)) == pareto_ids(study)


def test_a_dead_workers_trial_does_not_stay_running(tmp_path):
    run = Run(tmp_path / "run")
    study = open_study(run)
    trial = study.ask()
    trial.set_user_attr(keys.CANDIDATE_ID, "c0001")
    trial.set_user_attr(keys.HEARTBEAT, time.time() - 1000)
    fresh = study.ask()
    fresh.set_user_attr(keys.HEARTBEAT, time.time())
    assert fail_stale(study, max_age_s=60) == ["c0001"]
    states = {t.number: t.state for t in study.get_trials()}
    assert states[trial.number] == optuna.trial.TrialState.FAIL
    assert states[fresh.number] == optuna.trial.TrialState.RUNNING


def test_constraints_use_optunas_api_and_rank_infeasible_last():
    from hyarch.ranking.study import Objectives, constraint_values, record

    obj = Objectives(closure_share_cap=0.3, plausible=(("alpha", 0.0, 1.0),))
    ok = {"status": "ok", "metrics": {"val": {"nmse": 1e-3}}, "closure_share": 0.1,
          "n_neural_params": 10, "parameters": {"alpha": 0.5}}
    bad = {**ok, "metrics": {"val": {"nmse": 1e-4}}, "closure_share": 0.5,
           "parameters": {"alpha": 3.0}}
    cons = constraint_values(bad, obj)
    assert cons["closure_share_cap"] == pytest.approx(0.2)
    assert cons["plausible:alpha"] == pytest.approx(2.0)
    assert all(v <= 0 for v in constraint_values(ok, obj).values())
    study = optuna.create_study(directions=["minimize"] * 3)
    record(study, "c0001", {}, ok, obj)
    record(study, "c0002", {}, bad, obj)  # better fit, but infeasible
    assert study.trials[1].constraints["plausible:alpha"] == pytest.approx(2.0)
    assert pareto_ids(study) == ["c0001"]
