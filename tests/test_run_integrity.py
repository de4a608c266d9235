"""Defence in depth in the parent (issues #12, #14): the run folder is written only by the
parent and never through a link; damaged records make a failed candidate, not a broken
run; a damaged journal reopens; one trial per candidate after any number of resumes."""

from __future__ import annotations

import json
import os

import optuna
import pytest

from hyarch.ranking import keys
from hyarch.ranking.leaderboard import leaderboard, leaderboard_json
from hyarch.ranking.study import (
    claim,
    claimed_ids,
    fail_stale,
    open_study,
    record,
    recorded_ids,
    tell,
)
from hyarch.runs import Run, UnsafePathError, atomic_write


def ok_result(nmse: float = 0.1, share: float = 0.0) -> dict:
    split = {"mse": nmse, "nmse": nmse, "diverged": False,
             "per_state": {"x": {"mse": nmse, "nmse": nmse}},
             "per_trajectory_nmse": [nmse, nmse]}
    return {"status": "ok", "reason": None, "parameters": {"k": 1.0},
            "param_rel_error": {"k": 0.01}, "metrics": {"train": split, "val": split},
            "reduced": {}, "regularizers": {"closure_norm": 0.0}, "closure_share": share,
            "n_neural_params": 0, "seconds": 0.5, "wall_seconds": 1.0}


def make_run(tmp_path, n: int = 3) -> Run:
    run = Run(tmp_path / "run")
    run.write_config({"name": "run", "space": "none", "budget": 10})
    for i in range(1, n + 1):
        cid = f"c{i:04d}"
        run.write_proposal(cid, f"# model {i}\n", {"proposer": "offline", "parents": [],
                                                   "round": 1, "code_hash": f"h{i}"})
        run.write_result(cid, ok_result(0.1 * i))
    return run


def cli_leaderboard(run: Run, capsys) -> list[dict]:
    from hyarch.cli import main

    capsys.readouterr()
    assert main(["leaderboard", str(run.path), "--json"]) in (0, None)
    return json.loads(capsys.readouterr().out)


# -- links -------------------------------------------------------------------------------


def test_a_symlinked_next_candidate_folder_is_refused_and_nothing_goes_through(tmp_path):
    run = make_run(tmp_path, 1)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    os.symlink(elsewhere, run.candidates_dir / "c0002")
    with pytest.raises(UnsafePathError, match="link"):
        run.candidate_dir("c0002")
    with pytest.raises(UnsafePathError):
        run.write_proposal("c0002", "x = 1\n", {"proposer": "offline"})
    with pytest.raises(UnsafePathError):
        run.write_result("c0002", ok_result())
    with pytest.raises(UnsafePathError):
        atomic_write(run.candidates_dir / "c0002" / "weights.pt", b"w")
    with pytest.raises(UnsafePathError):
        run.write_predictions("c0002", {"val.full": [1.0]})
    assert list(elsewhere.iterdir()) == []
    assert run.candidate_ids() == ["c0001"]  # a link is not a candidate


def test_a_symlinked_candidates_folder_or_file_is_refused(tmp_path):
    run = make_run(tmp_path, 1)
    target = tmp_path / "target.json"
    target.write_text("{}")
    (run.candidates_dir / "c0001" / "metrics.json").unlink()
    os.symlink(target, run.candidates_dir / "c0001" / "metrics.json")
    with pytest.raises(UnsafePathError):
        run.write_result("c0001", ok_result())
    assert target.read_text() == "{}"
    rec = run.read_candidate("c0001")  # not read through the link either
    assert rec.status == "failed" and "link" in rec.result["reason"]
    # candidates/ itself replaced by a link
    other = tmp_path / "other"
    other.mkdir()
    os.rename(run.candidates_dir, tmp_path / "moved")
    os.symlink(other, run.candidates_dir)
    with pytest.raises(UnsafePathError):
        run.write_proposal("c0002", "x = 1\n", {})
    assert list(other.iterdir()) == []
    assert not list((tmp_path / "run").glob("**/*.tmp"))


