"""The search loop: propose, check, evaluate in the sandbox, record, feed back.

Every candidate is written to the run folder as it is proposed and again, atomically,
as it finishes; the Optuna study gets one trial per finished candidate. A run killed at
any moment (SIGKILL included) resumes with ``resume=True``: finished candidates are kept,
unfinished ones are evaluated again, nothing is duplicated.
"""

from __future__ import annotations

import os
import platform
import signal
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from optuna.trial import TrialState

from hyarch.agent.admission import DUPLICATE_ELSEWHERE, Admission
from hyarch.agent.artifacts import (
    distillations,
    keep_distillation,
    network_free_first,
    upload_artifacts,
)
from hyarch.agent.base import Feedback, PoolEntry, Proposal, Proposer
from hyarch.agent.budget import Budget, llm_usage
from hyarch.agent.config import RunSummary, SearchConfig, SearchError
from hyarch.agent.evaluations import Evaluations
from hyarch.agent.status import candidate_line, status_line, summarize
from hyarch.ranking import keys
from hyarch.ranking.leaderboard import leaderboard
from hyarch.ranking.study import (
    Objectives,
    claimed_ids,
    fail_stale,
    heartbeat,
    open_study,
    recorded_ids,
    tell,
)
from hyarch.record import Evaluation, Status, as_evaluation
from hyarch.runs import Run
from hyarch.sandbox.runner import Limits, run_candidate
from hyarch.spaces.loader import load_space, resolve_space_path
from hyarch.spaces.space import Space

__all__ = ["RunSummary", "SearchConfig", "SearchError", "Session", "install_sigterm_as_interrupt",
           "make_proposer", "search"]

HEARTBEAT_S = 10.0
MAX_DISTILLED_PER_ROUND = 1
STALE_AFTER_S = 120.0
POOL_SIZE = 8
WARM_STARTS = 8  # fitted candidates offered as starting points to each new one
FAILURES_SHOWN = 4


