"""``hyarch review RUN`` in the terminal: leaderboard, one candidate in full, and verdicts.

Every decision is appended to the run's ``reviews.jsonl`` (``Run.add_review``) at once, so a
review cut short loses nothing; the search reads verdicts and notes from there into the next
prompts and into the Optuna study.

The review shows train and validation numbers only, as the search sees them: test and OOD
scores are for the report, and a verdict taken on them would leak them into the search.
"""

from __future__ import annotations

import ast
import difflib
import sys
from collections.abc import Callable
from typing import Any

from rich.console import Console, Group
from rich.panel import Panel
from rich.syntax import Syntax
from rich.table import Table

from hyarch.record import as_evaluation
from hyarch.report.summary import Row, fmt, leaderboard
from hyarch.runs import CandidateRecord, Run

VERDICTS = ("approved", "rejected", "pinned")
_VERDICT_STYLE = {"approved": "green", "rejected": "red", "pinned": "cyan"}

HELP = """\
[bold]commands[/] (a candidate is an id like c0004 or a rank like #2; without one, the
candidate shown last):
  [bold]list[/] (l)                     the leaderboard
  [bold]show[/] ID (s, or just the id)  code, diff to its parent, parameters, scores, plot
  [bold]next[/] (Enter)                 the next candidate on the leaderboard
  [bold]approve[/] (a) [ID] [NOTE]      keep it, it looks right
  [bold]reject[/]  (r) [ID] [NOTE]      drop it from the pool (say why: the LLM reads it)
  [bold]pin[/]     (p) [ID] [NOTE]      keep it in the pool whatever its score
  [bold]note[/]    (n) [ID] TEXT        a note on the candidate, quoted in the next prompts
  [bold]general[/] (g) TEXT             a note on the whole search
  [bold]done[/]    (q)                  end the review (the search goes on)"""


# -- what is recorded -------------------------------------------------------------------
def record_review(run: Run, candidate: str | None, *, verdict: str | None = None,
                  note: str | None = None, source: str = "terminal",
                  **extra: Any) -> dict[str, Any]:
    """Append one decision to reviews.jsonl and return it."""
    if verdict is not None and verdict not in VERDICTS:
        raise ValueError(f"verdict {verdict!r}: use one of {', '.join(VERDICTS)}")
    if candidate is not None:
        run.read_candidate(candidate)  # KeyError listing the known ids
    note = (note or "").strip() or None
    if verdict is None and note is None:
        raise ValueError("a review needs a verdict, a note or both")
    entry: dict[str, Any] = {"candidate": candidate, "source": source, **extra}
    if verdict:
        entry["verdict"] = verdict
    if note:
        entry["note"] = note
    run.add_review(entry)
    return entry


# -- what is shown ----------------------------------------------------------------------
def leaderboard_table(rows: list[Row], limit: int = 25, title: str | None = None) -> Table:
    """Ranked candidates (Pareto front starred), then the failed ones (reason in the caption)."""
    t = Table(title=title, title_justify="left", show_lines=False)
    for col in ("#", "id", "", "by", "rd", "val nmse", "closure", "neural"):
        t.add_column(col, justify="left" if col in ("id", "", "by") else "right", no_wrap=True)
    t.add_column("parameters", overflow="fold", min_width=14)
    t.add_column("review", overflow="fold", min_width=8)
    ranked = [r for r in rows if r.ok]
    for r in ranked[:limit]:
        params = ", ".join(f"{k}={v:.4g}" for k, v in r.parameters.items())
        t.add_row(str(r.rank), r.id, "[bold red]*[/]" if r.pareto else "", r.proposer,
                  fmt(r.round), fmt(r.val_nmse), fmt(r.closure_share, ".2f"),
                  fmt(r.n_neural, "d"), params, _verdict_text(r))
    failed = [r for r in rows if not r.ok and r.status != "pending"]
    shown = failed[: max(0, limit - len(ranked[:limit]))]
    for r in shown:
        t.add_row("-", r.id, "", r.proposer, fmt(r.round), "[red]failed[/]", "", "", "",
                  _verdict_text(r))
    pending = sum(r.status == "pending" for r in rows)
    caption = (f"{len(ranked)} ranked by validation nmse; * = Pareto front of (val nmse, "
               f"closure share, neural params); {len(failed)} failed"
               + (f", {pending} pending" if pending else ""))
    for r in shown:
        caption += f"\n{r.id} failed: {(r.reason or r.status)[:100]}"
    t.caption = caption
    t.caption_justify = "left"
    return t


