"""Rewriting a candidate file: a closure replaced by distilled terms, resized, or removed.

Edits are made on the original text at the positions ``ast`` gives, so the rest of the
file (comments, docstrings, layout) is kept as the author wrote it.
"""

from __future__ import annotations

import ast
import re
import textwrap
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from hyarch.core.model import HybridModel
from hyarch.distill.library import substitute


class RenderError(Exception):
    """The candidate's code has a shape this rewriter does not handle."""


@dataclass(frozen=True)
class _Edit:
    start: int  # byte offsets into the UTF-8 source
    end: int
    text: str


class _Source:
    """Source text with (line, col) -> byte offset and a list of pending edits."""

    def __init__(self, source: str) -> None:
        self.text = source
        self.data = source.encode()
        self.tree = ast.parse(source)
        self.starts = [0]
        for line in source.splitlines(keepends=True):
            self.starts.append(self.starts[-1] + len(line.encode()))
        self.edits: list[_Edit] = []

    def offset(self, line: int, col: int) -> int:
        return self.starts[line - 1] + col

    def span(self, node: ast.AST) -> tuple[int, int]:
        return (self.offset(node.lineno, node.col_offset),
                self.offset(node.end_lineno, node.end_col_offset))

    def segment(self, node: ast.AST) -> str:
        a, b = self.span(node)
        return self.data[a:b].decode()

    def replace(self, node: ast.AST, text: str) -> None:
        a, b = self.span(node)
        self.edits.append(_Edit(a, b, text))

    def replace_lines(self, first: int, last: int, text: str) -> None:
        self.edits.append(_Edit(self.starts[first - 1], self.starts[last], text))

    def insert(self, line: int, text: str) -> None:
        """Insert whole lines before line ``line`` (1-based; len+1 appends)."""
        at = self.starts[min(line, len(self.starts)) - 1]
        self.edits.append(_Edit(at, at, text))

    def render(self) -> str:
        out = self.data
        for e in sorted(self.edits, key=lambda e: (e.start, e.end), reverse=True):
            out = out[:e.start] + e.text.encode() + out[e.end:]
        return out.decode()


def _model_class(src: _Source) -> ast.ClassDef:
    for node in src.tree.body:
        if isinstance(node, ast.ClassDef) and node.name == "Model":
            return node
    raise RenderError("the file defines no `class Model`")


def _method(cls: ast.ClassDef, name: str) -> ast.FunctionDef:
    for node in cls.body:
        if isinstance(node, ast.FunctionDef) and node.name == name:
            return node
    raise RenderError(f"class Model has no method {name}()")


def _is_self_attr(node: ast.AST, name: str | None = None) -> bool:
    return (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
            and node.value.id == "self" and (name is None or node.attr == name))


def _is_closure_call(node: ast.AST) -> bool:
    if not isinstance(node, ast.Call):
        return False
    f = node.func
    return (isinstance(f, ast.Name) and f.id == "Closure") or (
        isinstance(f, ast.Attribute) and f.attr == "Closure")


def _declarations(setup: ast.FunctionDef) -> dict[str, ast.Assign]:
    """``self.name = Closure(...)`` statements of ``setup`` by attribute name."""
    out = {}
    for node in ast.walk(setup):
        if (isinstance(node, ast.Assign) and len(node.targets) == 1
                and _is_self_attr(node.targets[0]) and _is_closure_call(node.value)):
            out[node.targets[0].attr] = node
    return out


def _parameters(setup: ast.FunctionDef) -> dict[str, ast.Call]:
    """``self.name = self.parameter(...)`` calls by parameter name."""
    out = {}
    for node in ast.walk(setup):
        if (isinstance(node, ast.Assign) and len(node.targets) == 1
                and _is_self_attr(node.targets[0]) and isinstance(node.value, ast.Call)
                and _is_self_attr(node.value.func, "parameter")):
            out[node.targets[0].attr] = node.value
    return out


