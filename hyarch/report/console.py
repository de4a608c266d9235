"""Terminal output with rich: evaluation results and space summaries."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from hyarch.record import Evaluation


def _fmt(x, spec=".3g") -> str:
    return "-" if x is None else format(x, spec)


def print_evaluation(ev: Evaluation | dict, title: str = "",
                     console: Console | None = None) -> None:
    """One evaluation: fit per split, physical parameters, closure share and training.
    A record in its dict form (metrics.json, ``hyarch evaluate --json``) is parsed first."""
    c = console or Console()
    if not isinstance(ev, Evaluation):
        ev = Evaluation.from_dict(ev)
    if not ev.ok:
        c.print(f"[bold red]failed[/]: {escape(str(ev.reason))}", highlight=False)
        return
    t = Table(title=title or None)
    t.add_column("split")
    t.add_column("log10 MSE", justify="right")
    t.add_column("MSE", justify="right")
    t.add_column("normalised MSE", justify="right")
    t.add_column("reduced log10 MSE", justify="right")
    for split, m in ev.metrics:
        r = ev.reduced_split(split)
        nmse = "diverged" if m.diverged else _fmt(m.nmse)
        t.add_row(split, _fmt(m.log10_mse, ".2f"), _fmt(m.mse), nmse,
                  _fmt(r.log10_mse if r is not None else None, ".2f"))
    c.print(t)
    p = Table(title="physical parameters")
    p.add_column("name")
    p.add_column("value", justify="right")
    p.add_column("rel. error vs truth", justify="right")
    errors = dict(ev.param_rel_error)
    for name, v in ev.parameters:
        err = errors.get(name)
        p.add_row(name, _fmt(v, ".6g"), "-" if err is None else f"{100 * err:.3f}%")
    c.print(p)
    regs = ", ".join(f"{k}={_fmt(v)}" for k, v in ev.regularizers)
    c.print(f"closure share {_fmt(ev.closure_share)}, neural parameters "
            f"{ev.n_neural_params}, regularizers: {regs}")
    tr = ev.training
    c.print(f"trained in {_fmt(ev.seconds, '.1f')} s ({tr.iterations if tr else None}"
            f" iterations, stopped: {escape(str(tr.stopped if tr else None))})",
            highlight=False)
    bad = ev.unconverged
    if bad:
        c.print(f"[yellow]scoring rollouts did not reach the integration tolerance on"
                f" {', '.join(bad)}[/]: their scores include solver error")
    twin = dict(ev.extra).get("twin")
    if isinstance(twin, dict):
        print_twin(twin, c)


def print_twin(twin: dict, c: Console) -> None:
    """A twin's likelihood, noise, spreads, what the data leave undetermined, and new
    individuals' scores from the population values."""
    def kv(d):
        return ", ".join(f"{k} {_fmt(v)}" for k, v in (d or {}).items()) or "-"

    c.print(f"twin: -2 log L {_fmt(twin.get('neg2loglik'), '.2f')}, AIC"
            f" {_fmt(twin.get('aic'), '.1f')}, BIC {_fmt(twin.get('bic'), '.1f')}"
            f" ({twin.get('n_estimated')} estimated, {twin.get('n_obs')} observations);"
            f" noise sd: {kv(twin.get('sigma'))}; random-effect spreads: {kv(twin.get('omega'))}",
            highlight=False)
    unc = twin.get("uncertainty") or {}
    if unc.get("states"):
        c.print("standard error / peak of each state's trajectory: "
                + ", ".join(f"{k} {100 * v:.1f}%" for k, v in unc["states"].items()
                            if v is not None), highlight=False)
    for flag in unc.get("flags") or ():
        c.print(f"[yellow]not determined by the data[/]: {escape(str(flag))}")
    for split, m in (twin.get("population") or {}).items():
        c.print(f"{split}: new individuals from the population values alone: log10 MSE"
                f" {_fmt(m.get('log10_mse'), '.2f')} (above: conditioned on their first"
                f" {twin.get('condition')} samples)", highlight=False)


def print_space_summary(space, prior_fit: Evaluation | None = None,
                        console: Console | None = None) -> None:
    c = console or Console()
    spec = space.spec
    c.print(f"[bold]{spec.name}[/] ({space.path})")
    if spec.description:
        c.print(spec.description.strip())
    t = Table(title="states and inputs")
    for col in ("name", "kind", "unit", "description"):
        t.add_column(col)
    for n, v in spec.states.items():
        kind = "state" + (f" {tuple(v.shape)}" if v.shape else "")
        if not v.measured or spec.observations:
            kind += " (latent)"
        if v.initial is not None:
            kind += f", starts at {v.initial}"
        t.add_row(n, kind, v.unit, v.description)
    for n, v in spec.observations.items():
        t.add_row(n, "observation", v.unit, v.description)
    for n, v in spec.inputs.items():
        t.add_row(n, "input", v.unit, v.description)
    c.print(t)
    s = Table(title="splits")
    for col in ("split", "trajectories", "points", "time range"):
        s.add_column(col, justify="right")
    for name in space.measured:
        s.add_column(f"{name} range", justify="right")
    for name, tr in space.splits.items():
        n_pts = int(tr.mask.all(dim=-1).sum())
        row = [name, str(tr.n), str(n_pts),
               f"{float(tr.t.min()):.3g}..{float(tr.t.max()):.3g}"]
        for j, _ in enumerate(space.measured):
            col = tr.y[..., j][tr.mask[..., j]]
            row.append(f"{float(col.min()):.3g}..{float(col.max()):.3g}" if col.numel() else "-")
        s.add_row(*row)
    c.print(s)
    c.print(f"prior: {space.prior_path() or '(none)'}; hypotheses: "
            f"{sum(len(v) for v in spec.hypotheses.values())} terms; closure sites: "
            f"{len(spec.closures)}; known parameters: {', '.join(spec.truth) or '(none)'}")
    if prior_fit is not None:
        if prior_fit.ok:
            val = prior_fit.split("val")
            c.print(f"prior fit: val log10 MSE {_fmt(val.log10_mse if val else None, '.2f')},"
                    f" parameters {dict(prior_fit.parameters)}")
        else:
            c.print(f"[red]prior failed[/]: {escape(str(prior_fit.reason))}")
    c.print("[green]valid[/]")
