"""The run's study served by optuna-dashboard on loopback: notes, forms, answers back."""

from __future__ import annotations

import json
import re
import time
import urllib.request

import pytest

from hyarch.runs import Run
from tests.review_fixtures import demo_copy

pytest.importorskip("optuna_dashboard")

from hyarch.review.serve import (  # noqa: E402
    CODE_WIDTH,
    COMMENT_KEY,
    LOOPBACK,
    REVIEW_STUDY,
    SCORE_KEY,
    VERDICT_KEY,
    Dashboard,
    NoStudy,
    import_answers,
    open_study,
    prepare_dashboard,
    review_study,
    trials_by_candidate,
    unwrap_code,
    wrap_code,
)

METRIC_NAMES = ["val_nmse", "regularizer: closure_share", "complexity: n_neural_params"]
LONG_LINE = "# a reviewer should read this line to its end: " + "and so on, " * 12 + "THE END"


def get(url: str, deadline_s: float = 20.0) -> bytes:
    """GET with retries until the server answers or the deadline passes."""
    end = time.monotonic() + deadline_s
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                return r.read()
        except OSError:
            if time.monotonic() > end:
                raise


def post_json(url: str, body: dict) -> dict:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read() or b"{}")


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    run = demo_copy(tmp_path_factory, "serve")
    run.add_review({"candidate": "c0003", "note": "the contract error is instructive"})
    model = run.candidates_dir / "c0002" / "model.py"  # a line wider than a note shows
    model.write_text(model.read_text() + "\n" + LONG_LINE + "\n")
    study = open_study(run)  # a study made before hyarch named its objectives
    study._storage.set_study_system_attr(study._study_id, "study:metric_names", None)
    assert open_study(run).metric_names is None
    noted = prepare_dashboard(run, top=2)
    dash = Dashboard(run, port=0, sync_every=None).start()
    yield run, dash, noted
    dash.stop()


def test_binds_to_loopback_by_default(served):
    run, dash, _ = served
    assert Dashboard(run).host == LOOPBACK == dash.host
    assert dash.url.startswith("http://127.0.0.1:")


def _note(study, cid):
    import optuna
    from optuna_dashboard import get_note

    return get_note(optuna.trial.Trial(study, trials_by_candidate(study)[cid]._trial_id))


def test_notes_on_the_search_study_and_open_review_trials(served):
    import optuna

    run, _, noted = served
    assert noted[:2] == ["c0002", "c0004"] and "c0003" in noted  # best two, and reviewed
    study = open_study(run)
    note = _note(study, "c0002")
    assert "## hyarch candidate c0002" in note
    assert "self.alpha = self.parameter" in note  # the code
    assert "![fit plot" in note and "/artifacts/" in note  # the plot, as an artifact
    assert "the contract error is instructive" in _note(study, "c0003")
    reviews = review_study(run)
    open_ = trials_by_candidate(reviews, states=(optuna.trial.TrialState.RUNNING,))
    assert sorted(open_) == sorted(noted)
    assert _note(reviews, "c0002") == note
    # preparing again reuses the open review trials
    prepare_dashboard(run, top=2, plots=False)
    assert len(review_study(run).get_trials()) == len(noted)


def code_block(note: str) -> str:
    return note.split("```python\n", 1)[1].split("\n```", 1)[0]


def test_wrap_code_breaks_long_lines_at_spaces_and_unwraps_exactly():
    src = "def f(x):\n    return x + " + " + ".join(["x"] * 30) + "\n\n# end"
    wrapped = wrap_code(src, width=40)
    assert wrapped.splitlines()[:3] == ["def f(x):", "    return x + x + x + x + x + x + x + ",
                                        "    ↪ x + x + x + x + x + x + x + x + x "]
    assert max(map(len, wrapped.splitlines())) <= 40
    assert unwrap_code(wrapped) == src
    assert wrap_code("    " + "y" * 50, width=40) == "    " + "y" * 36 + "\n    ↪ " + "y" * 14
    assert wrap_code(src, width=200) == src  # lines that fit are left alone


