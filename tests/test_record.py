"""The typed evaluation record: a JSON round trip, and malformed records become FAILED."""

from __future__ import annotations

import json

import pytest

from hyarch.record import Evaluation, Status
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
