"""The HTML report: self-contained (no network), complete, and rendered by a real browser."""

from __future__ import annotations

import base64
import re
import shutil
import subprocess

import pytest

import hyarch.cli
from hyarch.report.html import build_report
from hyarch.runs import Run
from tests.review_fixtures import demo_copy


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    run = demo_copy(tmp_path_factory, "report")
    run.add_review({"candidate": "c0001", "verdict": "rejected", "note": "closure too big"})
    return run, build_report(run)


def test_report_is_self_contained_and_complete(report):
    run, path = report
    assert path == run.path / "report.html"
    text = path.read_text()
    # nothing loaded from elsewhere: no external src/href, no scripts
    assert not re.search(r'(src|href)\s*=\s*"(?!data:)', text)
    assert "<script" not in text and "@import" not in text
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', text)
    # Pareto, progress, parameters, and trajectories of the best ranked candidates (the
    # rejected c0001 is not among them: the one ranking puts rejections after the rest)
    assert len(images) >= 5
    assert all(base64.b64decode(i)[:8] == b"\x89PNG\r\n\x1a\n" for i in images)
    for needle in ("Leaderboard", "Pareto front", "search progress", "Against the baselines",
                   "Best candidates", "Physical parameters against the truth",
                   "Failed candidates", "closure too big", "c0003", "1.09662"):
        assert needle in text, needle
    # the baseline (the prior, proposer "baseline") is compared with the best candidates
    baselines = text.split("Against the baselines")[1].split("Best candidates")[0]
    assert "c0000" in baselines and "c0002" in baselines
    # the best ranked get a card each, the friction model first; not the rejected hybrid
    cards = re.findall(r'<div class="card"><h3>(c\d+)', text)
    assert cards[0] == "c0002" and "c0000" not in cards and "c0001" not in cards


def test_report_cli_writes_where_asked(tmp_path_factory, monkeypatch, capsys):
    run = demo_copy(tmp_path_factory, "report_cli")
    out = run.path.parent / "elsewhere.html"
    monkeypatch.setattr(hyarch.cli, "EXTRA_COMMANDS", [])
    assert hyarch.cli.main(["report", str(run.path), "--out", str(out), "--top", "1"]) == 0
    assert out.is_file() and f"report written to {out}" in capsys.readouterr().out
    assert len(re.findall(r'<div class="card">', out.read_text())) == 1
    monkeypatch.setattr(hyarch.cli, "EXTRA_COMMANDS", [])
    assert hyarch.cli.main(["report", str(run.path.parent / "missing")]) == 2


CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--hide-scrollbars"]


def chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.skip("headless Chromium is not installed "
                    "(apt-get install -y chromium): the browser check did not run")
    return exe


def screenshot(url: str, png, profile, size=(1280, 2000), extra=()) -> None:
    cmd = [chromium(), *CHROMIUM_FLAGS, *extra, f"--user-data-dir={profile}",
           f"--screenshot={png}", f"--window-size={size[0]},{size[1]}", url]
    subprocess.run(cmd, check=True, capture_output=True, timeout=120)