def _calls(fn: ast.FunctionDef, attr: str) -> list[ast.Call]:
    return [n for n in ast.walk(fn)
            if isinstance(n, ast.Call) and _is_self_attr(n.func, attr)]


def _indent(src: _Source, node: ast.stmt) -> str:
    line = src.text.splitlines()[node.lineno - 1]
    return line[: len(line) - len(line.lstrip())]


def _num(v: float) -> str:
    return f"{v:.6g}"


def _set_init(src: _Source, call: ast.Call, value: float) -> None:
    """Replace a ``self.parameter(...)`` call's init with ``value``."""
    for kw in call.keywords:
        if kw.arg == "init":
            src.replace(kw.value, _num(value))
            return
    if call.args:
        src.replace(call.args[0], _num(value))


def _free_name(base: str, taken: set[str]) -> str:
    base = re.sub(r"\W", "_", base).strip("_") or "c"
    if base[0].isdigit():
        base = f"c_{base}"
    name, i = base, 2
    while name in taken:
        name, i = f"{base}_{i}", i + 1
    taken.add(name)
    return name


def _bounds(value: float, bounds: Sequence[float] | None) -> tuple[float, float]:
    """The hypothesis's bounds when they hold ``value`` with room, else a wider range."""
    width = max(abs(value), 1e-3)
    if bounds is not None:
        lo, hi = float(bounds[0]), float(bounds[1])
        margin = 1e-3 * (hi - lo)
        if lo + margin < value < hi - margin:
            return lo, hi
        return min(lo, value - 2 * width), max(hi, value + 2 * width)
    span = 10 * width
    return -span, span


def _declare_fixed(term: dict[str, Any], taken: set[str],
                   decl: list[tuple[str, float, tuple]]) -> dict[str, str]:
    """Declare a term's other parameters (``fixed``: a hypothesis's, a saturating form's K)
    as new bounded parameters at their values; their names in the term's template -> code."""
    names = {}
    for pname, spec in term["fixed"].items():
        new = _free_name(pname, taken)
        init = float(spec.get("init", 1.0))
        decl.append((new, init, _bounds(init, spec.get("bounds"))))
        names[pname] = f"self.{new}"
    return names


def _term_code(term: dict[str, Any], taken: set[str], decl: list[tuple[str, float, tuple]],
               state: str, own: Iterable[str] = ()) -> str:
    """Code of one distilled term with its coefficient as a new declared parameter."""
    c = float(term["coefficient"])
    if term["kind"] == "hypothesis":
        names = {p: f"self.{p}" for p in own}
        names.update(_declare_fixed(term, taken, decl))
        template = term["template"]
        if term["parameter"] is not None:
            new = _free_name(term["parameter"], taken)
            decl.append((new, c, _bounds(c, term["bounds"])))
            names[term["parameter"]] = f"self.{new}"
            return substitute(template, names)
        new = _free_name(f"c_{term['name']}", taken)
        decl.append((new, c, _bounds(c, None)))
        return f"self.{new} * ({substitute(template, names)})"
    new = _free_name(f"c_{state}", taken)
    decl.append((new, c, _bounds(c, None)))
    if term.get("template") and term.get("fixed"):  # a saturating form: K is refitted
        names = _declare_fixed(term, taken, decl)
        return f"self.{new} * ({substitute(term['template'], names)})"
    return f"self.{new}" if term["code"] == "1" else f"self.{new} * {term['code']}"


def _taken(model: HybridModel, src: _Source) -> set[str]:
    names = set(dir(model)) | set(model.parameter_specs)
    for node in ast.walk(src.tree):
        if isinstance(node, ast.Attribute) and _is_self_attr(node):
            names.add(node.attr)
    return names


