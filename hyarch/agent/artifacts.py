"""What a search keeps beside each candidate's record: Optuna artifacts for the dashboard,
and the closures' distillations (evidence for the prompts, grammar for the offline proposer,
and new mechanistic candidates)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from optuna.trial import TrialState

from hyarch.agent.base import Proposal
from hyarch.runs import Run

EVIDENCE_SHOWN = 8


def upload_artifacts(run: Run, study, cid: str, number: int | None) -> None:
    """The candidate's files as Optuna artifacts of its (still running) trial, for
    optuna-dashboard; a finished trial cannot take artifacts any more."""
    if number is None:
        return
    try:
        import optuna
        from optuna.artifacts import FileSystemArtifactStore, upload_artifact

        frozen = next((t for t in study.get_trials(deepcopy=False)
                       if t.number == number and t.state == TrialState.RUNNING), None)
        if frozen is None:
            return
        trial = optuna.Trial(study, frozen._trial_id)
        root = run.path / "artifacts"
        root.mkdir(exist_ok=True)
        store = FileSystemArtifactStore(str(root))
        for name in ("model.py", "metrics.json"):
            path = run.candidate_dir(cid) / name
            if path.is_file():
                upload_artifact(artifact_store=store, file_path=str(path),
                                study_or_trial=trial, storage=study._storage)
    except Exception:  # artifacts are a convenience: never fail a candidate for them
        pass


def distilled_choices(cid: str, entries: list[dict[str, Any]],
                      parent_choices: dict[str, Any]) -> dict[str, Any]:
    """The offline grammar's structure of the candidate distilled from closure entries
    (one closure of candidate ``cid``, on one or more states): the parent's structure with
    that closure off, the hypotheses the closure turned out to be on, and the closure's
    generic terms as one part. ``_simpler`` is the parent's structure without closures."""
    from hyarch.distill.api import grammar_key

    parent = {k: v for k, v in parent_choices.items() if not k.startswith("_")}
    if not parent or any("call" in (e.get("candidate_form"), e.get("form")) for e in entries):
        return {}  # (a network replaced by a formula at its calls: outside the grammar)
    out = dict(parent)
    for e in entries:
        for k in parent:
            if k.startswith("closure:") and e.get("closure") == f"closure_{k.split(':', 2)[2]}":
                out[k] = "none"
        for t in e.get("terms") or ():
            if t.get("kind") == "hypothesis":
                out[f"term:{e['state']}:{t['name']}"] = True
        if any(t.get("kind") == "generic" for t in e.get("terms") or ()):
            out[f"term:{e['state']}:{grammar_key(cid, e)}"] = True
    out["_simpler"] = {k: ("none" if k.startswith("closure:") else v) for k, v in parent.items()}
    return out


def network_free_first(queue: list[Proposal]) -> list[Proposal]:
    """The distilled candidates in the order they are evaluated: network-free ones first,
    from every hybrid, then those that keep a network; each in the order they came. A
    budget that cannot hold the queue keeps the mechanisms (ODEBench s41: one hybrid's
    per-closure candidate, its other network kept, took the last place; another hybrid's
    network-free one, the truth, was left unevaluated)."""
    from hyarch.sandbox.checks import network_floor

    return sorted(queue, key=lambda p: network_floor(p.source) > 0)


def keep_distillation(run: Run, cid: str, entries: list[dict[str, Any]],
                      progress: Callable[[str], None],
                      parent_choices: dict[str, Any] | None = None) -> list[Proposal]:
    """Save what the closures distilled to; return the good ones as candidates to queue.
    A distilled candidate is its parent's structure with the closure replaced by terms;
    where the parent's structure is known, its ``choices`` say so in the offline grammar's
    words (``distilled_choices``), so that the offline proposer can try it without each
    part (``choices["_simpler"]``: without the distilled terms)."""
    from hyarch.distill.policy import MAX_DISTILLED_TERMS

    run.write_file(cid, "distill.json", json.dumps(entries, indent=2, default=str))
    out = []
    # every closure at once (a hybrid with several): queued first, the network-free whole
    joint = entries[0].get("joint") if entries and isinstance(entries[0], dict) else None
    if (isinstance(joint, dict) and isinstance(joint.get("source"), str)
            and isinstance(joint.get("parts"), list)
            and all(isinstance(e, dict) for e in joint["parts"])
            and not any(len(e.get("terms") or ()) > MAX_DISTILLED_TERMS
                        for e in joint["parts"])):
        out.append(Proposal(joint["source"], "distill", parents=(cid,),
                            choices=distilled_choices(cid, joint["parts"],
                                                      parent_choices or {})))
        dropped = joint.get("dropped") if isinstance(joint.get("dropped"), list) else []
        progress(f"  {cid}: all its closures at once ({len(dropped)} dropped as distilling to"
                 " nothing) queued as a mechanistic candidate")
    by_source: dict[str, list[dict[str, Any]]] = {}
    for e in entries:
        if e.get("source"):
            by_source.setdefault(e["source"], []).append(e)
    for src, group in by_source.items():
        # what the candidate is made of: the records of the form it was written from
        made = [e for e in group if e.get("form", "state") == (e.get("candidate_form") or
                                                               e.get("form", "state"))]
        if any(len(e.get("terms") or ()) > MAX_DISTILLED_TERMS for e in made):
            continue  # a long sum of terms is a curve fit, not a mechanism
        group = made or group
        out.append(Proposal(src, "distill", parents=(cid,),
                            choices=distilled_choices(cid, group, parent_choices or {})))
        for e in group:
            refits = e.get("refits") if isinstance(e.get("refits"), list) else []
            how = (f"; chosen among {len(refits)} sparse fits by refitting each"
                   if len(refits) > 1 else "")
            what = e.get("expression")
            if e.get("form") == "call":  # the network, as a formula of its inputs
                inputs = e.get("inputs") if isinstance(e.get("inputs"), list) else []
                what = f"{e.get('closure')}({', '.join(map(str, inputs))}) = {what}"
            ex = e.get("explained")  # untrusted: the child returned it
            ex = f"{ex:.3f}" if isinstance(ex, (int, float)) else "-"
            progress(f"  {cid}: closure {e.get('closure')} distils to {what}"
                     f" (explains {ex}{how});"
                     " queued as a mechanistic candidate")
    return out


def distillations(run: Run) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Compact evidence for prompts, and grammar terms for the offline proposer."""
    evidence, grammar = [], []
    for rec in run.candidates():
        p = rec.path / "distill.json"
        if not p.is_file() or rec.status != "ok":
            continue
        try:
            entries = json.loads(p.read_text())
        except json.JSONDecodeError:
            continue
        for e in entries:
            evidence.append({"candidate": rec.id, "closure": e.get("closure"),
                             "state": e.get("state") or None, "form": e.get("form", "state"),
                             "expression": e.get("expression"),
                             "explained_on_validation": e.get("explained")})
        try:
            from hyarch.distill import grammar_terms

            for state, terms in grammar_terms(entries, rec.id).items():
                grammar += [{"state": state, **t} for t in terms]
        except ImportError:
            pass
    return evidence[-EVIDENCE_SHOWN:], grammar
