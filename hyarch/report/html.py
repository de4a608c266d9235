"""``hyarch report``: one self-contained HTML file about a run.

Images are inline base64 PNGs and the style sheet is inline: the file opens offline, can be
mailed, and loads nothing from the network.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
from pathlib import Path
from typing import Any

from hyarch.record import Evaluation, as_evaluation
from hyarch.report import plots
from hyarch.report.summary import Row, best_rows, fmt, leaderboard
from hyarch.runs import Run, atomic_write

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px auto;
max-width:1200px;color:#1d2733;line-height:1.4;padding:0 16px}
h1{font-size:1.6em;margin-bottom:4px}h2{border-bottom:2px solid #d5dde5;padding-bottom:3px;
margin-top:32px}h3{margin-bottom:4px}
table{border-collapse:collapse;font-size:13px;margin:8px 0}
th,td{border:1px solid #d5dde5;padding:3px 8px;text-align:right}
th{background:#eef2f6}td.l,th.l{text-align:left}
tr.pareto td{background:#fdf0ee}tr.baseline td{background:#fff7e6}
.muted{color:#66727f}.warn{color:#9a5b00;font-weight:600}.figs{display:flex;flex-wrap:wrap;gap:12px}
.figs img,img.wide{max-width:100%;border:1px solid #e3e8ee}
.card{border:1px solid #d5dde5;border-radius:6px;padding:8px 16px;margin:16px 0}
.tag{display:inline-block;border-radius:3px;padding:0 6px;font-size:12px;margin-left:6px}
.t-approved{background:#d4efdf}.t-rejected{background:#f5b7b1}.t-pinned{background:#d6eaf8}
.t-pareto{background:#f9d6d1}.t-baseline{background:#fde3b4}
pre{background:#f6f8fa;padding:8px;overflow-x:auto;font-size:12px}
.kpi{display:inline-block;margin-right:28px}.kpi b{font-size:1.3em;display:block}
"""


def _e(x: Any) -> str:
    return html.escape(str(x))


def _img(png: bytes, alt: str, cls: str = "") -> str:
    data = base64.b64encode(png).decode()
    c = f' class="{cls}"' if cls else ""
    return f'<img{c} alt="{_e(alt)}" src="data:image/png;base64,{data}">'


def _table(head: list[str], rows: list[list[str]], left: int = 1,
           row_cls: list[str] | None = None) -> str:
    """Cells are already-escaped HTML; the first ``left`` columns align left."""
    th = "".join(f'<th class="{"l" if i < left else ""}">{h}</th>' for i, h in enumerate(head))
    body = []
    for k, r in enumerate(rows):
        cls = f' class="{row_cls[k]}"' if row_cls and row_cls[k] else ""
        tds = "".join(f'<td class="{"l" if i < left else ""}">{c}</td>' for i, c in enumerate(r))
        body.append(f"<tr{cls}>{tds}</tr>")
    return f"<table><tr>{th}</tr>{''.join(body)}</table>"


def _tags(r: Row) -> str:
    out = ""
    if r.pareto:
        out += '<span class="tag t-pareto">Pareto</span>'
    if r.baseline:
        out += '<span class="tag t-baseline">baseline</span>'
    if r.verdict:
        out += f'<span class="tag t-{_e(r.verdict)}">{_e(r.verdict)}</span>'
    return out


def _params_inline(r: Row) -> str:
    return ", ".join(f"{_e(k)}={fmt(v, '.4g')}" for k, v in r.parameters.items()) or "-"


def leaderboard_html(rows: list[Row], limit: int = 40) -> str:
    ranked = [r for r in rows if r.ok][:limit]
    head = ["rank", "candidate", "score", "tier", "proposer", "round", "parents", "val nmse",
            "test nmse", "OOD nmse", "closure share", "neural params", "parameters", "review"]
    body = [[fmt(r.rank, "d"), f"<b>{_e(r.id)}</b>{_tags(r)}", fmt(r.score, ".2f"),
             _e(r.evidence or "-"), _e(r.proposer), fmt(r.round),
             _e(", ".join(r.parents) or "-"), fmt(r.val_nmse), fmt(r.test_nmse),
             fmt(r.ood_nmse), fmt(r.closure_share, ".2f"), fmt(r.n_neural, "d"),
             _params_inline(r), _e("; ".join(r.notes)) or "-"] for r in ranked]
    cls = ["pareto" if r.pareto else "baseline" if r.baseline else "" for r in ranked]
    more = sum(r.ok for r in rows) - len(ranked)
    tail = f'<p class="muted">{more} more finished candidates not shown.</p>' if more > 0 else ""
    return _table(head, body, left=3, row_cls=cls) + tail


