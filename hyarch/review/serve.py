"""``hyarch review RUN --serve``: the run's Optuna study in optuna-dashboard, for review.

Two studies are shown. The search's own study ("hyarch": every candidate a finished trial,
its Pareto front and plots) gets a note on the trials of the best and of the reviewed
candidates (Markdown: scores, fitted parameters, reviewer notes, the code, the fit plot).
Optuna refuses to change a finished trial's attributes, so the forms live in a second study in
the same storage, "hyarch:review": one open (running) trial per candidate to review, with the
same note and human-in-the-loop forms (verdict, score, comment) whose answers land in that
trial's user attributes. ``import_answers`` copies each answer into reviews.jsonl (where the
search reads it) and completes the review trial with the score; it runs every few seconds
while serving and once more when the server stops.

The server binds to 127.0.0.1 unless told otherwise: optuna-dashboard has no authentication,
and anyone who can reach it can edit the study.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import wsgiref.simple_server
from collections.abc import Callable, Iterable
from typing import Any

from hyarch.ranking.keys import CANDIDATE_ID as CANDIDATE_KEY
from hyarch.ranking.keys import STUDY_NAME
from hyarch.report.summary import Row, fmt, leaderboard
from hyarch.review.terminal import record_review
from hyarch.runs import Run

# The dashboard forms' answers, as trial user attributes (the other keys hyarch writes to
# Optuna are in hyarch.ranking.keys).
REVIEW_STUDY = f"{STUDY_NAME}:review"
VERDICT_KEY = "review:verdict"
SCORE_KEY = "review:score"
COMMENT_KEY = "review:comment"
VERDICT_CHOICES = (("approve", 1.0, "approved"), ("reject", -1.0, "rejected"),
                   ("pin", 0.0, "pinned"))
NOTE_HEADER = "## hyarch candidate"
STUDY_NOTE_HEADER = "# hyarch run"
LOOPBACK = "127.0.0.1"
CODE_WIDTH = 92  # characters of code a dashboard note shows without scrolling sideways
CONTINUED = "↪ "  # starts a code line wrapped in a note (the line before continues here)

log = logging.getLogger(__name__)


class NoStudy(Exception):
    """The run has no Optuna study to serve."""


def journal_storage(run: Run):
    import optuna

    return optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(run.journal_path)))


def open_study(run: Run, storage=None):
    import optuna

    if not run.journal_path.is_file():
        raise NoStudy(f"{run.journal_path}: no Optuna journal in this run (it is written by "
                      "`hyarch search`)")
    storage = storage or journal_storage(run)
    try:
        return optuna.load_study(study_name=STUDY_NAME, storage=storage)
    except KeyError:
        raise NoStudy(f"{run.journal_path}: no study named {STUDY_NAME!r}") from None


def trials_by_candidate(study, states=None) -> dict[str, Any]:
    """The latest trial of each candidate id in ``study``."""
    out = {}
    for t in study.get_trials(deepcopy=False, states=states):
        cid = t.user_attrs.get(CANDIDATE_KEY)
        if cid:
            out[cid] = t
    return out


def review_study(run: Run, storage=None, *, create: bool = False):
    """The study that holds the review forms (None if absent and not ``create``)."""
    import optuna

    storage = storage or journal_storage(run)
    if create:
        optuna.logging.set_verbosity(optuna.logging.WARNING)  # as hyarch.ranking.study does
        return optuna.create_study(storage=storage, study_name=REVIEW_STUDY,
                                   direction="maximize", load_if_exists=True)
    try:
        return optuna.load_study(study_name=REVIEW_STUDY, storage=storage)
    except KeyError:
        return None


def register_forms(study) -> None:
    from optuna_dashboard import (
        ChoiceWidget,
        SliderWidget,
        TextInputWidget,
        register_user_attr_form_widgets,
    )

    register_user_attr_form_widgets(study, [
        ChoiceWidget(choices=[c for c, _, _ in VERDICT_CHOICES],
                     values=[v for _, v, _ in VERDICT_CHOICES],
                     description="Verdict (reject: dropped from the pool; pin: kept whatever "
                                 "its score)", user_attr_key=VERDICT_KEY),
        SliderWidget(min=1, max=5, step=1, description="Score, 5 = the model I would use",
                     user_attr_key=SCORE_KEY),
        TextInputWidget(description="Comment (the next LLM prompts quote it)",
                        user_attr_key=COMMENT_KEY, optional=True),
    ])


def wrap_code(source: str, width: int = CODE_WIDTH) -> str:
    """The code with each line longer than ``width`` broken (after a space where there is
    one) and its continuation marked ``↪`` under the line's indentation: the dashboard
    neither wraps nor shows a note's code blocks past its width. ``unwrap_code`` undoes it."""
    out = []
    for line in source.rstrip().splitlines():
        indent = line[:len(line) - len(line.lstrip())] + CONTINUED
        while len(line) > width and len(indent) < width - 8:
            cut = line.rfind(" ", len(indent), width) + 1 or width
            out.append(line[:cut])
            line = indent + line[cut:]
        out.append(line)
    return "\n".join(out)


