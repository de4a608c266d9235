"""The typed evaluation record: a JSON round trip, and malformed records become FAILED."""

from __future__ import annotations

import json

import pytest

from hyarch.record import Accuracy, Evaluation, Status, Training, as_evaluation
from hyarch.sandbox.runner import Limits, run_candidate
from tests.search_fixtures import FRICTION


@pytest.fixture(scope="module")
def record(tmp_path_factory):
    from tests.search_fixtures import write_space

    space = write_space(tmp_path_factory.mktemp("record"))
    res = run_candidate(str(space), FRICTION.read_text(), limits=Limits(timeout=120),
                        overrides={"stage_iters": 10, "final_iters": 10})
    assert res.result["status"] == "ok", res.result["reason"]
    return res.result


def test_a_real_record_round_trips_through_json(record):
    ev = Evaluation.from_dict(json.loads(json.dumps(record)))
    assert ev.status is Status.OK and ev.val_nmse == record["metrics"]["val"]["nmse"]
    assert ev.to_dict() == record  # the runner already writes the typed schema
    assert Evaluation.from_dict(ev.to_dict()) == ev
    assert ev.fitted_values == len(record["parameters"]) + (record["n_neural_params"] or 0)
    assert len(ev.split("val").per_trajectory_nmse) > 0


@pytest.mark.parametrize("change, why", [
    (lambda r: r.update(status="great"), "status is 'great'"),
    (lambda r: r["metrics"]["val"].update(nmse="0.0"), "metrics.val.nmse is '0.0'"),
    (lambda r: r.update(n_neural_params=True), "n_neural_params is True"),
    (lambda r: r.update(parameters=[1, 2]), "parameters is not a mapping"),
    (lambda r: r["metrics"].pop("val"), "status ok without a validation nmse"),
    (lambda r: r["metrics"]["val"].update(per_trajectory_nmse=[1e-4, "x"]), "holds 'x'"),
])
def test_malformed_records_are_failed_with_the_reason(record, change, why):
    bad = json.loads(json.dumps(record))
    change(bad)
    ev = Evaluation.from_dict(bad)
    assert ev.status is Status.FAILED and why in ev.reason, ev.reason


def test_non_records_never_raise():
    for junk in (None, 3, "ok", [], {"status": None}):
        assert Evaluation.from_dict(junk).status in (Status.FAILED, Status.PENDING)


# -- the typed fields: training, integration accuracy, selection split, provenance ----------


def test_training_integration_and_selection_are_typed(record):
    ev = Evaluation.from_dict(record)
    t = record["training"]
    assert ev.training == Training(t["iterations"], t["train_nmse"], t["selection_nmse"],
                                   t["seconds"], t["substeps"], t["stopped"])
    assert ev.accuracy("val") == Accuracy(**record["integration"]["val"])
    assert ev.accuracy("nowhere") is None
    assert ev.unconverged == tuple(k for k, a in record["integration"].items()
                                   if not a["converged"])
    assert ev.selection_nmse == record["metrics"]["selection"]["nmse"]
    assert ev.reduced_split("val").log10_mse == record["reduced"]["val"]["log10_mse"]
    state = next(iter(record["metrics"]["val"]["per_state"]))
    assert ev.split("val").state_nmse(state) == record["metrics"]["val"]["per_state"][state]["nmse"]
    assert ev.isolation == record["isolation"] and ev.traceback is None
    assert ev.wall_seconds is None and "wall_seconds" not in ev.to_dict()


def test_the_json_text_round_trips_key_for_key(record):
    """What the runner writes, and what a search adds to it, comes back in the same order."""
    searched = {**json.loads(json.dumps(record)), "wall_seconds": 12.5}
    ev = Evaluation.from_dict(searched)
    assert ev.wall_seconds == 12.5
    assert json.dumps(ev.to_dict()) == json.dumps(searched)
    from hyarch.sandbox.runner import failed

    crashed = {**failed("the candidate raised", 1.5, traceback="Traceback: boom"),
               "isolation": "none (in process)", "wall_seconds": 2.0}
    ev = Evaluation.from_dict(crashed)
    assert (ev.status, ev.traceback, ev.isolation) == (Status.FAILED, "Traceback: boom",
                                                       "none (in process)")
    assert ev.training is None and ev.integration is None and ev.unconverged == ()
    assert json.dumps(ev.to_dict()) == json.dumps(crashed)
    empty = {**json.loads(json.dumps(record)), "training": {}, "integration": {}}
    assert json.dumps(Evaluation.from_dict(empty).to_dict()) == json.dumps(empty)


def test_a_record_in_the_older_key_order_still_loads(record):
    """metrics.json files from before the runner wrote the typed schema order their keys
    differently (specs after the errors, training before seconds)."""
    order = ("status", "reason", "parameters", "param_rel_error", "parameter_specs",
             "metrics", "reduced", "regularizers", "closure_share", "n_neural_params",
             "training", "integration", "seconds", "isolation")
    old = {k: json.loads(json.dumps(record[k])) for k in order}
    ev = Evaluation.from_dict(old)
    assert ev.ok and ev.training.stopped == record["training"]["stopped"]
    assert ev.to_dict() == old
    assert dict(ev.extra) == {"parameter_specs": record["parameter_specs"]}