def test_notes_hold_the_whole_code_within_the_width_shown(served):
    run, _, noted = served
    study = open_study(run)
    for cid in noted:
        source = run.read_candidate(cid).source.rstrip()
        block = code_block(_note(study, cid))
        assert unwrap_code(block) == source, cid
        assert max(map(len, block.splitlines())) <= CODE_WIDTH, cid
    block = code_block(_note(study, "c0002"))
    assert LONG_LINE not in block and LONG_LINE in unwrap_code(block)  # wrapped, and whole
    assert block.splitlines()[-1].lstrip().startswith("↪ ")
    assert block.splitlines()[-1].endswith("THE END")


def test_each_trial_names_its_candidate_and_the_objectives_are_named(served):
    import optuna
    from optuna_dashboard import get_note

    run, _, noted = served
    study = open_study(run)
    assert study.metric_names == METRIC_NAMES  # given to the study made without them
    searched = trials_by_candidate(study)
    assert set(noted) <= set(searched)
    for cid in noted:  # the dashboard lists trials by number: the note says which is which
        assert _note(study, cid).splitlines()[0] == (
            f"## hyarch candidate {cid} (trial {searched[cid].number} of the search study)")
    assert "`candidate_id`" in get_note(study)
    reviews = review_study(run)
    open_ = trials_by_candidate(reviews, states=(optuna.trial.TrialState.RUNNING,))
    for cid in noted:
        assert open_[cid].user_attrs["candidate_id"] == cid
        assert _note(reviews, cid).startswith(f"## hyarch candidate {cid} ")


def test_a_new_study_names_its_objectives_after_the_space(tmp_path):
    from hyarch.ranking import study as ranking

    run = Run(tmp_path / "run")
    run.write_config({"space": "damped_pendulum"})
    assert ranking.open_study(run).metric_names == METRIC_NAMES
    other = Run(tmp_path / "other")
    other.write_config({"space": "damped_pendulum"})
    obj = ranking.Objectives(regularizer="l2", complexity="none")
    assert ranking.open_study(other, objectives=obj).metric_names == [
        "val_nmse", "regularizer: l2", "complexity: none"]


def test_serving_the_api_prints_no_traceback(served, capfd):
    """optuna-dashboard divides by the number of parameters for importances; hyarch's
    trials have none. Each endpoint a page view asks for answers, and stderr stays quiet."""
    import optuna

    run, dash, _ = served
    base = dash.url.removesuffix("/dashboard")
    complete = open_study(run).get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert len(complete) >= 2  # with fewer the dashboard never computes importances
    capfd.readouterr()
    listing = json.loads(get(base + "/api/studies"))["study_summaries"]
    ids = {s["study_name"]: s["study_id"] for s in listing}
    detail = json.loads(get(f"{base}/api/studies/{ids['hyarch']}?after=0"))
    assert detail["objective_names"] == METRIC_NAMES
    for t in detail["trials"]:  # each trial names its candidate, and so does its note
        cid = next(a["value"] for a in t["user_attrs"] if a["key"] == "candidate_id")
        assert re.fullmatch(r"c\d{4}", cid)
        if t["note"]["body"]:
            assert t["note"]["body"].startswith(f"## hyarch candidate {cid} (trial {t['number']} ")
    for sid, n_objectives in ((ids["hyarch"], 3), (ids[REVIEW_STUDY], 1)):
        got = json.loads(get(f"{base}/api/studies/{sid}/param_importances"))
        assert got == {"param_importances": [[]] * n_objectives}
        get(f"{base}/api/studies/{sid}?after=0")
    get(base + "/api/meta")
    err = capfd.readouterr().err
    assert "Traceback" not in err and "ZeroDivisionError" not in err, err