def _verdict_text(r: Row) -> str:
    parts = []
    if r.verdict:
        parts.append(f"[{_VERDICT_STYLE.get(r.verdict, 'white')}]{r.verdict}[/]")
    if r.notes:
        parts.append(f"\"{r.notes[-1][:40]}\"" + (f" (+{len(r.notes) - 1})"
                                                   if len(r.notes) > 1 else ""))
    return " ".join(parts)


def parent_diff(run: Run, rec: CandidateRecord) -> str | None:
    """Unified diff of the candidate's code against its first parent's, if it has one."""
    for pid in rec.parents:
        try:
            parent = run.read_candidate(pid)
        except KeyError:
            continue
        lines = difflib.unified_diff(parent.source.splitlines(keepends=True),
                                     rec.source.splitlines(keepends=True),
                                     fromfile=f"{pid}/model.py", tofile=f"{rec.id}/model.py")
        return "".join(lines) or f"(same code as {pid})"
    return None


def declared_parameters(source: str) -> dict[str, dict[str, Any]]:
    """``self.x = self.parameter(init=..., bounds=(lo, hi))`` read from the code without
    running it: the fallback when the run's space (hence the model) cannot be rebuilt."""
    out: dict[str, dict[str, Any]] = {}
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return out
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Assign) and isinstance(node.value, ast.Call)):
            continue
        f = node.value.func
        if not (isinstance(f, ast.Attribute) and f.attr == "parameter"):
            continue
        tgt = node.targets[0]
        if not isinstance(tgt, ast.Attribute):
            continue
        kw = {}
        for k in node.value.keywords:
            try:
                kw[k.arg] = ast.literal_eval(k.value)
            except ValueError:
                continue
        args = node.value.args
        if args and "init" not in kw:
            try:
                kw["init"] = ast.literal_eval(args[0])
            except ValueError:
                pass
        bounds = kw.get("bounds") or (None, None)
        out[tgt.attr] = {"init": kw.get("init"), "lower": bounds[0], "upper": bounds[1]}
    return out


def parameters_table(rec: CandidateRecord, truth: dict[str, float], specs: dict) -> Table:
    ev = as_evaluation(rec.result)
    fitted = dict(ev.parameters)
    errs = dict(ev.param_rel_error)
    declared = declared_parameters(rec.source) if not specs else {}
    t = Table(title="physical parameters", title_justify="left")
    for col in ("name", "fitted", "lower", "upper", "init", "truth", "rel. error", ""):
        t.add_column(col, justify="left" if col in ("name", "") else "right")
    for name in dict.fromkeys([*specs, *declared, *fitted]):
        s = specs.get(name)
        lo, hi, init = ((s.lower, s.upper, s.init) if s is not None else
                        tuple(declared.get(name, {}).get(k) for k in ("lower", "upper", "init")))
        v = fitted.get(name)
        flag = ""
        if v is not None and lo is not None and hi is not None and hi > lo:
            if min(v - lo, hi - v) < 0.01 * (hi - lo):
                flag = "[yellow]at a bound[/]"
        err = errs.get(name)
        t.add_row(name, fmt(v, ".6g"), fmt(lo, ".4g"), fmt(hi, ".4g"), fmt(init, ".4g"),
                  fmt(truth.get(name), ".6g"), "-" if err is None else f"{100 * err:.2f}%",
                  flag)
    return t


def scores_table(rec: CandidateRecord) -> Table:
    ev = as_evaluation(rec.result)
    val = ev.split("val")
    states = [name for name, _, _ in val.per_state] if val is not None else []
    t = Table(title="scores (train and validation; test and OOD are in the report)",
              title_justify="left")
    for col in ["split", "nmse", "log10 MSE", *(f"{s} nmse" for s in states),
                "reduced log10 MSE"]:
        t.add_column(col, justify="left" if col == "split" else "right")
    for split in ("train", "val"):
        m = ev.split(split)
        if m is None:
            continue
        red = ev.reduced_split(split)
        t.add_row(split, fmt(m.nmse), fmt(m.log10_mse, ".2f"),
                  *(fmt(m.state_nmse(s)) for s in states),
                  fmt(red.log10_mse if red is not None else None, ".2f"))
    return t