def _splice(src: _Source, node: ast.AST, edits: list[_Edit]) -> str:
    """The text of ``node`` with the pending ``edits`` inside it applied."""
    a, b = src.span(node)
    out = src.data[a:b]
    for e in sorted(edits, key=lambda e: e.start, reverse=True):
        out = out[:e.start - a] + e.text.encode() + out[e.end - a:]
    return out.decode()


def _ensure_torch(text: str) -> str:
    if re.search(r"^\s*import torch\b", text, re.M):
        return text
    lines = text.splitlines(keepends=True)
    at = 0
    for i, line in enumerate(lines):
        if line.startswith("from __future__"):
            at = i + 1
    return "".join(lines[:at] + ["import torch\n"] + lines[at:])


def replace_closure(source: str, model: HybridModel, closure: str,
                    parts: Iterable[Any], *, header: str = "", doc: str = "") -> str:
    """The candidate with closure ``closure`` replaced by distilled terms.

    ``parts``: the closure's ``Distillation`` records (one per state it feeds). Shifts of
    existing parameters become their new initial values (fitted value plus shift).
    ``doc`` replaces the class docstring (which described the hybrid), keeping its first
    line after it.
    """
    parts = list(parts)
    if "." in closure:
        raise RenderError(f"closure {closure!r} is nested in a container; only closures "
                          "assigned as `self.name = Closure(...)` can be replaced")
    src = _Source(source)
    cls = _model_class(src)
    setup, deriv = _method(cls, "setup"), _method(cls, "derivatives")
    decls = _declarations(setup)
    if closure not in decls:
        raise RenderError(f"no `self.{closure} = Closure(...)` in setup()")
    calls = _calls(deriv, closure)
    if not calls:
        raise RenderError(f"derivatives() never calls self.{closure}(...)")
    taken = _taken(model, src)
    declared: list[tuple[str, float, tuple]] = []
    codes: dict[str, str] = {}
    for part in parts:
        d = part if isinstance(part, dict) else part.to_dict()
        terms = [t for t in d["terms"] if t["kind"] != "shift"]
        codes[d["state"]] = " + ".join(
            _term_code(t, taken, declared, d["state"], model.parameter_specs)
            for t in terms) or "0.0"
    _restart(src, setup, model, parts)
    _declare(src, decls[closure], declared)
    first = parts[0] if isinstance(parts[0], dict) else parts[0].to_dict()
    if len(parts) == 1 and first["in_place"] and len(calls) == 1:
        src.replace(calls[0], f"({codes[first['state']]})")
    else:
        null = "1.0" if first["kind"] == "multiplicative" else "0.0"
        for call in calls:
            src.replace(call, null)
        _add_to_derivatives(src, cls, deriv, codes)
    if doc:
        _set_docstring(src, cls, doc)
    text = src.render()
    if "torch." in "".join(codes.values()):
        text = _ensure_torch(text)
    return (header + text) if header else text


def with_initial_values(source: str, values: dict[str, float]) -> str:
    """``source`` with each ``self.<name> = self.parameter(...)`` of ``values``, in any
    class's ``setup()``, starting at its value: a refitted candidate queued where its refit
    ended, so that its own training starts there."""
    src = _Source(source)
    for cls in src.tree.body:
        if not isinstance(cls, ast.ClassDef):
            continue
        for fn in cls.body:
            if isinstance(fn, ast.FunctionDef) and fn.name == "setup":
                for name, call in _parameters(fn).items():
                    if name in values:
                        _set_init(src, call, float(values[name]))
    return src.render()


def starting_values(model: HybridModel, parts: Iterable[Any]) -> dict[str, float]:
    """Each existing parameter's start: the hybrid's fitted value plus what its closures
    absorbed (a parameter shifted in several states or closures: one shift, their mean),
    within the parameter's bounds."""
    fitted, specs = model.physical_values(), model.parameter_specs
    shifts: dict[str, list[float]] = {}
    for part in parts:
        d = part if isinstance(part, dict) else part.to_dict()
        for p, c in d["shifts"].items():
            shifts.setdefault(p, []).append(c)
    return {k: min(max(v + (sum(shifts[k]) / len(shifts[k]) if k in shifts else 0.0),
                       specs[k].lower), specs[k].upper)
            for k, v in fitted.items() if k in specs}


