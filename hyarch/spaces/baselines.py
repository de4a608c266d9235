"""The three baselines every space is measured against, and the table that compares them.

A search result means little without them: the prior with fitted parameters (what the
expert already had), a neural ODE (a network for every state, no mechanism) and an
APHYNITY-style hybrid (the prior plus additive closures kept small by ``closure_norm``).
A space may name its own files under ``baselines:``; missing ones are rendered from
``prompts/baseline_*.py.j2`` so that a user's own space gets them for free.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hyarch.spaces.errors import SpaceError
from hyarch.spaces.space import Space

LABELS = ("prior", "neural_ode", "aphynity")

# Short training for smoke tests and quick looks; numbers are then not the published ones.
QUICK = {"stage_iters": 60, "final_iters": 200, "patience": 60, "restarts": 2}


@dataclass(frozen=True)
class Baseline:
    """One baseline candidate: its label, source code and where the code came from."""

    label: str
    source: str
    origin: str  # a file path, or "generated"


def _args(space: Space, names: tuple[str, ...]) -> str:
    return ", ".join(f"s.{n}" if n in space.states else f"u.{n}" for n in names)


def _template(name: str):
    import jinja2

    from hyarch.spaces.loader import builtin_dir

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(builtin_dir("prompts"))),
                             keep_trailing_newline=True, undefined=jinja2.StrictUndefined)
    return env.get_template(name)


def neural_ode_source(space: Space, hidden: tuple[int, ...] = (32, 32)) -> str:
    """A closure for every state over every state and input: no mechanism at all."""
    names = space.states + space.inputs
    return _template("baseline_neural_ode.py.j2").render(
        space=space.name, states=space.states, inputs=repr(tuple(names)),
        hidden=repr(tuple(hidden)), args=_args(space, names))


def aphynity_source(space: Space, prior_source: str) -> str:
    """The prior verbatim plus an additive closure at each closure site of the space
    (its first listed size), or on every state when the space lists none."""
    sites = []
    for site in space.spec.closures:
        sites.append({"state": site.state, "inputs": repr(tuple(site.inputs)),
                      "hidden": repr(tuple(site.hidden[0]) if site.hidden else (32, 32)),
                      "args": _args(space, tuple(site.inputs))})
    if not sites:
        names = space.states + space.inputs
        sites = [{"state": st, "inputs": repr(tuple(names)), "hidden": repr((32, 32)),
                  "args": _args(space, names)} for st in space.states]
    return _template("baseline_aphynity.py.j2").render(
        space=space.name, prior=_renamed_prior(prior_source), sites=sites)


def _renamed_prior(source: str) -> str:
    """The prior with its ``class Model`` renamed ``_Prior``: the baseline subclasses it,
    and a candidate file defines ``Model`` once."""
    import ast

    tree = ast.parse(source)
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == "Model":
            node.name = "_Prior"
    return ast.unparse(tree).rstrip()


def baselines(space: Space) -> list[Baseline]:
    """The three baselines of ``space``: its own files where it names them, else generated."""
    prior_path = space.prior_path()
    named = dict(space.spec.baselines)
    unknown = sorted(set(named) - set(LABELS))
    if unknown:
        raise SpaceError(f"baselines: unknown label(s) {unknown}; valid: {', '.join(LABELS)}",
                         file=str(space.path) if space.path else None, field="baselines")
    out: list[Baseline] = []
    prior_source = None
    if prior_path is not None:
        prior_source = prior_path.read_text()
    for label in LABELS:
        if label in named:
            p = Path(named[label])
            if not p.is_absolute() and space.path is not None:
                p = space.path.parent / p
            if not p.is_file():
                raise SpaceError(f"baseline file {named[label]!r} does not exist (looked at {p})",
                                 file=str(space.path) if space.path else None,
                                 field=f"baselines.{label}")
            out.append(Baseline(label, p.read_text(), str(p)))
        elif label == "prior" and prior_source is not None:
            out.append(Baseline(label, prior_source, str(prior_path)))
        elif label == "neural_ode":
            out.append(Baseline(label, neural_ode_source(space), "generated"))
        elif label == "aphynity" and prior_source is not None:
            out.append(Baseline(label, aphynity_source(space, prior_source), "generated"))
    return out


def training_overrides(space: Space, label: str, quick: bool = False) -> dict[str, Any]:
    """APHYNITY's point is the closure-norm penalty: make sure it is on for that baseline."""
    over: dict[str, Any] = dict(QUICK) if quick else {}
    if label == "aphynity":
        regs = dict(space.spec.training.regularizers)
        regs.setdefault("closure_norm", 1e-3)
        over["regularizers"] = regs
    return over


def run_baselines(space: Space, *, labels: tuple[str, ...] = LABELS, quick: bool = False,
                  device: str = "cpu", extra: dict[str, str] | None = None,
                  overrides: dict[str, Any] | None = None,
                  watch: Callable[[str, int, int], Any] | None = None,
                  threads: int = 1) -> dict[str, dict[str, Any]]:
    """Train and score each baseline (and any ``extra`` {label: source}); results by label.

    Each result is the ``hyarch evaluate --json`` record, with ``origin`` added.
    ``watch(label, index, total)``, if given, returns a context manager for each baseline
    whose value takes the training's progress reports and has ``finish(status)``
    (``hyarch.report.progress.ProgressDisplay.task``). ``threads``: CPU threads of each
    sandboxed training (1, as in a search).
    """
    from contextlib import nullcontext

    from hyarch.evaluate import Limits, evaluate_source

    todo = [b for b in baselines(space) if b.label in labels]
    todo += [Baseline(k, v, "given") for k, v in (extra or {}).items()]
    results = {}
    for i, b in enumerate(todo, 1):
        over = {**training_overrides(space, b.label, quick), **(overrides or {})}
        with (watch(b.label, i, len(todo)) if watch else nullcontext()) as task:
            out = evaluate_source(space, b.source, filename=f"<{b.label} baseline>",
                                  device=device, overrides=over, progress=task,
                                  limits=Limits(threads=max(1, threads)))
            if task is not None:
                task.finish(out.result["status"])
        results[b.label] = {**out.result, "origin": b.origin}
    return results


def table_rows(results: dict[str, dict[str, Any]]) -> list[dict[str, str]]:
    """One row per baseline: log10 MSE on val, test and OOD, and parameter errors."""
    rows = []
    for label, r in results.items():
        row = {"baseline": label, "status": r["status"]}
        for split in ("val", "test", "ood"):
            m = r.get("metrics", {}).get(split)
            v = None if m is None else m.get("log10_mse")
            row[split] = "-" if v is None else f"{v:.2f}"
        errs = r.get("param_rel_error") or {}
        row["parameter errors"] = ", ".join(f"{k} {100 * v:.1f}%" for k, v in errs.items()) or "-"
        row["neural params"] = str(r.get("n_neural_params") or 0)
        row["seconds"] = f"{r.get('seconds', 0):.0f}"
        if r["status"] != "ok":
            row["parameter errors"] = str(r.get("reason"))[:80]
        rows.append(row)
    return rows


def markdown_table(rows: list[dict[str, str]]) -> str:
    """The table as Markdown, for the README and for pasting into notes."""
    if not rows:
        return ""
    cols = list(rows[0])
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    lines += ["| " + " | ".join(r[c] for c in cols) + " |" for r in rows]
    return "\n".join(lines)
