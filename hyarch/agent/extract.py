"""Taking candidate code out of an LLM's reply.

The prompts ask for one fenced ```python block holding the whole file. Models do not always
comply: they add a usage example in a second block, send a snippet before the full file,
think aloud in ``<think>`` tags (reasoning models served by vLLM or Ollama), or forget the
fence. The rule: the last fenced Python block that defines ``class Model``; failing that, a
reply that is itself a Python file defining ``Model``; otherwise no code, with a reason the
search records (and goes on).
"""

from __future__ import annotations

import ast
import re
import textwrap
from dataclasses import dataclass

_FENCE_OPEN = re.compile(r"[ \t]*(`{3,}|~{3,})[ \t]*([\w.+-]*)")
_DEFINES_MODEL = re.compile(r"^class\s+Model\b", re.MULTILINE)
_PYTHON_TAGS = {"", "python", "py", "python3", "py3"}

NO_CODE = "the reply had no ```python block defining class Model"


@dataclass(frozen=True)
class Extracted:
    """Code from a reply, or why there is none."""

    source: str | None
    reason: str | None = None
    blocks: int = 0  # fenced Python blocks in the reply


def _drop_thinking(text: str) -> str:
    """The reply without ``<think>...</think>`` spans (an unclosed one runs to the end)."""
    out, pos, low = [], 0, text.lower()
    while True:
        i = low.find("<think>", pos)
        if i < 0:
            out.append(text[pos:])
            return "".join(out)
        out.append(text[pos:i])
        j = low.find("</think>", i)
        if j < 0:
            return "".join(out)
        pos = j + len("</think>")


def code_blocks(reply: str) -> list[str]:
    """The fenced Python (or untagged) blocks of a reply, in order. One pass over the
    lines: a fence opens at the start of a line and closes at a line holding only the same
    fence character at least as many times; a block left open (a cut-off reply) runs to
    the end."""
    out: list[str] = []
    fence: str | None = None
    tag = ""
    body: list[str] = []
    for line in _drop_thinking(reply or "").split("\n"):
        if fence is None:
            m = _FENCE_OPEN.match(line)
            if m:
                fence, tag, body = m.group(1), m.group(2).lower(), []
            continue
        stripped = line.strip()
        if stripped and stripped[0] == fence[0] and len(stripped) >= len(fence) \
                and stripped == stripped[0] * len(stripped):
            if tag in _PYTHON_TAGS:
                out.append(_dedent("\n".join(body) + "\n"))
            fence = None
            continue
        body.append(line)
    if fence is not None and tag in _PYTHON_TAGS:
        out.append(_dedent("\n".join(body) + ("\n" if body else "")))
    return out


def extract_code(reply: str | None) -> Extracted:
    if not reply or not reply.strip():
        return Extracted(None, "the reply was empty")
    blocks = code_blocks(reply)
    with_model = [b for b in blocks if _DEFINES_MODEL.search(b)]
    if with_model:
        return Extracted(with_model[-1].rstrip() + "\n", None, len(blocks))
    if blocks:
        return Extracted(None, f"the reply's {len(blocks)} ```python block(s) do not define"
                               " class Model", len(blocks))
    bare = _drop_thinking(reply).strip()
    if _DEFINES_MODEL.search(bare) and _parses(bare):
        return Extracted(bare + "\n", None, 0)
    return Extracted(None, NO_CODE, 0)


def _dedent(code: str) -> str:
    return textwrap.dedent(code)


def _parses(code: str) -> bool:
    try:
        ast.parse(code)
    except SyntaxError:
        return False
    return True