def unwrap_code(text: str) -> str:
    """The code ``wrap_code`` wrapped, as it was (less trailing blank lines)."""
    out: list[str] = []
    for line in text.splitlines():
        rest = line.lstrip()
        if out and rest.startswith(CONTINUED):
            out[-1] += rest[len(CONTINUED):]
        else:
            out.append(line)
    return "\n".join(out)


def candidate_note(run: Run, row: Row, fit_url: str | None, no_plot: str | None = None,
                   trial_number: int | None = None) -> str:
    """The Markdown note on a candidate; ``no_plot`` says why a finished one has no plot.

    It opens with the candidate id and ``trial_number``: the dashboard lists trials by
    their Optuna numbers (from 0), which are not the ids (c0001 is usually trial 0)."""
    rec = run.read_candidate(row.id)
    trial = "" if trial_number is None else f" (trial {trial_number} of the search study)"
    lines = [f"{NOTE_HEADER} {row.id}{trial}", "",
             f"proposer **{row.proposer}**, round {fmt(row.round)}, parents "
             f"{', '.join(row.parents) or 'none'}, status **{row.status}**"]
    if row.ok:
        lines += ["", f"rank {row.rank}{' (Pareto front)' if row.pareto else ''}: "
                  f"val nmse **{fmt(row.val_nmse)}**, train nmse {fmt(row.train_nmse)}, "
                  f"closure share {fmt(row.closure_share, '.3f')}, "
                  f"neural parameters {fmt(row.n_neural, 'd')}", "",
                  "| parameter | fitted | rel. error vs truth |", "|---|---|---|"]
        for k, v in row.parameters.items():
            err = row.param_rel_error.get(k)
            lines.append(f"| {k} | {v:.6g} | {'-' if err is None else f'{100 * err:.2f}%'} |")
    elif row.reason:
        lines += ["", f"failed: `{row.reason[:500]}`"]
    if row.verdict or row.notes:
        lines += ["", f"**review so far**: {row.verdict or '-'}"]
        lines += [f"> {n}" for n in row.notes]
    if fit_url:
        lines += ["", f"![fit plot: data and rollout]({fit_url})"]
    elif no_plot and row.ok:
        lines += ["", f"no fit plot: {no_plot}"]
    code = rec.source.rstrip()
    wrapped = wrap_code(code)
    lines += ["", f"the code, `{rec.path / 'model.py'}`, whole"
              + (f" (lines over {CODE_WIDTH} characters go on after `{CONTINUED.strip()}`)"
                 if wrapped != code else "") + ":",
              "", "```python", wrapped, "```"]
    return "\n".join(lines)


