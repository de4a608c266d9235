"""What the search loop and the CLI call: distil a trained candidate into new candidates."""

from __future__ import annotations

from typing import Any

from hyarch.core.candidate import check_forward, load_model_class, make_factory
from hyarch.core.model import HybridModel
from hyarch.distill.candidate import RenderError, replace_closure
from hyarch.distill.distillation import Distillation, distill
from hyarch.spaces.space import Space


def _header(parts: list[Distillation]) -> str:
    lines = [f"# Distilled by hyarch from closure `{parts[0].closure}`:"]
    for p in parts:
        r2 = "-" if p.r2 is None else f"{p.r2:.4f}"
        lines.append(f"#   d{p.state}/dt: {p.expression}  (R^2 = {r2} on validation states)")
    return "\n".join(lines) + "\n"


def _check(space: Space, source: str) -> None:
    cls = load_model_class(source, "<distilled>")
    model = make_factory(cls, space.states, space.inputs, space.scales(), space.shapes)()
    train = space.train
    check_forward(model, train.y0(), train.t[:, 0], None if train.u is None else train.u[:, 0])


def distill_candidate(space: Space, source: str, model: HybridModel, *, min_r2: float = 0.8,
                      **options: Any) -> list[dict[str, Any]]:
    """Distil each closure of the trained ``model`` (built from ``source``) on ``space``.

    One dict per (closure, state): ``closure``, ``state``, ``expression``, ``terms`` (each
    with ``name``, ``kind``, ``code``, ``coefficient``), ``r2`` (validation states),
    ``shifts`` (what the closure absorbed from existing parameters) and ``source``: a new
    mechanistic candidate with the closure replaced by the terms, each coefficient a named,
    bounded parameter starting at its distilled value; ``source`` is None, with
    ``reason``, when R^2 is below ``min_r2`` or the file cannot be rewritten.
    ``options`` go to :func:`hyarch.distill.distill` (``degree``, ``tolerance``...).
    """
    parts = distill(space, model, **options)
    by_closure: dict[str, list[Distillation]] = {}
    for p in parts:
        by_closure.setdefault(p.closure, []).append(p)
    out = []
    for name, group in by_closure.items():
        weak = [p for p in group if p.r2 is None or p.r2 < min_r2]
        new, reason = None, None
        if weak:
            reason = (f"R^2 on validation states {weak[0].r2} is below {min_r2} for "
                      f"d{weak[0].state}/dt: the terms do not explain the closure")
        else:
            try:
                new = replace_closure(source, model, name, group, header=_header(group))
                _check(space, new)
            except (RenderError, SyntaxError) as e:
                new, reason = None, f"cannot rewrite the candidate: {e}"
            except Exception as e:  # the rendered file fails the contract
                new, reason = None, f"the distilled candidate fails its check: {e}"
        for p in group:
            out.append({**p.to_dict(), "source": new, "reason": reason})
    return out