class Session:
    """One search session over a run folder. ``run()`` does the work."""

    def __init__(self, cfg: SearchConfig, proposer: Proposer | None = None,
                 progress: Callable[[str], None] | None = None,
                 review: Callable[[Run], None] | None = None) -> None:
        self.cfg = cfg
        self.proposer = proposer
        self.progress = progress or (lambda msg: None)
        self.review = review
        self.worker = f"{socket.gethostname()}:{os.getpid()}"
        self._cost_known = False
        self._repeats = 0  # proposals that repeated an evaluated candidate
        self._repair_base: dict[str, PoolEntry] = {}
        self._start = time.perf_counter()

    # -- set-up ---------------------------------------------------------------------
    def _prepare(self) -> None:
        cfg = self.cfg
        self.run = Run(cfg.run_dir)
        if isinstance(cfg.space, Space):
            # the library's ``search(load_space(...))``: the object itself, never reloaded
            # (a Space made in memory has no path; its run records none)
            self.space: Space = cfg.space
            self.space_path = Path(cfg.space.path).resolve() if cfg.space.path else None
        else:
            space_ref = cfg.space
            if space_ref is None and self.run.exists():
                space_ref = self.run.config().get("space")
            if space_ref is None and cfg.join and cfg.storage:
                study = open_study(self.run, cfg.storage)
                space_ref = study.user_attrs.get(keys.SPACE)
            if space_ref is None:
                raise SearchError("no search space given, and none recorded in the run or"
                                  " study")
            self.space_path = resolve_space_path(space_ref).resolve()
            self.space = load_space(self.space_path)
        if cfg.join:
            pass
        elif self.run.exists() and not cfg.resume:
            raise SearchError(f"run folder {cfg.run_dir} already holds a run: pass --resume to"
                              " continue it, or --run NAME for a new one")
        elif cfg.resume and not self.run.exists():
            raise SearchError(f"--resume: {cfg.run_dir} holds no run to resume")
        if (cfg.resume or cfg.join) and self.run.exists():
            old = self.run.config()
            if self.space_path is None:
                if old.get("space_name") not in (None, self.space.name):
                    raise SearchError(f"--resume: the run was made on {old['space_name']},"
                                      f" not {self.space.name}")
            elif old.get("space") and Path(old["space"]).resolve() != self.space_path:
                raise SearchError(f"--resume: the run was made on {old['space']},"
                                  f" not {self.space_path}")
        spec = self.space.spec
        self.budget = cfg.budget or spec.budget.candidates
        self.per_round = cfg.per_round or spec.budget.per_round
        self.patience = cfg.patience_rounds or spec.budget.patience_rounds
        self.minutes = cfg.minutes or spec.budget.minutes
        self.max_tokens = cfg.tokens or spec.budget.tokens
        self.max_cost = cfg.cost or spec.budget.cost
        self.limits_budget = Budget(candidates=self.budget, minutes=self.minutes,
                                    tokens=self.max_tokens, cost=self.max_cost)
        self.objectives = Objectives(
            regularizer=spec.objectives.regularizer, complexity=spec.objectives.complexity,
            closure_share_cap=spec.objectives.closure_share_cap,
            plausible=tuple((k, float(lo), float(hi))
                            for k, (lo, hi) in spec.objectives.plausible.items()))
        # a candidate's wall-clock limit: its training budget and a half, and a minute;
        # where closures are distilled, one budget more, which the refits of the distilled
        # variants share (each at most a budget; on ODEBench's two-state systems the
        # half-budget left after training cut them short, whole-mechanism ones first)
        seconds = cfg.overrides.get("max_seconds") or spec.training.max_seconds
        timeout = cfg.timeout or seconds * (2.5 if cfg.distill else 1.5) + 60
        self.limits = Limits(timeout=timeout, memory_mb=cfg.memory_mb,
                             threads=max(1, cfg.threads))
        if self.proposer is None:
            self.proposer = make_proposer(cfg, self.space, self.run)
        if not self.run.exists():
            record = self._config_record()
            if self.space_path is None:  # a Space made in memory: no file to reload it from
                record["space"] = None
            self.run.write_config(record)
        self.study = open_study(self.run, cfg.storage, objectives=self.objectives)
        shared_budget = self.study.user_attrs.get(keys.BUDGET)
        if shared_budget is None:
            self.study.set_user_attr(keys.BUDGET, self.budget)
            if self.space_path is not None:
                self.study.set_user_attr(keys.SPACE, str(self.space_path))
        elif cfg.budget is None or cfg.join:
            self.budget = int(shared_budget)
        if cfg.distill:
            from hyarch.distill_cli import sindy_installed

            if not sindy_installed():  # a core dependency; said, should an install lack it
                self.progress("note: no closure will be distilled in this run: PySINDy is not"
                              " installed (pip install 'pysindy>=1.7,<3')")

    def _config_record(self) -> dict[str, Any]:
        import optuna
        import torch

        from hyarch import __version__

        cfg = self.cfg
        return {
            "space": str(self.space_path), "space_name": self.space.name,
            "proposer": self.proposer.name, "llm": cfg.llm, "base_url": cfg.base_url,
            "budget": self.budget, "per_round": self.per_round, "workers": cfg.workers,
            "seed": cfg.seed, "device": cfg.device, "storage": cfg.storage or "journal",
            "overrides": dict(cfg.overrides), "created": time.time(),
            "objectives": self.space.spec.objectives.model_dump(mode="json"),
            "versions": {"hyarch": __version__, "torch": str(torch.__version__),
                         "optuna": optuna.__version__, "python": platform.python_version()},
        }

    # -- state from disk ---------------------------------------------------------------
    def _entries(self) -> list[tuple[PoolEntry, dict]]:
        verdicts = self.run.verdicts()
        out = []
        for rec in self.run.candidates():
            entry = PoolEntry.from_result(rec.id, rec.source, rec.meta, rec.result,
                                          verdicts.get(rec.id))
            out.append((entry, rec.meta))
        return out

    def feedback(self, round_no: int) -> Feedback:
        rows = leaderboard(self.run, self.objectives)
        verdicts = self.run.verdicts()
        pool, rejected, failures = [], [], []
        for row in rows:
            rec = row.record
            entry = PoolEntry.from_result(rec.id, rec.source, rec.meta, rec.result,
                                          verdicts.get(rec.id))
            if entry.verdict == "rejected":
                rejected.append(entry)
            elif entry.status == "ok" and (len(pool) < POOL_SIZE or entry.verdict == "pinned"):
                pool.append(entry)
            elif entry.status == "failed":
                failures.append(entry)
        failures.sort(key=lambda e: e.id, reverse=True)
        evidence, grammar = distillations(self.run)
        return Feedback(round=round_no, pool=tuple(pool), failures=tuple(failures[:FAILURES_SHOWN]),
                        rejected=tuple(rejected), notes=tuple(self.run.general_notes()),
                        distilled=tuple(evidence), grammar=tuple(grammar))

    def _sync_from_study(self) -> int:
        """Write candidates that other workers (other machines) finished into this run folder,
        so that the pool, the leaderboard and the prompts see them."""
        n = 0
        for t in self.study.get_trials(deepcopy=False):
            cid = t.user_attrs.get(keys.CANDIDATE_ID)
            result = t.user_attrs.get(keys.RESULT)
            if not cid or result is None or (self.run.candidate_dir(cid) / "metrics.json").is_file():
                continue
            meta = {"proposer": t.user_attrs.get(keys.PROPOSER), "round": t.user_attrs.get(keys.ROUND),
                    "parents": t.user_attrs.get(keys.PARENTS) or [], "trial": t.number,
                    "code_hash": t.user_attrs.get(keys.CODE_HASH),
                    "worker": t.user_attrs.get(keys.WORKER), "synced": True,
                    "status": as_evaluation(result).status.value}
            self.run.write_proposal(cid, t.user_attrs.get(keys.SOURCE), meta)
            self.run.write_result(cid, result)
            n += 1
        return n

    def _dead_workers(self) -> set[str]:
        """Workers on this host whose process is gone (a killed search)."""
        host = socket.gethostname()
        dead = set()
        for t in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            w = t.user_attrs.get(keys.WORKER) or ""
            h, _, pid = w.rpartition(":")
            if h == host and pid.isdigit() and w != self.worker:
                try:
                    os.kill(int(pid), 0)
                except ProcessLookupError:
                    dead.add(w)
                except PermissionError:
                    pass
        return dead

    def _reclaimable(self) -> list[str]:
        """Unfinished local candidates whose evaluation nobody is running any more."""
        fail_stale(self.study, STALE_AFTER_S, self._dead_workers())
        running = {t.user_attrs.get(keys.CANDIDATE_ID)
                   for t in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}
        out = []
        for cid in self.run.candidate_ids():
            rec = self.run.read_candidate(cid)
            if not rec.finished and rec.source and cid not in running:
                out.append(cid)
        return out

    # -- the loop ------------------------------------------------------------------------
    def run_search(self) -> RunSummary:
        self._prepare()
        start = time.perf_counter()
        cfg = self.cfg
        run = self.run
        self.admission = Admission(run, self.study, worker=self.worker, budget=self.budget,
                                   objectives=self.objectives, progress=self.progress,
                                   finish=self._finish, observe=self.proposer.observe)
        self._numbers = self.admission.numbers
        self._distilled: list[Proposal] = []
        self._early: list[tuple[str, Proposal | None, PoolEntry]] = []
        self._evals = Evaluations(cfg.workers, self._launch, self._record)
        self._error: str | None = None
        hashes = self.admission.hashes
        tokens, cost, self._cost_known = llm_usage(run)
        # every budget survives --resume: time spent by earlier sessions counts too
        self._elapsed_before = run.elapsed()
        start -= self._elapsed_before
        self._start = start
        if self.minutes:
            self.proposer.set_deadline(time.monotonic() + self.minutes * 60
                                       - self._elapsed_before)
        self._sync_from_study()
        # Resume: finished candidates stay; unfinished ones nobody runs are evaluated again.
        entries = self._entries()
        round_no = 0
        for entry, meta in entries:
            if meta.get("code_hash"):
                hashes.setdefault(meta["code_hash"], entry.id)
            round_no = max(round_no, int(meta.get("round") or 0))
        recorded = recorded_ids(self.study)
        for entry, meta in entries:  # killed between writing a result and recording it
            rec = run.read_candidate(entry.id)
            if rec.finished and entry.id not in recorded:
                tell(self.study, meta.get("trial"), entry.id, meta, rec.source, rec.result,
                     self.objectives)
        pending: list[tuple[str, Proposal | None]] = []
        for cid in self._reclaimable():
            self._numbers[cid] = run.read_candidate(cid).meta.get("trial")
            pending.append((cid, None))
        if hasattr(self.proposer, "warm_start"):
            self.proposer.warm_start(self.space, [e for e, _ in entries])
        if entries:
            self.progress(f"resuming {run.path}: {sum(1 for e, _ in entries if e.status != 'pending')}"
                          f" finished, {len(pending)} to re-evaluate")
        rows0 = leaderboard(self.run, self.objectives)
        self._fits = _fitted_values(rows0)
        done_before = sum(1 for r in rows0 if r.evaluation.status is not Status.PENDING)
        best = self._best_score()
        stale = 0  # finished candidates since the best score last improved
        stopped = "budget"
        interrupted = threading.Event()
        stop_beat = threading.Event()
        beat = threading.Thread(target=self._heartbeats, args=(stop_beat,), daemon=True)
        beat.start()
        idle_rounds = 0  # proposal rounds in a row that gave nothing new to train
        budget_spent = False  # a claim found the shared budget spent
        last_review = round_no
        exhausted = False
        in_flight: list[str] = []
        try:
            while True:
                spent = self._spent(tokens, cost)
                if spent:
                    stopped = spent
                    break
                self._sync_from_study()
                claimed = len(claimed_ids(self.study))
                if claimed < self.budget:
                    budget_spent = False
                busy = self._evals.busy
                want = (min(self.per_round, self.budget - claimed)
                        if not (pending or busy or budget_spent) else 0)
                to_repair: list[tuple[str, Proposal, PoolEntry]] = []
                proposed_round = False
                fresh = 0  # proposals this round that are not repeats of earlier candidates
                if want > 0:
                    round_no += 1  # counts proposal rounds, nothing else
                    proposed_round = True
                    fb = self.feedback(round_no)
                    self.progress(f"round {round_no}: proposing {want} candidate(s) with"
                                  f" {self.proposer.name}")
                    # at most one distilled candidate a round, so that the proposer keeps
                    # exploring; more when the budget left would not hold the queue
                    take = min(want, len(self._distilled),
                               max(MAX_DISTILLED_PER_ROUND,
                                   len(self._distilled) - (self.budget - claimed - want)))
                    queued, self._distilled = self._distilled[:take], self._distilled[take:]
                    proposals = queued + (self._ask(self.proposer.propose, self.space, fb,
                                                    want - len(queued))
                                          if want > len(queued) else [])
                    replies = 0  # calls that reached the LLM (or proposals made offline)
                    transport: list[str] = []
                    for prop in proposals:
                        got, tokens, cost = self._take(prop, round_no, tokens, cost)
                        transport += got["transport"]
                        replies += got["replies"]
                        if got["budget"]:
                            budget_spent = True
                            break  # the shared budget is spent
                        pending += got["pending"]
                        to_repair += got["failed"]
                        fresh += len(got["pending"]) + len(got["failed"])
                    if transport and not replies:
                        # no call of this round reached the LLM: a dead or unusable endpoint.
                        # Nothing was claimed for these calls; the run resumes where it is.
                        self._error = (f"the LLM endpoint is unreachable: {transport[-1]}")
                        stopped = self._error
                        break
                    idle_rounds = idle_rounds + 1 if fresh == 0 else 0
                # evaluations that finished while the LLM was asked (recorded already)
                early, self._early = self._early, []
                n_done = len(early)
                to_repair += [f for f in early if f[2].status == "failed"]
                if not pending and not self._evals and not to_repair:
                    # nothing to train, nothing in flight, nothing to repair:
                    # stop, or try another round (bounded by the patience)
                    if budget_spent or not proposed_round:
                        stopped = "budget"
                        break
                    if self._distilled:
                        continue  # a distilled candidate waits for the next round
                    reason = self.proposer.exhausted()
                    if reason:
                        stopped = reason
                        exhausted = True
                        break
                    if idle_rounds >= self.patience:
                        stopped = (f"no new proposals in {idle_rounds} rounds (the proposer"
                                   " returned nothing or only repeats)")
                        break
                    continue
                # evaluate (returning as soon as a worker is free, so that the next
                # proposals keep every worker busy; all at the end of the budget), then
                # repair failures (bounded attempts, within the budget). A round that gave
                # nothing new waits for a candidate in flight: the loop never spins.
                workers = max(cfg.workers, 1)
                budget_left = len(claimed_ids(self.study)) < self.budget and not budget_spent
                must_wait = bool(self._evals) and not pending and not to_repair
                while True:
                    busy = self._evals.busy
                    if pending or busy or (must_wait and self._evals):
                        finished = self._evals.wait(pending)
                    elif self._evals and not budget_left and not to_repair:
                        finished = self._evals.wait([], drain=True)
                    elif to_repair:
                        finished = []
                    else:
                        break
                    must_wait = False
                    pending = []
                    n_done += len(finished)
                    to_repair += [f for f in finished if f[2].status == "failed"]
                    repairs, to_repair = to_repair, []
                    for cid, prop, entry in repairs:
                        if prop is None:
                            continue
                        # a reply without code is repaired from the last code that failed
                        base = entry if entry.source else self._repair_base.get(cid)
                        if base is None or not base.source:
                            continue
                        attempt = int(run.read_candidate(cid).meta.get("attempt", 0)) + 1
                        if attempt > self._repair_attempts():
                            continue
                        # no call after a budget is spent: its reply could not be evaluated
                        budget_left = budget_left and len(claimed_ids(self.study)) < self.budget
                        if not budget_left or self._spent(tokens, cost):
                            continue
                        fix = self._ask(self.proposer.repair, self.space, base, attempt)
                        if fix is None:
                            continue
                        got, tokens, cost = self._take(fix, round_no, tokens, cost,
                                                       attempt=attempt)
                        if got["budget"]:
                            budget_spent, budget_left = True, False
                            break
                        pending += got["pending"]
                        for failed_one in got["failed"]:
                            self._repair_base[failed_one[0]] = base
                        to_repair += got["failed"]
                    # evaluations that finished during the calls above
                    early, self._early = self._early, []
                    n_done += len(early)
                    to_repair += [f for f in early if f[2].status == "failed"]
                    if (not pending and not to_repair
                            and len(self._evals) < workers and budget_left):
                        break  # a worker is free and the budget is not spent: propose more
                spent = self._spent(tokens, cost)
                if spent and not self._evals and not pending:
                    stopped = spent
                    break
                new_best = self._best_score()
                if new_best is not None and (best is None or new_best < best - 1e-9):
                    best, stale = new_best, 0
                else:
                    stale += n_done
                if n_done:
                    self.progress(status_line(
                        leaderboard(self.run, self.objectives), round_no=round_no,
                        budget=self.budget, seconds=time.perf_counter() - start, tokens=tokens,
                        cost=cost, cost_known=self._cost_known, repeats=self._repeats,
                        done_before=done_before))
                if stale >= self.patience * self.per_round:
                    stopped = (f"no improvement in {stale} candidates"
                               f" ({self.patience} rounds' worth)")
                    break
                if (cfg.review_every and self.review is not None and round_no != last_review
                        and round_no % cfg.review_every == 0
                        and len(claimed_ids(self.study)) < self.budget):
                    last_review = round_no
                    self.review(run)
            if stopped == "budget" or exhausted:
                self._await_others()
            elif self._error:
                self._drain()
        except KeyboardInterrupt:
            interrupted.set()
            stopped = "interrupted (resume with --resume)"
            in_flight = self._evals.ids() + [cid for cid, _ in pending]
            self._evals.stop()
        finally:
            stop_beat.set()
            self._evals.shutdown(interrupted=interrupted.is_set())
            beat.join(timeout=2 if interrupted.is_set() else 30)
        run.write_elapsed(time.perf_counter() - start)
        rows = leaderboard(self.run, self.objectives)
        summary = replace(summarize(run.path, rows, stopped=stopped, seconds=time.perf_counter()
                                    - start, tokens=tokens, cost=cost), error=self._error,
                          dropped=tuple(p.parents[0] if p.parents else "?"
                                        for p in self._distilled))
        if self._distilled:
            self.progress(f"{len(self._distilled)} distilled candidate(s) left unevaluated by"
                          " the budget (from " + ", ".join(summary.dropped) + "): raise"
                          " --budget and --resume to evaluate them")
        if interrupted.is_set():
            summary = replace(summary, interrupted=True,
                              in_flight=tuple(sorted(dict.fromkeys(in_flight))))
        return summary

    def _await_others(self) -> None:
        """The budget is claimed: wait for other workers' last candidates, then sync them,
        so that every worker's run folder ends with the whole search."""
        deadline = time.monotonic() + self.limits.timeout + STALE_AFTER_S
        announced = False
        while time.monotonic() < deadline:
            fail_stale(self.study, STALE_AFTER_S, self._dead_workers())
            running = [t for t in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
                       if not t.user_attrs.get(keys.SKIP)]
            if not running:
                break
            if not announced:
                self.progress(f"waiting for {len(running)} candidate(s) other workers evaluate")
                announced = True
            time.sleep(1.0)
        self._sync_from_study()

    def _heartbeats(self, stop: threading.Event) -> None:
        while not stop.wait(HEARTBEAT_S):
            try:
                self.run.write_elapsed(time.perf_counter() - self._start)
            except OSError:  # a full disk must not end the search here
                pass
            live = [n for cid, n in self._numbers.items()
                    if n is not None and not (self.run.candidate_dir(cid) / "metrics.json").is_file()]
            if live:
                try:
                    heartbeat(self.study, live)
                except Exception:  # a storage hiccup must not end the search
                    pass

    def _repair_attempts(self) -> int:
        return self.space.spec.llm.repair_attempts

    def _spent(self, tokens: int, cost: float) -> str | None:
        return self.limits_budget.spent(seconds=time.perf_counter() - self._start,
                                        tokens=tokens, cost=cost)

    def _ask(self, fn, *args):
        """``fn(*args)``, a call to the proposer. An asynchronous proposer (an LLM) is asked
        on a helper thread while this one records the evaluations that finish meanwhile
        (in ``self._early``), so that the next prompt sees them; Ctrl-C still reaches this
        thread at once."""
        if not self.proposer.asynchronous:
            return fn(*args)
        box: dict[str, Any] = {}

        def call() -> None:
            try:
                box["value"] = fn(*args)
            except BaseException as e:  # noqa: BLE001 - re-raised on this thread
                box["error"] = e

        helper = threading.Thread(target=call, name="hyarch-proposer", daemon=True)
        helper.start()
        while helper.is_alive():
            helper.join(0.2)
            self._early += self._evals.ready()
        if "error" in box:
            raise box["error"]
        return box["value"]

    def _take(self, prop: Proposal, round_no: int, tokens: int,
              cost: float, attempt: int = 0) -> tuple[dict[str, Any], int, float]:
        """Admit one proposal: count its tokens; a failed call is no candidate; a repeat of
        an evaluated candidate is sent back to the proposer ("already tried") up to the
        repair attempts, at no cost to the budget. Returns what came of it: ``pending``
        (to evaluate), ``failed`` (failed before training), ``transport`` (failed calls),
        ``replies`` (calls that got a reply), ``budget`` (the budget is spent)."""
        got: dict[str, Any] = {"pending": [], "failed": [], "transport": [], "replies": 0,
                               "budget": False}
        retry = 0
        while prop is not None:
            tokens += int(prop.usage.get("total_tokens") or 0)
            if isinstance(prop.usage.get("cost"), (int, float)):
                cost += float(prop.usage["cost"])
                self._cost_known = True
            if prop.transport_error:
                got["transport"].append(prop.transport_error)
                self.progress(f"  the LLM call failed (not a candidate): {prop.transport_error}")
                return got, tokens, cost
            got["replies"] += 1
            earlier = self.admission.earlier(prop)
            if earlier is not None:
                self._repeats += 1
                self.progress(f"  a repeat of {earlier} (not evaluated again, not counted)")
                retry += 1
                if self._spent(tokens, cost):
                    return got, tokens, cost
                entry = self._entry(earlier)
                prop = (self._ask(self.proposer.retry_duplicate, self.space, prop, entry, retry)
                        if entry is not None else None)
                continue
            admitted = self.admission.admit(prop, round_no, attempt=attempt)
            if admitted is None:
                got["budget"] = True
            elif admitted is not DUPLICATE_ELSEWHERE:
                cid, early = admitted
                if prop.cut_off:
                    self.progress(f"  {cid}: the reply was cut off at max_tokens"
                                  " (raise --max-tokens if its code is incomplete)")
                if early is None:
                    got["pending"].append((cid, prop))
                else:
                    got["failed"].append((cid, prop, early))
            return got, tokens, cost
        return got, tokens, cost

    def _entry(self, cid: str) -> PoolEntry | None:
        try:
            rec = self.run.read_candidate(cid)
        except (OSError, ValueError):
            return None
        return PoolEntry.from_result(cid, rec.source, rec.meta, rec.result)

    def _drain(self) -> None:
        """The search stops on an error: finish what is in flight, so that nothing done is
        lost and --resume has nothing to redo."""
        if self._evals:
            self.progress(f"waiting for {len(self._evals)} evaluation(s) in flight")
            self._evals.wait([], drain=True)

    def _launch(self, cid: str):
        """Evaluate one candidate in the sandbox (on an evaluation thread)."""
        rec = self.run.read_candidate(cid)
        overrides = {**self.cfg.overrides, "warm_starts": self._fits}
        return run_candidate(self.space, rec.source, filename=f"{cid}/model.py",
                             limits=self.limits, device=self.cfg.device, overrides=overrides,
                             post={"distill": {}} if self.cfg.distill else None)

    def _record(self, cid: str, prop: Proposal | None, res) -> tuple[str, Proposal | None,
                                                                     PoolEntry]:
        """Store a finished evaluation (files, study, proposer) and return it."""
        if isinstance(res, Exception):  # the harness itself failed: still a failed candidate
            from hyarch.evaluate import failed

            ev = Evaluation.from_dict(failed(f"evaluation harness error: {res}"))
            weights, extra = None, {}
        else:
            weights, extra = res.weights, res.extra
            if res.predictions:
                self.run.write_predictions(cid, res.predictions)
            # the whole sandboxed evaluation: process start, imports, checks,
            # training, scoring, distillation (``seconds`` is its own part)
            ev = replace(Evaluation.from_dict(res.result), wall_seconds=round(res.seconds, 3))
        if extra.get("distilled"):  # the child distils only what is worth distilling
            parent = (prop.choices if prop is not None else None) or \
                self.run.read_candidate(cid).meta.get("choices") or {}
            self._distilled = network_free_first(
                self._distilled + keep_distillation(self.run, cid, extra["distilled"],
                                                    self.progress, parent_choices=parent))
        entry = self._finish(cid, prop, ev, weights)
        self.progress(candidate_line(cid, ev))
        return cid, prop, entry

    def _finish(self, cid: str, prop: Proposal | None, result: Evaluation | dict[str, Any],
                weights: bytes | None) -> PoolEntry:
        run = self.run
        ev = as_evaluation(result)
        result = ev.to_dict()
        if weights is not None:
            run.write_file(cid, "weights.pt", weights)
        run.update_meta(cid, status=ev.status.value, finished=time.time())
        run.write_result(cid, result)
        rec = run.read_candidate(cid)
        number = self._numbers.get(cid, rec.meta.get("trial"))
        upload_artifacts(self.run, self.study, cid, number)
        tell(self.study, number, cid, rec.meta, rec.source, result, self.objectives)
        self._record_ranking()
        entry = PoolEntry.from_result(cid, rec.source, rec.meta, result,
                                      run.verdicts().get(cid))
        if prop is not None:
            self.proposer.observe(prop, entry)
        return entry

    def _record_ranking(self) -> None:
        """The one ranking's order as a study attribute: what a study reader (the
        dashboard, another machine) sees as best is what the leaderboard says."""
        from hyarch.ranking.rule import RULE

        rows = leaderboard(self.run, self.objectives)
        self._fits = _fitted_values(rows)
        try:
            self.study.set_user_attr(keys.RANKING, [r.id for r in rows if r.ranked])
            self.study.set_user_attr(keys.RULE, RULE)
        except Exception:  # noqa: BLE001 - a storage hiccup never fails a candidate
            pass

    def _best_score(self) -> float | None:
        rows = leaderboard(self.run, self.objectives)
        scores = [r.score for r in rows if r.ranked and r.score is not None]
        return min(scores) if scores else None