def _fit_artifact(run: Run, study, cid: str, artifact_store, space_of: Callable[[], Any], *,
                  make: bool = True) -> tuple[str | None, str | None]:
    """URL of the candidate's fit plot, a study artifact (finished trials take none);
    uploaded once, and made (from the stored predictions) only if ``make``. Without a
    plot, None and why (None when plots were not asked for). ``space_of()`` gives the
    run's space (or None), asked only for a plot not made yet: loading it imports torch,
    seconds that a run whose plots exist does not need to wait."""
    import shutil
    import tempfile

    import optuna
    from optuna_dashboard.artifact import get_artifact_path

    from hyarch.report.plots import fit_plot

    name = f"{cid}_fit.png"
    for meta in optuna.artifacts.get_all_artifact_meta(study):
        if meta.filename == name:
            return get_artifact_path(study, meta.artifact_id), None
    if not make:
        return None, None
    rec = run.read_candidate(cid)
    if (rec.path / "fit.png").is_file():
        path, why = rec.path / "fit.png", None
    elif (space := space_of()) is not None:
        path, why = fit_plot(run, rec, space)
    else:
        path, why = None, "the run's space cannot be loaded"
    if path is None:
        return None, why
    with tempfile.TemporaryDirectory() as tmp:
        named = shutil.copyfile(path, f"{tmp}/{name}")
        aid = optuna.artifacts.upload_artifact(artifact_store=artifact_store, file_path=named,
                                               study_or_trial=study, mimetype="image/png")
    return get_artifact_path(study, aid), None


def artifact_store_of(run: Run):
    import optuna

    d = run.path / "artifacts"
    d.mkdir(parents=True, exist_ok=True)
    return optuna.artifacts.FileSystemArtifactStore(str(d))


def _save_note(study, trial, body: str) -> bool:
    """Save hyarch's note unless someone edited it in the dashboard (header gone)."""
    import optuna
    from optuna_dashboard import get_note, save_note

    live = optuna.trial.Trial(study, trial._trial_id)
    current = get_note(live)
    if current and not current.startswith(NOTE_HEADER):
        return False
    if current != body:
        save_note(live, body)
    return True


def notes_to_prepare(run: Run, top: int = 10) -> list[Row]:
    """The candidates that get notes: the ``top`` best and every reviewed one."""
    rows = leaderboard(run)
    return list(dict((r.id, r) for r in [r for r in rows if r.ok][:top]
                     + [r for r in rows if r.verdict or r.notes]).values())


def _space_loader(run: Run, plots: bool) -> Callable[[], Any]:
    """The run's space, loaded on the first call (None without plots or when it cannot
    be loaded, with a warning once)."""
    loaded: list[Any] = []

    def space_of():
        if not loaded:
            space = None
            if plots:
                from hyarch.report.replay import ReplayError, load_run_space

                try:
                    space = load_run_space(run)
                except ReplayError as e:
                    log.warning("no fit plots: %s", e)
            loaded.append(space)
        return loaded[0]

    return space_of


def _save_study_note(study, body: str) -> None:
    """Save hyarch's study note unless someone wrote their own in the dashboard."""
    from optuna_dashboard import get_note, save_note

    current = get_note(study)
    ours = (STUDY_NOTE_HEADER, "# Review of hyarch run")  # and the header it had before
    if current and not current.startswith(ours):
        return
    if current != body:
        save_note(study, body)