def test_temporary_files_are_removed_on_error(tmp_path, monkeypatch):
    run = make_run(tmp_path, 1)
    real_fsync = os.fsync

    def no_space(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", no_space)
    with pytest.raises(OSError):
        atomic_write(run.candidates_dir / "c0001" / "weights.pt", b"w" * 1000)
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert not [p for p in (run.candidates_dir / "c0001").iterdir() if p.name.endswith(".tmp")]
    assert not (run.candidates_dir / "c0001" / "weights.pt").exists()


def test_old_temporary_files_are_swept_on_open(tmp_path):
    run = make_run(tmp_path, 1)
    stale = run.candidates_dir / "c0001" / ".weights.pt.abc.tmp"
    stale.write_bytes(b"x")
    os.utime(stale, (1, 1))
    fresh = run.candidates_dir / "c0001" / ".metrics.json.def.tmp"
    fresh.write_bytes(b"x")
    open_study(run)
    assert not stale.exists() and fresh.exists()


# -- damaged records -----------------------------------------------------------------------


@pytest.mark.parametrize("name,content", [
    ("metrics.json", b"\x00garbage{{{"),
    ("metrics.json", json.dumps({**ok_result(), "metrics": {"val": {"nmse": "0.0"}}}).encode()),
    ("metrics.json", json.dumps({**ok_result(), "closure_share": "0"}).encode()),
    ("metrics.json", json.dumps([1, 2, 3]).encode()),
    ("metrics.json", json.dumps({**ok_result(), "metrics": {"val": {"nmse": 0.1,
                                                                   "per": ["0"]}}}).encode()),
    ("metrics.json", b"{" * 100000),
    ("metrics.json", b" " * (9 << 20)),
    ("meta.json", b"not json"),
    ("meta.json", json.dumps({"parents": 5, "round": "x"}).encode()),
    ("meta.json", json.dumps("a string").encode()),
])
def test_a_damaged_record_is_a_failed_candidate_and_the_leaderboard_works(
        tmp_path, capsys, name, content):
    run = make_run(tmp_path, 3)
    (run.candidates_dir / "c0001" / name).write_bytes(content)
    rec = run.read_candidate("c0001")
    assert rec.status == "failed" and name in rec.result["reason"]
    assert rec.meta["id"] == "c0001" and isinstance(rec.parents, list)
    rows = leaderboard(run)
    assert [r.id for r in rows][-1] == "c0001" and rows[-1].score is None
    assert rows[0].id == "c0002" and rows[0].pareto
    out = cli_leaderboard(run, capsys)
    assert out[-1]["id"] == "c0001" and out[-1]["status"] == "failed"
    # the study takes the failed record without a word
    study = open_study(run)
    for r in run.candidates():
        tell(study, None, r.id, r.meta, r.source, r.result)
    assert recorded_ids(study)["c0001"].state == optuna.trial.TrialState.FAIL


def test_tell_record_and_leaderboard_take_malformed_results(tmp_path):
    run = make_run(tmp_path, 1)
    study = open_study(run)
    bad = [{**ok_result(), "metrics": {"val": {"nmse": "0.0"}}},
           {**ok_result(), "metrics": {"val": {"nmse": float("nan")}}},
           {**ok_result(), "metrics": {"val": "x"}},
           {**ok_result(), "closure_share": "0.1"},
           {**ok_result(), "n_neural_params": [1]},
           {"status": "ok"}, {}, {"status": "failed", "reason": 12}]
    for i, res in enumerate(bad):
        cid = f"x{i}"
        tell(study, None, cid, {"parents": 3, "round": "r"}, None, res)
        record(study, f"y{i}", "not a dict", res)
    trials = study.get_trials()
    assert len(trials) == 2 * len(bad)
    assert all(t.state == optuna.trial.TrialState.FAIL for t in trials)
    # and the leaderboard of a run whose records slipped past reading
    from hyarch.ranking.leaderboard import score_of

    assert all(score_of(r) is None for r in bad)


# -- the journal ---------------------------------------------------------------------------


def recorded_run(tmp_path, n=3) -> Run:
    run = make_run(tmp_path, n)
    study = open_study(run)
    for r in run.finished():
        record(study, r.id, r.meta, r.result)
    return run


def test_a_journal_with_garbage_and_a_torn_tail_reopens(tmp_path, capsys):
    run = recorded_run(tmp_path)
    with open(run.journal_path, "ab") as fh:
        fh.write(b"this is garbage a candidate appended, long enough\n")
        fh.write(b'{"op_code": 6, "worker_id": "w", "trial_id": "zz", "state": 1}\n')
        fh.write(b'{"op_code":8,"worker_id":"w","trial_id":0,"user_attr":{"a"')  # torn
    capsys.readouterr()
    study = open_study(run)
    err = capsys.readouterr().err
    assert "torn last line" in err and "line 7" not in err.split("dropped")[0]
    assert "garbage a candidate" in err
    assert set(recorded_ids(study)) == {"c0001", "c0002", "c0003"}
    # appending works, and a second open finds nothing more to drop
    got = claim(study, "w", None)
    assert got is not None and got[1] == "c0004"
    capsys.readouterr()
    again = open_study(run)
    assert "dropped" not in capsys.readouterr().err
    assert len(again.get_trials()) == 4
    # plain Optuna reads the repaired journal too (damaged lines blanked in place)
    from optuna.storages.journal import JournalFileBackend

    plain = optuna.load_study(study_name=keys.STUDY_NAME, storage=optuna.storages.JournalStorage(
        JournalFileBackend(str(run.journal_path))))
    assert len(plain.get_trials()) == 4


def test_garbage_appended_while_open_does_not_break_the_study(tmp_path):
    run = recorded_run(tmp_path)
    study = open_study(run)
    with open(run.journal_path, "ab") as fh:
        fh.write(b"\xff\xfe garbage\n")
        fh.write(b"x\n")
    got = claim(study, "w", None)  # reads and writes past the garbage
    assert got[1] == "c0004"
    assert open_study(run) and len(open_study(run).get_trials()) == 4
    assert len(recorded_ids(study)) == 3


def test_a_full_disk_leaves_no_torn_line_and_the_journal_keeps_working(tmp_path, monkeypatch):
    run = recorded_run(tmp_path)
    study = open_study(run)
    size = run.journal_path.stat().st_size
    real_write = os.write

    def half_then_full(fd, data):
        real_write(fd, bytes(data)[:10])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "write", half_then_full)
    with pytest.raises(OSError):
        claim(study, "w", None)
    monkeypatch.setattr(os, "write", real_write)
    assert run.journal_path.stat().st_size == size
    assert open_study(run) is not None and claim(open_study(run), "w", None) is not None


