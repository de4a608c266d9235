"""What crosses between the parent and the child that runs candidate code.

The job (parent -> child) is trusted: a ``torch.save`` of plain tensors, strings and numbers,
read with ``weights_only=True``.

The reply (child -> parent) is untrusted: whatever the candidate managed to write. It is a
small framed format the parent parses with hard caps and never unpickles::

    b"HYR1" | u64 header length | header (JSON) | blobs

The header lists each blob by name, dtype, shape and size; the parent accepts only the
prediction arrays it asked for, with exactly the shapes it expects.

Progress (child -> parent, optional) travels on a second pipe, never on the result's, so no
report can be read as a result: one JSON object a line, ``{"phase", "done", "planned",
"fit"}``. The parent reads at most ``MAX_PROGRESS_BYTES`` in all and lines of at most
``MAX_PROGRESS_LINE`` bytes, and keeps a line only if it is exactly such an object with a
known phase and counts in range (``decode_progress``); the child writes without blocking
and drops a report when the pipe is full, so a slow parent never slows training.
"""

from __future__ import annotations

import io
import json
import math
import struct
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hyarch.core.progress import MAX_STEPS, PHASES, TrainingProgress

MAGIC = b"HYR1"
MAX_HEADER = 1 << 20  # the JSON header: reasons, parameters, claims, distilled terms
MAX_WEIGHTS = 64 << 20  # a candidate's state_dict
MAX_TEXT = 2000  # any one string from the child, after which it is cut
_DTYPES = {"float32": np.float32, "float64": np.float64}
MAX_PROGRESS_LINE = 256  # one report is under 100 bytes
MAX_PROGRESS_BYTES = 1 << 20  # about an hour of reports at four a second


class ReplyError(Exception):
    """The child's reply is malformed; the candidate fails with this reason."""


def encode_job(job: dict[str, Any]) -> bytes:
    import torch

    buf = io.BytesIO()
    torch.save(job, buf)
    return buf.getvalue()


def decode_job(data: bytes) -> dict[str, Any]:
    import torch

    return torch.load(io.BytesIO(data), weights_only=True)


def encode_reply(header: dict[str, Any], arrays: dict[str, np.ndarray],
                 weights: bytes | None = None) -> bytes:
    blobs, index = [], []
    for name, a in arrays.items():
        a = np.ascontiguousarray(a, dtype=np.float64)
        index.append([name, "float64", list(a.shape), a.nbytes])
        blobs.append(a.tobytes())
    if weights:
        index.append(["__weights__", "bytes", [len(weights)], len(weights)])
        blobs.append(weights)
    head = json.dumps({**header, "blobs": index}, default=str, allow_nan=False).encode()
    return MAGIC + struct.pack("<Q", len(head)) + head + b"".join(blobs)


@dataclass
class Reply:
    header: dict[str, Any]
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    weights: bytes | None = None


def decode_reply(data: bytes, expected: dict[str, tuple[int, ...]]) -> Reply:
    """Parse an untrusted reply; ``expected`` maps each array name to its shape.

    Arrays not asked for are ignored; a missing or mis-shaped one is an error."""
    if len(data) < 12 or data[:4] != MAGIC:
        raise ReplyError("the evaluation process returned no readable result")
    (n,) = struct.unpack("<Q", data[4:12])
    if n > MAX_HEADER or 12 + n > len(data):
        raise ReplyError("the evaluation process returned a malformed result (header size)")
    try:
        header = json.loads(data[12:12 + n].decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):  # deep nesting too
        raise ReplyError("the evaluation process returned a malformed result (header)") from None
    if not isinstance(header, dict) or not isinstance(header.get("blobs", []), list):
        raise ReplyError("the evaluation process returned a malformed result (header)")
    off = 12 + n
    arrays: dict[str, np.ndarray] = {}
    weights = None
    for item in header.pop("blobs", []):
        if (not isinstance(item, list) or len(item) != 4 or not isinstance(item[0], str)
                or not isinstance(item[3], int) or item[3] < 0 or not isinstance(item[2], list)):
            raise ReplyError("the evaluation process returned a malformed result (blob index)")
        name, dtype, shape, nbytes = item
        if off + nbytes > len(data):
            raise ReplyError("the evaluation process returned a truncated result")
        blob = data[off:off + nbytes]
        off += nbytes
        if name == "__weights__":
            if nbytes <= MAX_WEIGHTS:
                weights = blob
            continue
        if name not in expected:
            continue
        want = tuple(expected[name])
        if dtype not in _DTYPES or tuple(shape) != want or not all(
                isinstance(s, int) for s in shape):
            raise ReplyError(f"predictions {name!r} have shape {shape}, expected {list(want)}")
        np_dtype = _DTYPES[dtype]
        if nbytes != math.prod(want) * np.dtype(np_dtype).itemsize:
            raise ReplyError(f"predictions {name!r} have the wrong size")
        arrays[name] = np.frombuffer(blob, dtype=np_dtype).reshape(want).astype(np.float64)
    return Reply(header, arrays, weights)


def text(value: Any, limit: int = MAX_TEXT) -> str:
    """An untrusted value as a bounded, printable string."""
    s = value if isinstance(value, str) else repr(value)
    s = s[: limit * 4]
    s = "".join(ch if ch.isprintable() or ch in "\n\t" else "?" for ch in s)
    if len(s) > limit:
        s = s[:limit] + f" ... [{len(s) - limit} more characters cut]"
    return s


def number(value: Any) -> float | None:
    """An untrusted number: a finite float or None (never a string, a bool or NaN)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    x = float(value)
    return x if math.isfinite(x) else None


def encode_progress(event: TrainingProgress) -> bytes:
    return json.dumps({"phase": event.phase, "done": event.done, "planned": event.planned,
                       "fit": event.fit}).encode() + b"\n"


def decode_progress(line: bytes) -> TrainingProgress | None:
    """One untrusted line from the progress pipe: a report, or None for anything else."""
    if len(line) > MAX_PROGRESS_LINE:
        return None
    try:
        d = json.loads(line.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None
    if not isinstance(d, dict) or set(d) != {"phase", "done", "planned", "fit"}:
        return None
    phase, done, planned, fit = d["phase"], d["done"], d["planned"], d["fit"]
    if not (isinstance(phase, str) and phase in PHASES):
        return None
    if any(isinstance(x, bool) or not isinstance(x, int) for x in (done, planned, fit)):
        return None
    if not (0 <= done <= MAX_STEPS and 0 <= planned <= MAX_STEPS and fit in (1, 2)):
        return None
    return TrainingProgress(phase, done, planned, fit)