def prepare_dashboard(run: Run, study=None, *, top: int = 10, plots: bool = True,
                      progress: Callable[[int, int, str], None] | None = None) -> list[str]:
    """Notes on the search study's trials and open review trials with forms.

    Covers the reviewed candidates and the ``top`` best; returns their ids. ``progress``
    is called with (done, total, candidate id) before each candidate's note.
    """
    import optuna

    from hyarch.ranking.study import name_objectives

    study = study or open_study(run)
    name_objectives(study, run)
    reviews = review_study(run, study._storage, create=True)
    register_forms(reviews)
    chosen = notes_to_prepare(run, top)
    by_id = trials_by_candidate(study)
    space_of = _space_loader(run, plots)
    store = artifact_store_of(run)
    open_reviews = trials_by_candidate(reviews, states=(optuna.trial.TrialState.RUNNING,))
    noted = []
    for i, row in enumerate(chosen):
        if progress is not None:
            progress(i, len(chosen), row.id)
        url, why = (_fit_artifact(run, reviews, row.id, store, space_of, make=plots)
                    if row.ok else (None, None))
        searched = by_id.get(row.id)
        body = candidate_note(run, row, url, why,
                              trial_number=None if searched is None else searched.number)
        if searched is not None:
            _save_note(study, searched, body)
        trial = open_reviews.get(row.id)
        if trial is None:
            live = reviews.ask()
            live.set_user_attr(CANDIDATE_KEY, row.id)
            trial = reviews._storage.get_trial(live._trial_id)
        _save_note(reviews, trial, body)
        noted.append(row.id)
    _save_study_note(study, "\n".join([
        f"{STUDY_NOTE_HEADER} {run.path.name}", "",
        "Each trial is one candidate. Trial numbers are Optuna's, counted from 0, and are",
        f"not the candidate ids: a trial's user attribute `{CANDIDATE_KEY}` names its",
        "candidate, and the notes on the best and the reviewed candidates start with the",
        "id and the trial number.", "",
        f"Review them in the study `{reviews.study_name}`: one open trial per candidate,",
        "with a form."]))
    _save_study_note(reviews, "\n".join([
        f"{STUDY_NOTE_HEADER} {run.path.name}: review", "",
        "One open trial per candidate to review (the best and the already reviewed ones),",
        "each with its code and fit plot; its note starts with the candidate id, and its",
        f"user attribute `{CANDIDATE_KEY}` names it. Give a verdict, a score and a comment",
        f"in the form: they are copied into `{run.reviews_path}` and reach the next rounds",
        f"of the search. The search's own trials are in the study `{study.study_name}`."]))
    return noted


def _verdict_of(value: Any) -> str | None:
    if value in (None, ""):
        return None
    for label, num, verdict in VERDICT_CHOICES:
        if value in (label, verdict):
            return verdict
        try:
            if float(value) == num:
                return verdict
        except (TypeError, ValueError):
            continue
    return None


def import_answers(run: Run, study=None) -> list[dict[str, Any]]:
    """Copy the review forms' answers into reviews.jsonl, each once; complete those trials.

    ``study`` is the review study (default: the run's, if any).
    """
    import optuna

    study = study or review_study(run)
    if study is None:
        return []
    added = []
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        cid = t.user_attrs.get(CANDIDATE_KEY)
        ua = t.user_attrs
        if not cid or not any(k in ua for k in (VERDICT_KEY, SCORE_KEY, COMMENT_KEY)):
            continue
        verdict = _verdict_of(ua.get(VERDICT_KEY))
        comment = str(ua.get(COMMENT_KEY) or "").strip() or None
        score = ua.get(SCORE_KEY)
        score = float(score) if score not in (None, "") else None
        if verdict is None and comment is None and score is not None:
            comment = f"score {score:g}/5"
        if verdict is not None or comment is not None:
            added.append(record_review(run, cid, verdict=verdict, note=comment,
                                       source="dashboard", score=score,
                                       review_trial=t.number))
        # answered: close the form (a later --serve opens a new one for this candidate)
        study.tell(t.number, score if score is not None else 0.0)
    return added