def _restart(src: _Source, setup: ast.FunctionDef, model: HybridModel,
             parts: Iterable[Any]) -> None:
    """Existing parameters start at ``starting_values``."""
    starts = starting_values(model, parts)
    for name, call in _parameters(setup).items():
        if name in starts:
            _set_init(src, call, starts[name])


def _declare(src: _Source, decl_node: ast.stmt, declared) -> None:
    """The closure's declaration becomes the new parameters' declarations."""
    ind = _indent(src, decl_node)
    lines = [f"{ind}self.{n} = self.parameter(init={_num(v)}, bounds=({_num(lo)}, {_num(hi)}))\n"
             for n, v, (lo, hi) in declared]
    src.replace_lines(decl_node.lineno, decl_node.end_lineno, "".join(lines) or f"{ind}pass\n")


_INPUT_REF = re.compile(r"(?<![\w.])[su]\.([A-Za-z_]\w*)")


def replace_calls(source: str, model: HybridModel, closure: str, part: Any, *,
                  named: bool, header: str = "", doc: str = "") -> str:
    """The candidate with every call ``self.<closure>(...)`` replaced by a formula of the
    same arguments: ``part`` is a call-form ``Distillation`` (its terms are functions of the
    closure's inputs, written ``s.<input>``), fitted to what the network returned at the
    arguments it was called with, so the formula stands wherever the network stood, whatever
    the wiring (inside a rate, a product, several states). ``named``: the closure was called
    with the whole ``s``, not one tensor per input. A multiplicative closure's call becomes
    ``(1 + formula)``."""
    d = part if isinstance(part, dict) else part.to_dict()
    if "." in closure:
        raise RenderError(f"closure {closure!r} is nested in a container; its calls cannot"
                          " be rewritten as a formula")
    src = _Source(source)
    cls = _model_class(src)
    setup = _method(cls, "setup")
    decls = _declarations(setup)
    if closure not in decls:
        raise RenderError(f"no `self.{closure} = Closure(...)` in setup()")
    calls = [c for fn in cls.body if isinstance(fn, ast.FunctionDef) and fn.name != "setup"
             for c in _calls(fn, closure)]
    if not calls:
        raise RenderError(f"no method of class Model calls self.{closure}(...)")
    taken = _taken(model, src)
    declared: list[tuple[str, float, tuple]] = []
    formula = " + ".join(_term_code(t, taken, declared, closure, model.parameter_specs)
                         for t in d["terms"]) or "0.0"
    inputs = tuple(d["inputs"])
    for call in calls:
        if named:
            if len(call.args) != 1:
                raise RenderError(f"self.{closure}(...) is called with {len(call.args)}"
                                  " arguments where it was called with the whole state")
            whole = src.segment(call.args[0])
            args = {n: f"{whole}.{n}" for n in inputs}
        else:
            if len(call.args) != len(inputs) or call.keywords:
                raise RenderError(f"self.{closure}(...) is not called with one argument per"
                                  f" input ({', '.join(inputs)})")
            args = {n: f"({src.segment(a)})" for n, a in zip(inputs, call.args, strict=True)}
        code = _INPUT_REF.sub(lambda m, a=args: a.get(m.group(1), m.group(0)), formula)
        src.replace(call, f"(1.0 + {code})" if d["kind"] == "multiplicative" else f"({code})")
    _restart(src, setup, model, [d])
    _declare(src, decls[closure], declared)
    if doc:
        _set_docstring(src, cls, doc)
    text = src.render()
    if "torch." in formula:
        text = _ensure_torch(text)
    return (header + text) if header else text


