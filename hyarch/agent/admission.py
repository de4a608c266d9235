"""Turning proposals into candidates.

An id is claimed through the Optuna study (atomic across workers and machines, and the
candidate budget is the number of claims), the proposal's files are written, and one that
cannot be trained (no code, a failed static check) is failed at once with its reason. Code
another worker already has is never claimed twice: ``DUPLICATE_ELSEWHERE``.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from typing import Any

from hyarch.agent.base import PoolEntry, Proposal
from hyarch.agent.config import SearchError
from hyarch.ranking import keys
from hyarch.ranking.study import Objectives, claim, code_hashes, release, tell
from hyarch.runs import Run
from hyarch.sandbox.checks import CheckError, check_source, code_hash

DUPLICATE_ELSEWHERE: Any = object()  # admit(): the code is another worker's candidate


class Admission:
    """``hashes``: code hash -> the candidate that has that code (this run's and other
    workers'); ``numbers``: candidate id -> its trial number. ``finish(cid, proposal,
    result, weights)`` records a candidate that failed before training; ``observe`` tells
    the proposer how a proposal fared."""

    def __init__(self, run: Run, study, *, worker: str, budget: int, objectives: Objectives,
                 progress: Callable[[str], None],
                 finish: Callable[..., PoolEntry],
                 observe: Callable[[Proposal, PoolEntry], None]) -> None:
        self.run = run
        self.study = study
        self.worker = worker
        self.budget = budget
        self.objectives = objectives
        self.progress = progress
        self.finish = finish
        self.observe = observe
        self.hashes: dict[str, str] = {}
        self.numbers: dict[str, int] = {}

    def earlier(self, prop: Proposal) -> str | None:
        """The candidate whose code this proposal repeats, if any."""
        return self.hashes.get(code_hash(prop.source)) if prop.source is not None else None

    def claim(self, code_hash: str | None = None) -> tuple[int, str] | None:
        """Claim a fresh candidate id through the study (atomic across workers), or None
        when the shared budget is spent."""
        from hyarch.runs import UnsafePathError

        for _ in range(8):
            got = claim(self.study, self.worker, self.budget, code_hash)
            if got is None:
                return None
            number, cid = got
            try:
                self.run.make_candidate_dir(cid)
            except UnsafePathError as e:  # something planted a link: that id is lost, not the run
                from hyarch.evaluate import failed

                tell(self.study, number, cid, {}, None, failed(str(e)), self.objectives)
                self.progress(f"  {cid} skipped: {e}")
                continue
            self.numbers[cid] = number
            return got
        raise SearchError(f"{self.run.candidates_dir}: eight candidate folders in a row could"
                          " not be made safely (links planted in the run folder?)")

    def admit(self, prop: Proposal, round_no: int, attempt: int = 0) -> tuple[str, PoolEntry | None] | None:
        """Claim an id and write the proposal; return the id and, when it failed already
        (no code, a static check, a duplicate), its failed entry. None: budget spent."""
        h = code_hash(prop.source) if prop.source is not None else None
        if h is not None and h not in self.hashes:
            other = code_hashes(self.study).get(h)
            if other is not None:  # another worker has (or had) this very code
                self.hashes[h] = other
                self.observe_existing(prop, other)
                return DUPLICATE_ELSEWHERE
        got = self.claim(h)
        if got is None:
            return None
        number, cid = got
        meta = {
            "trial": number,
            "proposer": prop.proposer, "parents": list(prop.parents), "round": round_no,
            "choices": prop.choices, "created": time.time(), "worker": self.worker,
            "attempt": attempt, "repair_of": prop.repair_of, "status": "pending",
        }
        extras = {}
        if prop.messages:
            extras["prompt.json"] = json.dumps(list(prop.messages), indent=2)
        if prop.reply is not None:
            extras["reply.txt"] = prop.reply
        reason = prop.reason if prop.source is None else None
        if prop.source is not None:
            meta["code_hash"] = h
            # another worker may have claimed the same code at the same moment: whoever sees
            # the other's claim stands down, so the code is never trained twice
            same = [t.user_attrs.get(keys.CANDIDATE_ID) for t in self.study.get_trials(deepcopy=False)
                    if t.user_attrs.get(keys.CODE_HASH) == h and t.number != number
                    and not t.user_attrs.get(keys.SKIP)]
            if same and h not in self.hashes:
                self.hashes[h] = same[0]
                release(self.study, number)
                self.numbers.pop(cid, None)
                shutil.rmtree(self.run.candidate_dir(cid), ignore_errors=True)
                return DUPLICATE_ELSEWHERE
            if h in self.hashes:
                reason = f"duplicate of {self.hashes[h]} (same code up to comments and formatting)"
            else:
                self.hashes[h] = cid
                try:
                    check_source(prop.source)
                except CheckError as e:
                    reason = str(e)
        self.run.write_proposal(cid, prop.source, meta, extras)
        if reason is not None:
            from hyarch.evaluate import failed

            result = failed(reason)
            entry = self.finish(cid, prop, result, None)
            self.progress(f"  {cid} failed before training: {reason}")
            return cid, entry
        return cid, None

    def observe_existing(self, prop: Proposal, cid: str) -> None:
        rec_dir = self.run.candidate_dir(cid)
        if (rec_dir / "metrics.json").is_file():
            rec = self.run.read_candidate(cid)
            entry = PoolEntry.from_result(cid, rec.source, {**rec.meta, "choices": prop.choices},
                                          rec.result)
            self.observe(prop, entry)
