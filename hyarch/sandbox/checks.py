"""Cheap static checks on candidate code before anything runs it.

They catch the common failures (syntax, forbidden imports, no Model class) with a clear
reason in milliseconds; the child process's runtime guard and limits catch the rest.
"""

from __future__ import annotations

import ast
import hashlib
import io
import tokenize

ALLOWED_IMPORTS = ("torch", "math", "numpy", "hyarch")
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
            _allowed(node.module or "", node.lineno)
        elif isinstance(node, ast.Name) and node.id in FORBIDDEN_NAMES:
            raise CheckError(f"line {node.lineno}: {node.id}() is not allowed in a candidate")
        elif isinstance(node, ast.Attribute) and node.attr in FORBIDDEN_ATTRS:
            raise CheckError(f"line {node.lineno}: attribute .{node.attr} is not allowed")
    classes = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Model"]
    if not classes:
        raise CheckError("the file must define `class Model(HybridModel)` at top level")
    methods = {n.name for n in classes[-1].body if isinstance(n, ast.FunctionDef)}
    if "derivatives" not in methods and not classes[-1].bases:
        raise CheckError("class Model must define derivatives(self, t, s, u)")
    return tree


def _allowed(module: str, line: int) -> None:
    root = module.split(".")[0]
    if root not in ALLOWED_IMPORTS:
        raise CheckError(
            f"line {line}: import of {module!r} is not allowed; candidates may import only"
            f" {', '.join(ALLOWED_IMPORTS)}"
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