def test_report_renders_in_headless_chromium(report, tmp_path):
    import numpy as np
    from PIL import Image

    _, path = report
    png = tmp_path / "report.png"
    screenshot(path.as_uri(), png, tmp_path / "profile")
    img = np.asarray(Image.open(png).convert("RGB")).astype(int)
    assert img.shape == (2000, 1280, 3)
    white = (img == 255).all(axis=-1).mean()
    assert white < 0.9, f"the page is {100 * white:.0f}% white: (almost) blank"
    # the figures sit below the leaderboard: many distinct colours there, not just text
    region = img[500:2000]
    colours = len(np.unique(region[::2, ::2].reshape(-1, 3) // 8, axis=0))
    assert colours > 40, f"only {colours} colours in the plot region"
    # coloured (non-grey) pixels: plot markers, highlighted leaderboard rows, tags
    saturated = (img.max(axis=-1) - img.min(axis=-1) > 60).mean()
    assert saturated > 0.001


def test_report_of_a_run_with_nothing_finished(tmp_path):
    run = Run(tmp_path / "run")
    run.write_config({"space": str(tmp_path / "gone.yaml")})
    run.write_proposal("c0001", "x = 1", {"proposer": "llm", "round": 1})
    run.write_proposal("c0002", "bad", {"proposer": "llm", "round": 1})
    run.write_result("c0002", {"status": "failed", "reason": "syntax error at line 1"})
    text = build_report(run).read_text()
    assert "No finished candidates yet." in text
    assert "syntax error at line 1" in text and "not finished yet: 1" in text
    assert "Trajectory plots left out" in text and "gone.yaml" in text


def test_plots_and_bounds_come_from_what_the_evaluation_stored(tmp_path):
    """Stored predictions and parameter specs are read back; the code is never loaded
    (this one would write a file if it ran)."""
    from types import SimpleNamespace

    import numpy as np

    from hyarch.report.replay import ReplayError, StoredSpec, parameter_bounds, stored_predictions

    run = Run(tmp_path / "run")
    run.write_config({"space": "damped_pendulum"})
    run.write_proposal("c9", f"import os\nos.system('touch {tmp_path}/pwned')\n", {})
    run.write_result("c9", {"status": "ok", "metrics": {"val": {"nmse": 0.1}}, "parameter_specs": {
        "k": {"init": 1.0, "lower": 0.0, "upper": 2.0, "log": False, "unit": "1/s"},
        "junk": "not a spec"}})
    rec = run.read_candidate("c9")
    with pytest.raises(ReplayError, match="c9 has no stored predictions"):
        stored_predictions(rec)
    full, red = np.ones((2, 3, 1)), np.zeros((2, 3, 1))
    run.write_predictions("c9", {"train.full": full, "train.reduced": red,
                                 "val.full": full, "val.reduced": red})
    got = stored_predictions(rec, splits=("train", "val", "test"))
    assert set(got) == {"train", "val"} and (got["train"] == 1).all()
    assert (stored_predictions(rec, reduced=True)["train"] == 0).all()
    space = SimpleNamespace(splits={"train": SimpleNamespace(y=np.zeros((2, 3, 1))),
                                    "val": SimpleNamespace(y=np.zeros((2, 4, 1)))})
    assert set(stored_predictions(rec, space, ("train", "val"))) == {"train"}
    with pytest.raises(ReplayError, match="do not match the run's data on val"):
        stored_predictions(rec, space, ("val",))
    assert parameter_bounds(rec) == {"k": StoredSpec(1.0, 0.0, 2.0, False, "1/s")}
    failed = Run(run.path).read_candidate("c9")
    run.write_result("c9", {"status": "failed", "reason": "x"})
    with pytest.raises(ReplayError, match="did not finish"):
        stored_predictions(run.read_candidate("c9"))
    assert failed.status == "ok" and not (tmp_path / "pwned").exists()


def test_a_card_says_when_training_did_not_finish_and_what_a_twin_leaves_undetermined():
    from hyarch.record import Evaluation
    from hyarch.report.html import _training_line

    base = {"status": "ok", "parameters": {"k": 1.0}, "n_neural_params": 0,
            "metrics": {"val": {"nmse": 0.1, "mse": 0.1}}}
    done = Evaluation.from_dict({**base, "training": {"stopped": "early stopping",
                                                      "iterations": 300}})
    cut = Evaluation.from_dict({**base, "training": {"stopped": "time budget",
                                                     "iterations": 40}})
    assert 'class="muted">training stopped: early stopping' in _training_line(done)
    assert 'class="warn">training stopped: time budget' in _training_line(cut)
    assert "may be unfinished" in _training_line(cut)
    twin = Evaluation.from_dict({**base, "twin": {"uncertainty": {
        "flags": ["state I: standard error up to 18% of its peak"]}}})
    assert "not determined by the data: state I" in _training_line(twin)
