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

import logging
import threading
import wsgiref.simple_server
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
LOOPBACK = "127.0.0.1"

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


def candidate_note(run: Run, row: Row, fit_url: str | None, no_plot: str | None = None) -> str:
    """The Markdown note on a candidate; ``no_plot`` says why a finished one has no plot."""
    rec = run.read_candidate(row.id)
    lines = [f"{NOTE_HEADER} {row.id}", "",
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
    lines += ["", "```python", rec.source.rstrip(), "```"]
    return "\n".join(lines)


def _fit_artifact(run: Run, study, cid: str, artifact_store, space, *,
                  make: bool = True) -> tuple[str | None, str | None]:
    """URL of the candidate's fit plot, a study artifact (finished trials take none);
    uploaded once, and made (from the stored predictions) only if ``make``. Without a
    plot, None and why (None when plots were not asked for)."""
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
    if space is not None:
        path, why = fit_plot(run, rec, space)
    elif (rec.path / "fit.png").is_file():
        path, why = rec.path / "fit.png", None
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


def prepare_dashboard(run: Run, study=None, *, top: int = 10, plots: bool = True) -> list[str]:
    """Notes on the search study's trials and open review trials with forms.

    Covers the reviewed candidates and the ``top`` best; returns their ids.
    """
    from optuna_dashboard import save_note

    study = study or open_study(run)
    reviews = review_study(run, study._storage, create=True)
    register_forms(reviews)
    rows = leaderboard(run)
    by_id = trials_by_candidate(study)
    chosen = list(dict((r.id, r) for r in [r for r in rows if r.ok][:top]
                       + [r for r in rows if r.verdict or r.notes]).values())
    space = None
    if plots:
        from hyarch.report.replay import ReplayError, load_run_space

        try:
            space = load_run_space(run)
        except ReplayError as e:
            log.warning("no fit plots: %s", e)
    store = artifact_store_of(run)
    import optuna

    open_reviews = trials_by_candidate(reviews, states=(optuna.trial.TrialState.RUNNING,))
    noted = []
    for row in chosen:
        url, why = (_fit_artifact(run, reviews, row.id, store, space, make=plots)
                    if row.ok else (None, None))
        body = candidate_note(run, row, url, why)
        if row.id in by_id:
            _save_note(study, by_id[row.id], body)
        trial = open_reviews.get(row.id)
        if trial is None:
            live = reviews.ask()
            live.set_user_attr(CANDIDATE_KEY, row.id)
            trial = reviews._storage.get_trial(live._trial_id)
        _save_note(reviews, trial, body)
        noted.append(row.id)
    save_note(reviews, "\n".join([
        f"# Review of hyarch run {run.path.name}", "",
        "One open trial per candidate to review (the best and the already reviewed ones),",
        "each with its code and fit plot. Give a verdict, a score and a comment in the form:",
        f"they are copied into `{run.reviews_path}` and reach the next rounds of the search.",
        f"The search's own trials are in the study `{study.study_name}`."]))
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
        app = wsgi(storage, artifact_store=artifact_store_of(self.run))
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
    """Prepare the study, serve until Ctrl-C (or until ``wait()`` returns), import answers."""
    from rich.console import Console

    c = console or Console()
    study = open_study(run)
    noted = prepare_dashboard(run, study, top=top)
    dash = Dashboard(run, host, port).start()
    where = ("loopback only: other machines cannot reach it" if host in (LOOPBACK, "localhost",
             "::1") else f"[bold red]on {host}: anyone who can reach this port can read and "
             "edit the study (no authentication)[/]")
    c.print(f"optuna-dashboard for {run.path} at [bold]{dash.url}[/] ({where}).")
    c.print(f"{len(noted)} candidates carry notes and forms; answers are copied into "
            f"{run.reviews_path} while serving. Ctrl-C to stop.")
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
