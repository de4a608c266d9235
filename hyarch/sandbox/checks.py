"""Cheap static checks on candidate code before anything runs it.

They catch the common failures (syntax, forbidden imports, no Model class) with a clear
reason in milliseconds, so that an LLM gets a useful message at once. They are a filter,
not the security boundary: the operating system's isolation of the child process is
(see ``hyarch.sandbox.isolation``).
"""

from __future__ import annotations

import ast
import hashlib
import io
import tokenize

ALLOWED_IMPORTS = ("torch", "math", "numpy", "hyarch")
# imports are matched on the full dotted name: ``hyarch.evaluate`` is not ``hyarch``
ALLOWED_MODULES = frozenset({
    "torch", "torch.nn", "torch.nn.functional", "torch.nn.init", "torch.special",
    "torch.linalg", "math", "numpy", "hyarch",
})
# the candidate contract: the only names a candidate may take from hyarch
CONTRACT_NAMES = frozenset({"HybridModel", "Closure", "ContractError"})
FORBIDDEN_NAMES = {
    "open", "exec", "eval", "compile", "__import__", "input", "breakpoint", "globals",
    "locals", "vars", "getattr", "setattr", "delattr", "memoryview",
}
FORBIDDEN_ATTRS = {
    "__globals__", "__code__", "__closure__", "__subclasses__", "__builtins__", "__bases__",
    "__mro__", "__dict__", "__getattribute__", "__reduce__", "__reduce_ex__", "f_globals",
    "f_locals", "f_back", "gi_frame", "system", "popen", "spawn", "fork", "load", "save",
    "from_file", "fromfile", "tofile", "savetxt", "loadtxt", "genfromtxt", "hub", "ops",
    "_C", "library", "utils_cpp_extension",
}


class CheckError(Exception):
    """Why a candidate is rejected before it is run."""


def check_source(source: str, filename: str = "model.py") -> ast.Module:
    """Parse and vet candidate code; raise CheckError with a reason naming the line."""
    if not source or not source.strip():
        raise CheckError("the candidate file is empty")
    try:
        tree = ast.parse(source, filename)
    except SyntaxError as e:
        raise CheckError(f"syntax error at line {e.lineno}: {e.msg}") from None
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                _allowed(alias.name, node.lineno)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                raise CheckError(f"line {node.lineno}: relative imports are not allowed")
            module = node.module or ""
            for alias in node.names:
                full = f"{module}.{alias.name}"
                if module == "hyarch":
                    if alias.name not in CONTRACT_NAMES:
                        raise CheckError(
                            f"line {node.lineno}: 'from hyarch import {alias.name}' is not"
                            f" allowed; a candidate may import only"
                            f" {', '.join(sorted(CONTRACT_NAMES))} from hyarch")
                elif full in ALLOWED_MODULES:
                    continue
                elif alias.name in FORBIDDEN_ATTRS or alias.name in FORBIDDEN_NAMES or (
                        alias.name.startswith("_")):
                    raise CheckError(f"line {node.lineno}: 'from {module} import"
                                     f" {alias.name}' is not allowed in a candidate")
            _allowed(module, node.lineno)
        elif (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
              and node.value.id == "hyarch" and node.attr not in CONTRACT_NAMES):
            raise CheckError(f"line {node.lineno}: hyarch.{node.attr} is not part of the"
                             f" candidate contract ({', '.join(sorted(CONTRACT_NAMES))})")
        elif isinstance(node, ast.Name) and node.id in FORBIDDEN_NAMES:
            raise CheckError(f"line {node.lineno}: {node.id}() is not allowed in a candidate")
        elif isinstance(node, ast.Attribute) and node.attr in FORBIDDEN_ATTRS:
            raise CheckError(f"line {node.lineno}: attribute .{node.attr} is not allowed")
    classes = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Model"]
    if not classes:
        raise CheckError("the file must define `class Model(HybridModel)` at top level")
    if len(classes) > 1:
        lines = ", ".join(str(c.lineno) for c in classes)
        raise CheckError(f"class Model is defined {len(classes)} times (lines {lines}); a"
                         " candidate file defines it once")
    _check_closure_calls(tree)
    for cls in (n for n in tree.body if isinstance(n, ast.ClassDef)):
        for fn in cls.body:
            if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)) and fn.name in _core_methods():
                raise CheckError(
                    f"line {fn.lineno}: {cls.name} redefines {fn.name}(), which hyarch's core"
                    " provides; a candidate defines setup() and derivatives() (and helpers"
                    " of its own, under other names)")
    methods = {n.name for n in classes[-1].body if isinstance(n, ast.FunctionDef)}
    if "derivatives" not in methods and not classes[-1].bases:
        raise CheckError("class Model must define derivatives(self, t, s, u)")
    return tree