class CandidateView:
    """Renders one candidate; holds the run's space once loaded (loading it simulates data)."""

    def __init__(self, run: Run, console: Console):
        self.run = run
        self.console = console
        self._space: Any = None
        self._space_error: str | None = None

    @property
    def space(self):
        if self._space is None and self._space_error is None:
            from hyarch.report.replay import ReplayError, load_run_space

            try:
                self._space = load_run_space(self.run)
            except ReplayError as e:
                self._space_error = str(e)
        return self._space

    def show(self, cid: str, *, plot: bool = True) -> None:
        c = self.console
        rec = self.run.read_candidate(cid)
        ev = as_evaluation(rec.result)
        meta = rec.meta
        verdict = self.run.verdicts().get(cid, {})
        head = (f"[bold]{cid}[/]  proposer {rec.proposer}, round {meta.get('round', '-')}, "
                f"parents {', '.join(rec.parents) or 'none'}, status "
                + ("[green]ok[/]" if ev.ok else f"[red]{ev.status.value}[/]"))
        if verdict.get("verdict"):
            v = verdict["verdict"]
            head += f", reviewed [{_VERDICT_STYLE.get(v, 'white')}]{v}[/]"
        c.rule(head)
        if rec.source:
            c.print(Panel(Syntax(rec.source, "python", line_numbers=True, word_wrap=True),
                          title=f"{cid}/model.py", title_align="left"))
        diff = parent_diff(self.run, rec)
        if diff is not None:
            c.print(Panel(Syntax(diff, "diff", word_wrap=True), title="diff to parent",
                          title_align="left"))
        if rec.result is None:
            c.print("[yellow]not evaluated yet[/]")
        elif not ev.ok:
            c.print(f"[bold red]failed[/]: {ev.reason}")
            if ev.traceback:
                c.print(Syntax(ev.traceback[-2000:], "pytb", word_wrap=True))
        else:
            from hyarch.report.replay import parameter_bounds

            specs = parameter_bounds(rec)  # as the evaluation recorded them: no code runs
            truth = dict(self.space.truth) if self.space is not None else {}
            c.print(Group(parameters_table(rec, truth, specs), scores_table(rec)))
            c.print(f"closure share [bold]{fmt(ev.closure_share, '.3f')}[/], "
                    f"neural parameters [bold]{fmt(ev.n_neural_params, 'd')}[/], "
                    "regularizers: " + ", ".join(f"{k} {fmt(v)}" for k, v in ev.regularizers)
                    + f"; trained in {fmt(ev.seconds, '.1f')} s")
            if plot:
                c.print(f"fit plot: {self._fit_plot(rec)}")
        for note in verdict.get("notes", []):
            c.print(f"[italic]note:[/] {note}")

    def _fit_plot(self, rec: CandidateRecord) -> str:
        """The fit plot, drawn from the predictions the evaluation stored (never by running
        the candidate), or why there is none."""
        path = rec.path / "fit.png"
        if path.is_file():
            return str(path)
        if self.space is None:
            return f"(none: {self._space_error})"
        from hyarch.report.plots import fit_plot

        made, why = fit_plot(self.run, rec, self.space)
        return str(made) if made else f"(none: {why})"


# -- the interactive session -------------------------------------------------------------
_ALIASES = {
    "l": "list", "ls": "list", "list": "list", "s": "show", "show": "show", "next": "next",
    "a": "approve", "approve": "approve", "r": "reject", "reject": "reject",
    "p": "pin", "pin": "pin", "n": "note", "note": "note", "g": "general", "general": "general",
    "q": "done", "quit": "done", "done": "done", "exit": "done", "continue": "done",
    "c": "done", "h": "help", "help": "help", "?": "help",
}
_VERDICT_OF = {"approve": "approved", "reject": "rejected", "pin": "pinned"}