def test_an_unreplayable_journal_is_rebuilt_from_the_candidate_folders(tmp_path, capsys):
    run = recorded_run(tmp_path, 3)
    run.write_proposal("c0005", "# unfinished\n", {"proposer": "offline"})
    # a well-formed entry that Optuna cannot replay: a study with a clashing name
    run.journal_path.write_bytes(run.journal_path.read_bytes() + json.dumps(
        {"op_code": 0, "worker_id": "w", "study_name": keys.STUDY_NAME,
         "directions": [1]}).encode() + b"\n" + b'{"op_code": 4, "worker_id": "w",'
        b' "study_id": 0, "datetime_start": "bad"}\n')
    capsys.readouterr()
    study = open_study(run)
    assert "rebuilt" in capsys.readouterr().err
    assert list(run.path.glob("study.journal.corrupt-*"))
    assert set(recorded_ids(study)) == {"c0001", "c0002", "c0003"}
    assert "c0005" in claimed_ids(study)
    assert claim(study, "w", None)[1] == "c0006"  # ids do not collide with the folders


# -- one trial per candidate ---------------------------------------------------------------


def claimed_run(tmp_path):
    """A run with one candidate claimed by worker host:1 and proposed, not evaluated."""
    run = Run(tmp_path / "run")
    run.write_config({"name": "run"})
    study = open_study(run)
    number, cid = claim(study, "host:1", budget=3)
    run.write_proposal(cid, "# m\n", {"trial": number, "proposer": "offline"})
    return run, study, number, cid


def test_one_trial_per_candidate_after_any_number_of_resumes(tmp_path):
    run, study, number, cid = claimed_run(tmp_path)
    for resume in range(3):  # killed while evaluating, resumed, killed again ...
        study = open_study(run)
        failed = fail_stale(study, 3600, dead_workers={"host:1"} if resume == 0 else set())
        assert failed == ([cid] if resume == 0 else [])
        assert claimed_ids(study) == {cid}  # still counts against the budget
    rec = run.read_candidate(cid)
    run.write_result(cid, ok_result())
    tell(study, rec.meta["trial"], cid, rec.meta, rec.source, ok_result())
    for _ in range(2):  # resumes after the result: recording again is a no-op
        study = open_study(run)
        tell(study, rec.meta["trial"], cid, rec.meta, rec.source, ok_result())
        record(study, cid, rec.meta, ok_result())
    with_id = [t for t in study.get_trials() if t.user_attrs.get(keys.CANDIDATE_ID) == cid]
    assert len(with_id) == 1 and with_id[0].state == optuna.trial.TrialState.COMPLETE
    assert claimed_ids(study) == {cid}
    # a forged trial number in meta.json cannot finish another candidate's claim
    n2, c2 = claim(study, "host:2", budget=3)
    tell(study, n2, cid, rec.meta, rec.source, ok_result())
    live = next(t for t in study.get_trials() if t.number == n2)
    assert live.state == optuna.trial.TrialState.RUNNING


def test_a_search_killed_between_the_result_and_the_tell_records_it_on_resume(tmp_path):
    # tell() writes the result among the trial's attributes, then finishes the trial. A
    # SIGKILL in between (seen once in tests/test_search.py's kill-and-resume, under load)
    # left a running trial that counted as recorded: resume did not tell it again, then
    # failed it as stale, which took its id away; the candidate, finished on disk, was in
    # no ranking.
    run, study, number, cid = claimed_run(tmp_path)
    run.write_result(cid, ok_result())
    trial = next(t for t in study.get_trials() if t.number == number)
    study._storage.set_trial_user_attr(trial._trial_id, keys.RESULT, ok_result())  # killed here
    study = open_study(run)  # resume: what Session.run_search does, in its order
    assert cid not in recorded_ids(study)
    rec = run.read_candidate(cid)
    tell(study, rec.meta["trial"], cid, rec.meta, rec.source, rec.result)
    assert fail_stale(study, 3600, dead_workers={"host:1"}) == []
    assert recorded_ids(study)[cid].state == optuna.trial.TrialState.COMPLETE
    with_id = [t for t in study.get_trials() if t.user_attrs.get(keys.CANDIDATE_ID) == cid]
    assert len(with_id) == 1


def test_leaderboard_json_of_a_damaged_run(tmp_path, capsys):
    run = make_run(tmp_path, 2)
    (run.candidates_dir / "c0002" / "metrics.json").write_text('{"status": "ok", "metrics":'
                                                                ' {"val": {"nmse": "0.0"}}}')
    rows = leaderboard_json(run)
    assert [r["id"] for r in rows] == ["c0001", "c0002"]
    assert rows[1]["status"] == "failed"