def test_dashboard_serves_the_study_and_takes_answers(served):
    run, dash, _ = served
    base = dash.url.removesuffix("/dashboard")
    listing = json.loads(get(base + "/api/studies"))["study_summaries"]
    studies = {s["study_name"]: s for s in listing}
    assert {"hyarch", REVIEW_STUDY} <= set(studies)
    search = json.loads(get(f"{base}/api/studies/{studies['hyarch']['study_id']}"))
    assert len(search["trials"]) == 5
    detail = json.loads(get(f"{base}/api/studies/{studies[REVIEW_STUDY]['study_id']}"))
    form = detail["form_widgets"]
    assert form["output_type"] == "user_attr"
    assert [w["user_attr_key"] for w in form["widgets"]] == [VERDICT_KEY, SCORE_KEY,
                                                             COMMENT_KEY]
    trial = next(t for t in detail["trials"]
                 if {"key": "candidate_id", "value": "c0004"} in t["user_attrs"])
    assert trial["state"] == "Running"
    # the fit plot that the note links to is served
    note = trial["note"]["body"]
    url = note.split("![fit plot", 1)[1].split("](", 1)[1].split(")", 1)[0]
    assert get(base + url)[:4] == b"\x89PNG"
    assert b"<html" in get(dash.url).lower()
    # what the form's "Submit" does: the answers become the review trial's user attributes
    post_json(f"{base}/api/trials/{trial['trial_id']}/user-attrs",
              {"user_attrs": {VERDICT_KEY: -1, SCORE_KEY: 2,
                              COMMENT_KEY: "the network does the physics"}})
    added = import_answers(run)
    assert [(e["candidate"], e["verdict"], e["note"], e["score"], e["source"])
            for e in added] == [("c0004", "rejected", "the network does the physics", 2.0,
                                 "dashboard")]
    assert run.verdicts()["c0004"]["verdict"] == "rejected"
    assert import_answers(run) == []  # each answer once: the review trial is now complete
    done = review_study(run).trials[trial["number"]]
    assert done.state.name == "COMPLETE" and done.value == 2.0


def test_no_study_is_a_clear_error(tmp_path):
    run = Run(tmp_path / "empty")
    run.write_config({"space": "damped_pendulum"})
    with pytest.raises(NoStudy, match="no Optuna journal"):
        open_study(run)


def test_dashboard_renders_notes_and_forms_in_headless_chromium(served, tmp_path):
    """The review study's trial page, in a real browser: the note's fit plot and the form."""
    import shutil as sh
    import subprocess

    import numpy as np
    from PIL import Image

    exe = sh.which("chromium") or sh.which("chromium-browser")
    if exe is None:
        pytest.skip("headless Chromium is not installed "
                    "(apt-get install -y chromium): the browser check did not run")
    run, dash, _ = served
    sid = review_study(run)._study_id
    url = dash.url + f"/studies/{sid}/trials"
    png = tmp_path / "dashboard.png"
    subprocess.run([exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--hide-scrollbars",
                    f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={png}",
                    "--window-size=1280,2400", "--virtual-time-budget=10000", url],
                   check=True, capture_output=True, timeout=120)
    img = np.asarray(Image.open(png).convert("RGB")).astype(int)
    assert (img == 255).all(axis=-1).mean() < 0.95, "blank page: the dashboard did not render"
    # the dashboard's blue app bar
    top = img[:40].reshape(-1, 3)
    assert ((top[:, 2] > 180) & (top[:, 0] < 80)).mean() > 0.5
    # the note's fit plot: matplotlib's orange and green trajectory lines
    near = lambda rgb: (np.abs(img - np.array(rgb)).sum(axis=-1) < 60).sum()  # noqa: E731
    assert near((255, 127, 14)) > 50 and near((44, 160, 44)) > 50


def test_serve_says_it_is_loopback_only_and_imports_on_stop(served):
    import io

    from rich.console import Console

    from hyarch.review.serve import serve

    run, _, _ = served
    console = Console(file=io.StringIO(), width=200)
    seen = {}

    def visit():  # stands in for the person at the browser, then Ctrl-C
        text = console.file.getvalue()
        seen["text"] = text
        seen["url"] = re.search(r"http://\S+/dashboard", text).group(0)
        seen["page"] = get(seen["url"])

    serve(run, port=0, top=1, console=console, wait=visit)
    out = console.file.getvalue()
    assert seen["url"].startswith("http://127.0.0.1:") and b"<html" in seen["page"].lower()
    assert "loopback only" in out and "new review(s) from the dashboard" in out
    # it says what it does before the URL, which comes once the server answers
    preparing = re.search(r"preparing notes for (\d+) candidates", seen["text"])
    assert preparing and preparing.start() < seen["text"].index(seen["url"])
    assert f"{preparing.group(1)} candidates carry notes and forms" in out