class TerminalReview:
    """A read-eval loop over review commands; ``input_fn`` supplies each line."""

    def __init__(self, run: Run, console: Console | None = None,
                 input_fn: Callable[[str], str] = input, *, plots: bool = True):
        self.run = run
        self.console = console or Console()
        self.input_fn = input_fn
        self.view = CandidateView(run, self.console)
        self.plots = plots
        self.current: str | None = None
        self.recorded: list[dict[str, Any]] = []

    def rows(self) -> list[Row]:
        return leaderboard(self.run)

    def resolve(self, token: str) -> str | None:
        """A candidate id, or a rank as #N or N; None if it names neither."""
        ids = self.run.candidate_ids()
        if token in ids:
            return token
        t = token.lstrip("#")
        if t.isdigit():
            for r in self.rows():
                if r.rank == int(t):
                    return r.id
        return None

    def loop(self, start: str | None = None) -> list[dict[str, Any]]:
        c = self.console
        c.print(leaderboard_table(self.rows(), title=f"review of {self.run.path}"))
        if start:
            self.current = start
            self.view.show(start, plot=self.plots)
        c.print("type [bold]help[/] for commands, [bold]done[/] to finish")
        while True:
            prompt = f"review {self.current}> " if self.current else "review> "
            try:
                line = self.input_fn(prompt)
            except (EOFError, KeyboardInterrupt):
                c.print()
                break
            if not self.handle(line.strip()):
                break
        if self.recorded:
            c.print(f"{len(self.recorded)} review(s) written to {self.run.reviews_path}")
        return self.recorded

    def handle(self, line: str) -> bool:
        """Run one command line; False ends the session."""
        c = self.console
        if not line:
            return self.handle("next")
        word, _, rest = line.partition(" ")
        rest = rest.strip()
        cmd = _ALIASES.get(word.lower())
        if cmd is None:
            cid = self.resolve(word)
            if cid is None:
                c.print(f"[red]unknown command or candidate {word!r}[/]; type help")
                return True
            cmd, rest = "show", line
        if cmd == "done":
            return False
        if cmd == "help":
            c.print(HELP)
        elif cmd == "list":
            c.print(leaderboard_table(self.rows()))
        elif cmd == "next":
            self._next()
        elif cmd == "show":
            cid = self.resolve(rest.split()[0]) if rest else self.current
            if cid is None:
                c.print(f"[red]no candidate {rest or '(none selected)'}[/]")
            else:
                self.current = cid
                self.view.show(cid, plot=self.plots)
        elif cmd == "general":
            if not rest:
                rest = self.input_fn("note on the whole search: ").strip()
            if rest:
                self.recorded.append(record_review(self.run, None, note=rest))
                c.print("[green]noted[/] for the whole search")
        else:
            self._decide(cmd, rest)
        return True

    def _next(self) -> None:
        ranked = [r.id for r in self.rows() if r.ok]
        if not ranked:
            self.console.print("no finished candidates")
            return
        nxt = ranked[0] if self.current not in ranked else (
            ranked[(ranked.index(self.current) + 1) % len(ranked)])
        self.current = nxt
        self.view.show(nxt, plot=self.plots)

    def _decide(self, cmd: str, rest: str) -> None:
        c = self.console
        first, _, tail = rest.partition(" ")
        cid = self.resolve(first) if first else None
        if cid is not None:
            rest = tail.strip()
        else:
            cid = self.current
        if cid is None:
            c.print("[red]which candidate?[/] give an id (c0004) or a rank (#2)")
            return
        verdict = _VERDICT_OF.get(cmd)
        note = rest
        if cmd == "note" and not note:
            note = self.input_fn(f"note on {cid}: ").strip()
            if not note:
                return
        elif cmd == "reject" and not note:
            note = self.input_fn(f"why reject {cid}? (the next prompts quote it; Enter to "
                                 "skip) ").strip()
        entry = record_review(self.run, cid, verdict=verdict, note=note or None)
        self.recorded.append(entry)
        self.current = cid
        what = verdict or "noted"
        c.print(f"[{_VERDICT_STYLE.get(verdict or '', 'green')}]{cid} {what}[/]"
                + (f": {note}" if note else ""))


def interactive_stdin() -> bool:
    try:
        return sys.stdin is not None and sys.stdin.isatty()
    except (ValueError, OSError):  # closed or detached stdin
        return False


def review_session(run: Run, console: Console | None = None,
                   input_fn: Callable[[str], str] = input) -> list[dict[str, Any]]:
    """A review pause inside the search (``--review-every N``); returns what was recorded.

    With the default ``input_fn`` and a stdin that is not a terminal (CI, a pipe, nohup) it
    returns at once: a search must never wait for a person who is not there. A caller that
    passes its own ``input_fn`` drives the session itself and is always served.
    """
    console = console or Console()
    if input_fn is input and not interactive_stdin():
        console.print("[dim]review skipped: stdin is not a terminal "
                      f"(review later with `hyarch review {run.path}`)[/]")
        return []
    return TerminalReview(run, console, input_fn).loop()
