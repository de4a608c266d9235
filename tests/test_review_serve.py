"""The run's study served by optuna-dashboard on loopback: notes, forms, answers back."""

from __future__ import annotations

import json
import time
import urllib.request

import pytest

from hyarch.runs import Run
from tests.review_fixtures import demo_copy

pytest.importorskip("optuna_dashboard")

from hyarch.review.serve import (  # noqa: E402
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
)


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
        url = text.split("at ", 1)[1].split(" ", 1)[0]
        seen["url"] = url
        seen["page"] = get(url)

    serve(run, port=0, top=1, console=console, wait=visit)
    out = console.file.getvalue()
    assert seen["url"].startswith("http://127.0.0.1:") and b"<html" in seen["page"].lower()
    assert "loopback only" in out and "new review(s) from the dashboard" in out