def _metrics_table(ev: Evaluation, space) -> str:
    head = ["split", "nmse", "log10 MSE"] + [f"{s} nmse" for s in space.measured] + [
        "reduced log10 MSE"]
    body = []
    for split, m in ev.metrics:
        red = ev.reduced_split(split)
        acc = ev.accuracy(split)
        title = plots.SPLIT_TITLES.get(split, split)
        if acc is not None and not acc.converged:
            title += " (integration tolerance not reached)"
        nmse = "diverged" if m.diverged else fmt(m.nmse)
        body.append([_e(title), nmse, fmt(m.log10_mse, ".2f")]
                    + [fmt(m.state_nmse(s)) for s in space.measured]
                    + [fmt(red.log10_mse if red is not None else None, ".2f")])
    return _table(head, body)


def _params_table(ev: Evaluation, specs: dict[str, Any], truth: dict[str, float]) -> str:
    head = ["parameter", "fitted", "lower", "upper", "truth", "rel. error"]
    body = []
    errors = dict(ev.param_rel_error)
    for name, v in ev.parameters:
        s = specs.get(name)
        err = errors.get(name)
        body.append([_e(name), fmt(v, ".6g"), fmt(getattr(s, "lower", None), ".4g"),
                     fmt(getattr(s, "upper", None), ".4g"), fmt(truth.get(name), ".6g"),
                     "-" if err is None else f"{100 * err:.2f}%"])
    if not body:
        return '<p class="muted">no physical parameters</p>'
    return _table(head, body)


# how training can end without having fitted: the ranking's score then describes an
# unfinished fit, and the report says so rather than rank it silently
UNFINISHED = ("time budget", "diverged", "rounds or time")


def _measured_line(space) -> str:
    """For a twin space: what the scores are on, and which states no data measure."""
    if space is None or not space.twin:
        return ""
    latent = [n for n in space.states if n not in space.measured]
    return (f'<p class="muted">Scores are on what was measured ({_e(", ".join(space.measured))});'
            f' latent states, never measured: {_e(", ".join(latent) or "none")}.</p>')


def _training_line(ev) -> str:
    """Why training stopped (warned when it did not finish) and, for a twin, what the data
    leave undetermined."""
    tr = ev.training
    out = ""
    if tr is not None and tr.stopped:
        warn = any(tr.stopped.startswith(u) for u in UNFINISHED)
        text = (f"training stopped: {_e(tr.stopped)} after {fmt(tr.iterations, '.0f')}"
                f" iterations (train nMSE {fmt(tr.train_nmse)})")
        out = (f'<p class="warn">{text}: the fit may be unfinished</p>' if warn
               else f'<p class="muted">{text}</p>')
    twin = dict(ev.extra).get("twin")
    flags = ((twin or {}).get("uncertainty") or {}).get("flags") if isinstance(twin, dict) \
        else None
    if flags:
        out += ('<p class="warn">not determined by the data: '
                + "; ".join(_e(str(f)) for f in flags) + "</p>")
    return out


def _candidate_card(run: Run, row: Row, space, truth: dict[str, float]) -> str:
    from hyarch.report.replay import ReplayError, parameter_bounds, stored_predictions

    rec = run.read_candidate(row.id)
    ev = as_evaluation(rec.result)
    parts = [f'<div class="card"><h3>{_e(row.id)} {_tags(row)}</h3>',
             f'<p class="muted">proposer {_e(row.proposer)}, round {fmt(row.round)}, parents '
             f'{_e(", ".join(row.parents) or "none")}; trained in {fmt(row.seconds, ".1f")} s; '
             f'closure share <b>{fmt(row.closure_share, ".3f")}</b>, neural parameters '
             f'<b>{fmt(row.n_neural, "d")}</b></p>']
    doc = _docstring(rec.source)
    if doc:
        parts.append(f"<p><i>{_e(doc)}</i></p>")
    parts.append(_training_line(ev))
    if row.notes:
        parts.append("<p>Reviewer: " + _e(" / ".join(row.notes)) + "</p>")
    parts.append(_metrics_table(ev, space) if space is not None else "")
    specs = parameter_bounds(rec)
    parts.append(_params_table(ev, specs, truth))
    regs = dict(ev.regularizers)
    if regs:
        parts.append('<p class="muted">regularizers: ' + ", ".join(
            f"{_e(k)} {fmt(v)}" for k, v in regs.items()) + "</p>")
    if space is not None:
        try:
            preds = stored_predictions(rec, space, run=run)
            fig = plots.trajectories_plot(space, preds, title=row.id)
            parts.append(_img(plots.png_bytes(fig), f"trajectories of {row.id}", "wide"))
        except ReplayError as e:
            parts.append(f'<p class="muted">no trajectory plot: {_e(e)}</p>')
    parts.append(f"<details><summary>code</summary><pre>{_e(rec.source)}</pre></details></div>")
    return "".join(parts)


def _docstring(source: str) -> str:
    import ast

    try:
        tree = ast.parse(source)
    except SyntaxError:
        return ""
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == "Model":
            return (ast.get_docstring(node) or "").strip()
    return ""