def _fitted_values(rows) -> tuple[dict[str, float], ...]:
    """The fitted parameters of the best-ranked candidates (train/selection fits only): a
    candidate that nests one of them starts a restart there (``TrainConfig.warm_starts``).
    Kept from the ranking made after each finished candidate, not re-read per launch."""
    out = []
    for row in rows:
        params = (row.record.result or {}).get("parameters") or {}
        if row.ranked and params and row.record.status == "ok":
            out.append({k: float(v) for k, v in params.items() if isinstance(v, (int, float))})
        if len(out) >= WARM_STARTS:
            break
    return tuple(out)


def make_proposer(cfg: SearchConfig, space: Space, run: Run) -> Proposer:
    """The LLM proposer when a model or endpoint is configured, else the offline one."""
    base_url = cfg.base_url or os.environ.get("OPENAI_BASE_URL")
    key = os.environ.get("OPENAI_API_KEY")
    if cfg.llm or base_url or key:
        if not (base_url or key):
            raise SearchError("--llm needs an endpoint: set OPENAI_API_KEY for OpenAI, or"
                              " --base-url / OPENAI_BASE_URL for a compatible server")
        from hyarch.agent.llm_proposer import LLMProposer

        llm = space.spec.llm
        return LLMProposer.from_config(model=cfg.llm or llm.model, base_url=base_url,
                                       api_key=key, settings=llm, log=run.log_llm,
                                       seed=cfg.seed, timeout=cfg.llm_timeout,
                                       max_tokens=cfg.max_tokens, temperature=cfg.temperature,
                                       format=cfg.llm_format)
    from hyarch.agent.offline import OfflineProposer

    return OfflineProposer(seed=cfg.seed)