def subclass_without_closure(source: str, model: HybridModel, closure: str | Sequence[str],
                             parts: Iterable[Any], *, header: str = "", doc: str = "") -> str:
    """The general rewrite, for any ``setup()`` shape (closures in loops, dicts, helper
    methods, under another name): the hybrid's class is kept as ``_Hybrid``; ``Model``
    subclasses it, removes the closure (``without_closure``: its null value, no weights),
    starts the existing parameters at the hybrid's fitted values plus what the closure
    absorbed, declares the distilled terms' parameters and adds the terms to what the
    hybrid's derivatives return. ``closure`` may name several closures, ``parts`` holding
    the records of each (terms of two closures on one state are added together)."""
    closures = [closure] if isinstance(closure, str) else list(closure)
    parts = [p if isinstance(p, dict) else p.to_dict() for p in parts]
    tree = ast.parse(source)
    classes = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Model"]
    if not classes:
        raise RenderError("no class Model in the candidate")
    taken = _taken(model, _Source(source)) | {"_Hybrid"}
    declared: list[tuple[str, float, tuple]] = []
    codes: dict[str, str] = {}
    for d in parts:
        terms = [t for t in d["terms"] if t["kind"] != "shift"]
        code = " + ".join(_term_code(t, taken, declared, d["state"], model.parameter_specs)
                          for t in terms)
        if code:
            codes[d["state"]] = f"{codes[d['state']]} + {code}" if codes.get(d["state"]) else code
        else:
            codes.setdefault(d["state"], "")
    codes = {state: code or "0.0" for state, code in codes.items()}
    starts = starting_values(model, parts)
    old_doc = ast.get_docstring(classes[0])
    classes[0].name = "_Hybrid"
    text = doc or "Distilled from a hybrid."
    if old_doc:
        text += f" The hybrid it came from: {old_doc.splitlines()[0]}"
    text = textwrap.fill(text.replace('"', "'"), 88).replace("\n", "\n    ")
    lines = ["", "", "class Model(_Hybrid):", f'    """{text}\n    """', "",
             "    def setup(self):", "        super().setup()"]
    lines += [f"        self.without_closure({c!r})" for c in closures]
    for name, spec in model.parameter_specs.items():
        v = starts[name]
        extra = ", individual=True" if spec.individual else ""
        lines.append(f"        self.{name} = self.parameter(init={_num(v)}, bounds=("
                     f"{_num(spec.lower)}, {_num(spec.upper)}), log={spec.log}{extra})")
    lines += [f"        self.{n} = self.parameter(init={_num(v)}, bounds=({_num(lo)},"
              f" {_num(hi)}))" for n, v, (lo, hi) in declared]
    lines += ["", "    def derivatives(self, t, s, u):",
              "        d = dict(super().derivatives(t, s, u))"]
    lines += [f"        d[{state!r}] = d[{state!r}] + ({code})" for state, code in codes.items()]
    lines += ["        return d", ""]
    out = ast.unparse(tree) + "\n".join(lines)
    if "torch." in "".join(codes.values()):
        out = _ensure_torch(out)
    return (header + out) if header else out


def _set_docstring(src: _Source, cls: ast.ClassDef, doc: str) -> None:
    first = cls.body[0]
    old = ast.get_docstring(cls)
    text = doc if not old else f"{doc}\n\nThe hybrid it came from: {old.splitlines()[0]}"
    ind = " " * cls.body[0].col_offset
    text = "\n\n".join(textwrap.fill(par, width=96 - len(ind)) for par in text.split("\n\n"))
    body = text.replace("\\", "\\\\").replace('"""', '\\"\\"\\"')
    body = body.replace("\n", "\n" + ind).replace("\n" + ind + "\n", "\n\n")
    literal = f'"""{body}"""' if "\n" not in text else f'"""{body}\n{ind}"""'
    if old is not None and isinstance(first, ast.Expr):
        src.replace(first, literal)
    else:
        src.insert(first.lineno, f"{ind}{literal}\n\n")