def _check_closure_calls(tree: ast.Module) -> None:
    """A closure declared with literal inputs and called with states and inputs by name
    (``self.net(s.x, u.f)``) must be called with them in the declared order: the network
    cannot tell ``(x, v)`` from ``(v, x)``, so a swapped call trains silently on the wrong
    variables."""
    declared: dict[str, tuple[str, ...]] = {}
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Assign) and isinstance(node.value, ast.Call)):
            continue
        f = node.value.func
        if (f.id if isinstance(f, ast.Name) else getattr(f, "attr", "")) != "Closure":
            continue
        kw = {k.arg: k.value for k in node.value.keywords if k.arg}
        spec = kw.get("inputs", node.value.args[0] if node.value.args else None)
        try:
            inputs = ast.literal_eval(spec) if spec is not None else None
        except (ValueError, TypeError, SyntaxError):
            continue
        if isinstance(inputs, str):
            inputs = (inputs,)
        if not isinstance(inputs, (tuple, list)) or not all(isinstance(i, str) for i in inputs):
            continue
        for target in node.targets:
            if (isinstance(target, ast.Attribute) and isinstance(target.value, ast.Name)
                    and target.value.id == "self"):
                declared[target.attr] = tuple(inputs)
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and isinstance(node.func.value, ast.Name) and node.func.value.id == "self"
                and node.func.attr in declared) or node.keywords:
            continue
        names = [_variable_name(a) for a in node.args]
        if any(n is None for n in names):
            continue  # computed arguments: the runtime check sees their shapes only
        want = declared[node.func.attr]
        if tuple(names) != want:
            raise CheckError(
                f"line {node.lineno}: self.{node.func.attr} is declared with inputs"
                f" {want} but called with ({', '.join(names)}); call it with its inputs in"
                " the declared order")


def _variable_name(arg: ast.expr) -> str | None:
    """``s.x`` / ``u.f`` / ``s["x"]`` as the variable's name, else None."""
    if isinstance(arg, ast.Attribute) and isinstance(arg.value, ast.Name) \
            and arg.value.id in ("s", "u"):
        return arg.attr
    if (isinstance(arg, ast.Subscript) and isinstance(arg.value, ast.Name)
            and arg.value.id in ("s", "u") and isinstance(arg.slice, ast.Constant)
            and isinstance(arg.slice.value, str)):
        return arg.slice.value
    return None


def _allowed(module: str, line: int) -> None:
    if module not in ALLOWED_MODULES:
        raise CheckError(
            f"line {line}: import of {module!r} is not allowed; candidates may import only"
            f" {', '.join(sorted(ALLOWED_MODULES))}"
        )


def code_hash(source: str) -> str:
    """Hash of the code with comments, docstrings and formatting normalised away,
    so that a re-worded duplicate is recognised."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return hashlib.sha256(_strip_comments(source).encode()).hexdigest()[:16]
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (isinstance(body, list) and body and isinstance(body[0], ast.Expr)
                and isinstance(getattr(body[0], "value", None), ast.Constant)
                and isinstance(body[0].value.value, str)):
            body.pop(0)
            if not body:
                body.append(ast.Pass())
    return hashlib.sha256(ast.unparse(tree).encode()).hexdigest()[:16]


def _strip_comments(source: str) -> str:
    out = []
    try:
        for tok in tokenize.generate_tokens(io.StringIO(source).readline):
            if tok.type not in (tokenize.COMMENT, tokenize.NL):
                out.append(tok.string)
    except (tokenize.TokenError, IndentationError):
        return " ".join(source.split())
    return " ".join(out)


_OWN = {"setup", "derivatives", "observe", "__init__"}


def _core_methods() -> frozenset[str]:
    """Methods of HybridModel and torch.nn.Module a candidate may not redefine: they report
    its size, its parameters and its weights, or run it."""
    global _CORE
    if _CORE is None:
        from hyarch.core.model import HybridModel

        names = {n for n in dir(HybridModel) if callable(getattr(HybridModel, n, None))}
        _CORE = frozenset(n for n in names if n not in _OWN and not (
            n.startswith("__") and n not in ("__call__", "__getattr__", "__setattr__",
                                              "__getattribute__", "__reduce__",
                                              "__reduce_ex__", "__getstate__", "__setstate__",
                                              "__del__")))
    return _CORE


_CORE: frozenset[str] | None = None


def network_floor(source: str) -> int:
    """A lower bound on the candidate's network weights, read from its code: each
    ``Closure(...)`` with literal ``inputs`` and ``hidden`` counts its exact size, any other
    ``Closure``, ``nn.Linear`` or ``nn.Parameter`` at least one. The parent takes the larger
    of this and what the candidate's process claims, so a claim of "no network" cannot
    hide one."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return 0
    total = 0
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        f = node.func
        name = f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else ""
        if name == "Closure":
            total += _closure_size(node) or 1
        elif name == "Linear":
            try:
                a, b = (ast.literal_eval(x) for x in node.args[:2])
                total += (int(a) + 1) * int(b)
            except (ValueError, TypeError, SyntaxError):
                total += 1
        elif name in ("Parameter", "ParameterList", "Conv1d", "Conv2d", "GRU", "LSTM", "RNN"):
            total += 1
    return total


def _closure_size(call: ast.Call) -> int | None:
    kw = {k.arg: k.value for k in call.keywords if k.arg}
    args = list(call.args)
    try:
        inputs = ast.literal_eval(kw.get("inputs", args[0] if args else None))
        hidden = ast.literal_eval(kw["hidden"]) if "hidden" in kw else (
            ast.literal_eval(args[1]) if len(args) > 1 else (64, 64))
        outputs = ast.literal_eval(kw["outputs"]) if "outputs" in kw else 1
        time = ast.literal_eval(kw["time"]) if "time" in kw else False
    except (ValueError, TypeError, SyntaxError, KeyError):
        return None
    n_in = 1 if isinstance(inputs, str) else len(inputs)
    hidden = (hidden,) if isinstance(hidden, int) else tuple(hidden)
    sizes = [n_in + bool(time), *hidden, outputs]
    if not all(isinstance(x, int) and x > 0 for x in sizes):
        return None
    return sum((a + 1) * b for a, b in zip(sizes[:-1], sizes[1:]))