def search(space: Space | str | Path, *, run: str | Path | None = None,
           progress: Callable[[str], None] | None = None, **kw) -> RunSummary:
    """Library entry: run a search session and return how it ended (``RunSummary``).

    ``space`` is a ``Space`` (``hyarch.load_space(...)``, used as it is, with or without a
    file behind it), a built-in space's name or a YAML path. ``run`` is the run folder
    (default ``runs/<space>-<date-time>``). ``progress`` receives each progress line the
    CLI prints (rounds, candidates, status); the default prints nothing, and
    ``progress=print`` follows the search on stdout. The other keywords are
    ``SearchConfig``'s: ``budget``, ``minutes``, ``workers``, ``resume``, ``seed``,
    ``overrides`` (training settings), ``llm``, ``storage``...
    """
    if isinstance(space, Space):
        name = space.name
    elif isinstance(space, (str, os.PathLike)):
        space = os.fspath(space)
        name = Path(space).stem
    else:
        raise TypeError("search() takes a Space (hyarch.load_space(...)), a built-in space's"
                        f" name or a YAML path, not {type(space).__name__}")
    run_dir = Path(run) if run else Path("runs") / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
    cfg = SearchConfig(space=space, run_dir=run_dir, **kw)
    return Session(cfg, progress=progress).run_search()


def install_sigterm_as_interrupt() -> None:
    """Treat SIGTERM like Ctrl-C so the run is left resumable and children are killed."""
    def handler(signum, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, handler)