def _add_to_derivatives(src: _Source, cls: ast.ClassDef, deriv: ast.FunctionDef,
                        codes: dict[str, str]) -> None:
    """Add each state's terms to what derivatives() returns."""
    returns = [n for n in ast.walk(deriv) if isinstance(n, ast.Return)]
    dicts = [r.value for r in returns if isinstance(r.value, ast.Dict)]
    values = []
    for dnode in dicts:
        keys = {k.value: v for k, v in zip(dnode.keys, dnode.values, strict=True)
                if isinstance(k, ast.Constant) and isinstance(k.value, str)}
        values.append(keys)
    if dicts and len(dicts) == len(returns) and all(set(codes) <= set(k) for k in values):
        for keys in values:
            for state, code in codes.items():
                node = keys[state]
                inner = [e for e in src.edits
                         if e.start >= src.span(node)[0] and e.end <= src.span(node)[1]]
                old = _splice(src, node, inner)
                src.edits = [e for e in src.edits if e not in inner]
                src.replace(node, f"({old}) + ({code})")
        return
    # general case: keep the original as _mechanism() and add the terms around it
    line = src.text.splitlines()[deriv.lineno - 1]
    at = src.offset(deriv.lineno, line.index("def derivatives") + len("def "))
    src.edits.append(_Edit(at, at + len("derivatives"), "_mechanism"))
    ind = _indent(src, deriv)
    body = [f"\n{ind}def derivatives(self, t, s, u):\n",
            f"{ind}    d = dict(self._mechanism(t, s, u))\n"]
    body += [f"{ind}    d[{state!r}] = d[{state!r}] + ({code})\n" for state, code in codes.items()]
    body.append(f"{ind}    return d\n")
    src.insert(cls.end_lineno + 1, "".join(body))


def remove_closures(source: str) -> str:
    """The candidate with every closure at its null value and its declaration removed."""
    src = _Source(source)
    cls = _model_class(src)
    setup, deriv = _method(cls, "setup"), _method(cls, "derivatives")
    decls = _declarations(setup)
    if not decls:
        raise RenderError("setup() declares no `self.name = Closure(...)`")
    for name, node in decls.items():
        kind = "additive"
        for kw in node.value.keywords:
            if kw.arg == "kind" and isinstance(kw.value, ast.Constant):
                kind = kw.value.value
        for call in _calls(deriv, name):
            src.replace(call, "1.0" if kind == "multiplicative" else "0.0")
        ind = _indent(src, node)
        src.replace_lines(node.lineno, node.end_lineno, f"{ind}pass  # closure {name} removed\n")
    return src.render()


def resize_closures(source: str, factor: float, default: Sequence[int] = (64, 64)) -> str:
    """The candidate with every closure's hidden widths scaled by ``factor``."""
    src = _Source(source)
    cls = _model_class(src)
    decls = _declarations(_method(cls, "setup"))
    if not decls:
        raise RenderError("setup() declares no `self.name = Closure(...)`")
    for node in decls.values():
        call = node.value
        value = next((kw.value for kw in call.keywords if kw.arg == "hidden"), None)
        if value is None and len(call.args) >= 2:
            value = call.args[1]
        try:
            hidden = tuple(default) if value is None else ast.literal_eval(value)
        except ValueError:
            raise RenderError(f"closure hidden sizes must be literal numbers: "
                              f"{src.segment(value)}") from None
        hidden = (hidden,) if isinstance(hidden, int) else tuple(hidden)
        new = "(" + ", ".join(str(max(1, round(h * factor))) for h in hidden) + \
            ("," if len(hidden) == 1 else "") + ")"
        if value is None:
            end = src.offset(call.end_lineno, call.end_col_offset) - 1  # before ')'
            src.edits.append(_Edit(end, end, f", hidden={new}"))
        else:
            src.replace(value, new)
    return src.render()