@pytest.mark.parametrize("change, why", [
    (lambda r: r["training"].update(stopped=3), "training.stopped is int"),
    (lambda r: r["training"].update(iterations="many"), "training.iterations is 'many'"),
    (lambda r: r.update(training=[1]), "training is not a mapping"),
    (lambda r: r.update(integration=[]), "integration is not a mapping"),
    (lambda r: r["integration"].update(val="x"), "integration.val is not a mapping"),
    (lambda r: r["integration"]["val"].update(substeps=-1), "integration.val.substeps is -1"),
    (lambda r: r.update(wall_seconds="1 s"), "wall_seconds is '1 s'"),
    (lambda r: r.update(traceback=5), "traceback is int"),
])
def test_malformed_typed_fields_are_failed_with_the_reason(record, change, why):
    bad = json.loads(json.dumps(record))
    change(bad)
    ev = Evaluation.from_dict(bad)
    assert ev.status is Status.FAILED and why in ev.reason, ev.reason


def test_as_evaluation_takes_a_record_its_dict_or_nothing(record):
    ev = Evaluation.from_dict(record)
    assert as_evaluation(ev) is ev and as_evaluation(record) == ev
    assert as_evaluation(None).status is Status.PENDING
    assert as_evaluation([1]).status is Status.FAILED


# -- readers of a record the run lets through but that does not parse ------------------------


def test_a_malformed_record_is_a_failed_candidate_everywhere(tmp_path, record, capsys):
    """The run's own check on reading does not look inside ``integration``: such a record
    reaches the leaderboard, the status lines, the study and ``show``, which all read
    it as failed, with why, and none crashes."""
    from hyarch.agent.status import candidate_line, status_line, summarize
    from hyarch.cli import main
    from hyarch.ranking.leaderboard import leaderboard, leaderboard_json
    from hyarch.ranking.study import constraint_values, objective_values
    from hyarch.runs import Run

    run = Run(tmp_path / "run")
    run.write_config({"name": "run", "space": "none", "budget": 10})
    bad = json.loads(json.dumps(record))
    bad["integration"]["val"] = "x"
    for cid, res in (("c0001", bad), ("c0002", record)):
        run.write_proposal(cid, "# a model\n", {"proposer": "offline", "parents": [],
                                                "round": 1, "code_hash": cid})
        run.write_result(cid, res)
    assert run.read_candidate("c0001").status == "ok"  # let through by the run

    rows = leaderboard(run)
    assert [r.id for r in rows] == ["c0002", "c0001"]
    assert rows[1].evaluation.status is Status.FAILED and rows[1].evidence.group == "failed"
    assert rows[1].score is None and not rows[1].pareto
    out = leaderboard_json(run)[1]
    assert out["status"] == "failed" and "integration.val is not a mapping" in out["reason"]
    assert candidate_line("c0001", bad).startswith(
        "  c0001 failed: invalid evaluation record: integration.val")
    line = status_line(rows, round_no=1, budget=10, seconds=1.0, tokens=0, cost=0.0,
                       cost_known=False, repeats=0)
    assert "2/10 candidates done (1 ok, 1 failed)" in line and "best c0002" in line
    assert line.endswith(", 1 s, about 4 s left")  # 0.5 s a candidate, 8 to go
    # on a resume, the rate counts only what this session finished
    line = status_line(rows, round_no=1, budget=10, seconds=100.0, tokens=0, cost=0.0,
                       cost_known=False, repeats=0, done_before=1)
    assert line.endswith(", 100 s, about 13 min left")
    line = status_line(rows, round_no=1, budget=10, seconds=1.0, tokens=0, cost=0.0,
                       cost_known=False, repeats=0, done_before=2)
    assert "left" not in line  # nothing finished yet in this session: no rate to go by
    summary = summarize(run.path, rows, stopped="budget", seconds=1.0, tokens=0, cost=0.0)
    assert (summary.ok, summary.failed, summary.best_id) == (1, 1, "c0002")
    assert objective_values(bad) is None and constraint_values(bad) == {}

    capsys.readouterr()
    assert main(["leaderboard", str(run.path)]) in (0, None)
    text = capsys.readouterr().out
    assert "c0001" in text and "failed" in text and "invalid evaluation" in text
    assert main(["show", str(run.path), "c0001"]) in (0, None)
    assert "failed: invalid evaluation record: integration.val" in capsys.readouterr().out
    from rich.console import Console

    from hyarch.review.terminal import CandidateView

    view = CandidateView(run, Console(record=True, width=200))
    view.show("c0001", plot=False)
    text = view.console.export_text()
    assert "status failed" in text and "failed: invalid evaluation record" in text