def _baselines_html(rows: list[Row], best: list[Row]) -> str:
    base = [r for r in rows if r.baseline and r.status != "pending"]
    if not base:
        return '<p class="muted">No baselines in this run (candidates with proposer "baseline").</p>'
    show = base + [r for r in best if r not in base]
    head = ["candidate", "kind", "val nmse", "test nmse", "OOD nmse", "closure share",
            "neural params", "parameters"]
    body = [[f"<b>{_e(r.id)}</b>", "baseline" if r.baseline else f"rank {r.rank}",
             fmt(r.val_nmse), fmt(r.test_nmse), fmt(r.ood_nmse), fmt(r.closure_share, ".2f"),
             fmt(r.n_neural, "d"), _params_inline(r) if r.ok else _e(r.reason or r.status)]
            for r in show]
    cls = ["baseline" if r.baseline else "" for r in show]
    return _table(head, body, left=2, row_cls=cls)


def _failed_html(rows: list[Row]) -> str:
    bad = [r for r in rows if not r.ok and r.status != "pending"]
    if not bad:
        return '<p class="muted">None.</p>'
    return _table(["candidate", "proposer", "round", "reason"],
                  [[_e(r.id), _e(r.proposer), fmt(r.round),
                    _e((r.reason or r.status)[:300])] for r in bad], left=4)


def _reviews_html(run: Run) -> str:
    revs = run.reviews()
    if not revs:
        return '<p class="muted">No reviews yet (<code>hyarch review RUN</code>).</p>'
    body = []
    for r in revs:
        when = _dt.datetime.fromtimestamp(r.get("time", 0), _dt.timezone.utc)
        body.append([when.strftime("%Y-%m-%d %H:%M"), _e(r.get("candidate") or "(run)"),
                     _e(r.get("verdict") or "-"), _e(r.get("note") or ""),
                     _e(r.get("source") or "")])
    return _table(["time (UTC)", "candidate", "verdict", "note", "from"], body, left=5)


def build_report(run: Run, out: str | Path | None = None, *, top: int = 3) -> Path:
    """Write the report (default: <run>/report.html) and return its path."""
    from hyarch.report.replay import ReplayError, load_run_space

    rows = leaderboard(run)
    cfg = run.config()
    try:
        space = load_run_space(run)
        space_note = ""
    except ReplayError as e:
        space, space_note = None, f'<p class="muted">Trajectory plots left out: {_e(e)}</p>'
    truth = dict(space.truth) if space is not None else {}
    best = best_rows(rows, top)
    n_ok = sum(r.ok for r in rows)
    n_failed = sum(not r.ok and r.status != "pending" for r in rows)
    n_pending = sum(r.status == "pending" for r in rows)
    name = cfg.get("name") or run.path.name
    space_name = space.name if space is not None else cfg.get("space", "?")

    b = best[0] if best else None
    kpis = [("candidates", len(rows)), ("finished", n_ok), ("failed", n_failed),
            ("Pareto front", sum(r.pareto for r in rows))]
    if b is not None:
        kpis += [("best val nmse", fmt(b.val_nmse)), ("its test nmse", fmt(b.test_nmse)),
                 ("its OOD nmse", fmt(b.ood_nmse))]
    kpi_html = "".join(f'<span class="kpi"><b>{_e(v)}</b>{_e(k)}</span>' for k, v in kpis)

    pareto_png = plots.png_bytes(plots.pareto_plot(rows))
    progress_png = plots.png_bytes(plots.progress_plot(rows))
    cards = "".join(_candidate_card(run, r, space, truth) for r in best)
    pfig = plots.parameters_plot(best + [r for r in rows if r.baseline and r.ok], truth)
    param_img = _img(plots.png_bytes(pfig), "parameters against truth") if pfig else (
        '<p class="muted">No known true parameter values for this space.</p>')

    now = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    doc = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>hyarch report: {_e(name)}</title><style>{CSS}</style></head>
<body>
<h1>hyarch report: {_e(name)}</h1>
<p class="muted">search space <b>{_e(space_name)}</b>; run folder {_e(run.path)};
generated {now}{"; not finished yet: " + str(n_pending) if n_pending else ""}.
Ranked by validation nmse; test and out-of-distribution numbers are shown here only and never
reached the search.</p>{_measured_line(space)}
<div>{kpi_html}</div>
<h2>Leaderboard</h2>
{leaderboard_html(rows)}
<h2>Pareto front and search progress</h2>
<p class="muted">Objectives, all minimised: validation nmse, closure share of the derivative,
neural parameters.</p>
<div class="figs">{_img(pareto_png, "Pareto front")}{_img(progress_png, "search progress")}</div>
<h2>Against the baselines</h2>
{_baselines_html(rows, best)}
<h2>Best candidates</h2>
{space_note}{cards or '<p class="muted">No finished candidates yet.</p>'}
<h2>Physical parameters against the truth</h2>
{param_img}
<h2>Failed candidates</h2>
{_failed_html(rows)}
<h2>Reviews</h2>
{_reviews_html(run)}
<p class="muted">Made by <code>hyarch report</code>.</p>
</body></html>
"""
    path = Path(out) if out else run.path / "report.html"
    atomic_write(path, doc)
    return path