class _QuietHandler(wsgiref.simple_server.WSGIRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - the base class's name
        log.debug("dashboard: " + format, *args)


_IMPORTANCES = re.compile(r"/api/studies/(\d+)/param_importances/?")


def without_empty_importances(app, storage):
    """``app`` answering parameter importances itself for a study whose trials have no
    parameters (hyarch's: a candidate is code, not a point in a search space):
    optuna-dashboard 0.21 divides by the number of parameters there, one
    ZeroDivisionError traceback in the terminal per page view. The answer is the one it
    gives a study with too few trials: no importances, for each objective."""

    def wrapped(environ, start_response) -> Iterable[bytes]:
        m = _IMPORTANCES.fullmatch(environ.get("PATH_INFO", ""))
        if m and environ.get("REQUEST_METHOD") == "GET":
            sid = int(m.group(1))
            try:
                directions = storage.get_study_directions(sid)
                trials = storage.get_all_trials(sid, deepcopy=False)
            except KeyError:  # no such study: the dashboard's own 404
                return app(environ, start_response)
            if not any(t.distributions for t in trials):
                body = json.dumps({"param_importances": [[] for _ in directions]}).encode()
                start_response("200 OK", [("Content-Type", "application/json"),
                                          ("Content-Length", str(len(body)))])
                return iter([body])
        return app(environ, start_response)

    return wrapped


class Dashboard:
    """optuna-dashboard for a run on a background thread; ``port=0`` picks a free port."""

    def __init__(self, run: Run, host: str = LOOPBACK, port: int = 8080, *,
                 sync_every: float | None = 5.0):
        self.run = run
        self.host = host
        self.port = port
        self.sync_every = sync_every
        self._server: wsgiref.simple_server.WSGIServer | None = None
        self._threads: list[threading.Thread] = []
        self._stop = threading.Event()

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/dashboard"

    def start(self) -> Dashboard:
        from optuna_dashboard import wsgi

        storage = journal_storage(self.run)
        app = without_empty_importances(
            wsgi(storage, artifact_store=artifact_store_of(self.run)), storage)
        self._server = wsgiref.simple_server.make_server(
            self.host, self.port, app, handler_class=_QuietHandler)
        self.port = self._server.server_port
        t = threading.Thread(target=self._server.serve_forever, name="hyarch-dashboard",
                             daemon=True)
        t.start()
        self._threads.append(t)
        if self.sync_every:
            s = threading.Thread(target=self._sync_loop, name="hyarch-dashboard-sync",
                                 daemon=True)
            s.start()
            self._threads.append(s)
        return self

    def _sync_loop(self) -> None:
        while not self._stop.wait(self.sync_every):
            try:
                for e in import_answers(self.run):
                    log.info("dashboard review: %s", e)
            except Exception as e:  # keep serving; the final import reports it
                log.warning("could not import dashboard answers: %s", e)

    def stop(self) -> list[dict[str, Any]]:
        """Shut the server down and import the answers given so far."""
        self._stop.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        for t in self._threads:
            t.join(timeout=10)
        return import_answers(self.run)

    def __enter__(self) -> Dashboard:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def serve(run: Run, host: str = LOOPBACK, port: int = 8080, *, top: int = 10,
          console=None, wait=None) -> list[dict[str, Any]]:
    """Prepare the study, serve until Ctrl-C (or until ``wait()`` returns), import answers.

    Preparing takes seconds to tens of seconds (optuna-dashboard and the plots load,
    notes are written), so it says what it is doing, and the URL comes once it serves."""
    from rich.console import Console

    c = console or Console()
    c.print(f"preparing optuna-dashboard for {run.path} ...")
    study = open_study(run)
    with c.status("loading optuna-dashboard ...") as status:
        def progress(done: int, total: int, cid: str) -> None:
            if done == 0:
                c.print(f"preparing notes for {total} candidates (scores, code, fit plots) ...")
            status.update(f"note {done + 1}/{total}: {cid}")

        noted = prepare_dashboard(run, study, top=top, progress=progress)
        status.update("starting the server ...")
        dash = Dashboard(run, host, port).start()
    where = ("loopback only: other machines cannot reach it" if host in (LOOPBACK, "localhost",
             "::1") else f"[bold red]on {host}: anyone who can reach this port can read and "
             "edit the study (no authentication)[/]")
    c.print(f"optuna-dashboard for {run.path} at [bold]{dash.url}[/] ({where}).")
    c.print(f"{len(noted)} candidates carry notes and forms (study {REVIEW_STUDY!r}); answers "
            f"are copied into {run.reviews_path} while serving. Ctrl-C to stop.")
    try:
        if wait is not None:
            wait()
        else:
            threading.Event().wait()
    except KeyboardInterrupt:
        c.print()
    added = dash.stop()
    c.print(f"stopped; {len(added)} new review(s) from the dashboard")
    return added


__all__ = ["Dashboard", "NoStudy", "import_answers", "open_study", "prepare_dashboard",
           "serve"]
