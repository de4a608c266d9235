"""A search run on disk: the folder layout, atomic writes, and reading it back.

```
runs/<name>/
  run.yaml                 resolved configuration, versions, seed
  study.journal            Optuna storage (default)
  candidates/<id>/         model.py, meta.json, metrics.json, weights.pt, fit.png,
                           predictions.npz, prompt.json and reply.txt where an LLM wrote it
  llm.jsonl                every LLM call
  reviews.jsonl            what the reviewer decided and wrote
  report.html
```

``metrics.json`` is written last, atomically: a candidate folder without it is unfinished
(killed mid-evaluation) and is evaluated again on resume.

Candidate code is untrusted. Only the parent writes the run folder, and never through a
link it did not make: every write opens its folder with ``O_NOFOLLOW`` (the candidate
folder and ``candidates/`` are checked to be real directories owned by us), refuses a
symlinked target file, and removes its temporary file on any error. Every read of a
candidate's records is capped in size and validated: a record that does not parse, or
carries the wrong types (``"nmse": "0.0"``), turns that candidate into a failed record
with the reason; it never breaks the run.
"""

from __future__ import annotations

import errno
import json
import math
import os
import re
import secrets
import stat
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

MAX_RECORD_BYTES = 8 << 20  # meta.json, metrics.json, distill.json
MAX_SOURCE_BYTES = 4 << 20  # model.py
MAX_PREDICTIONS_BYTES = 512 << 20
TEMP_MAX_AGE_S = 600.0  # a temporary file older than this is a killed writer's leftover

_CID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)


class UnsafePathError(OSError):
    """A path hyarch would write (or read a record) through is a link, or not a real
    directory or file of ours: something else has been at the run folder."""


# -- low-level, link-safe file operations ---------------------------------------------------


def _check_dir_fd(fd: int, where: str | Path) -> None:
    st = os.fstat(fd)
    if not stat.S_ISDIR(st.st_mode):
        raise UnsafePathError(errno.ENOTDIR, f"{where}: not a directory")
    if hasattr(os, "getuid") and st.st_uid != os.getuid():
        raise UnsafePathError(errno.EPERM, f"{where}: a directory not owned by us"
                                           f" (uid {st.st_uid}); refusing to use it")


def _open_subdir(parent_fd: int | None, name: str | Path, where: str | Path, *,
                 create: bool) -> int:
    """Open the directory ``name`` (relative to ``parent_fd``) without following a link in
    its last component; with ``create``, make it first (``os.mkdir``) when it is missing.
    Raises UnsafePathError when it is a link, not a directory, or not ours."""
    kw = {} if parent_fd is None else {"dir_fd": parent_fd}
    for _ in range(2):
        try:
            fd = os.open(name, _DIR_FLAGS, **kw)
        except FileNotFoundError:
            if not create:
                raise
            try:
                os.mkdir(name, 0o755, **kw)
            except FileExistsError:
                pass  # made meanwhile (another worker): open and check it
            continue
        except OSError as e:
            if e.errno in (errno.ELOOP, errno.ENOTDIR, errno.EMLINK):
                raise UnsafePathError(e.errno, f"{where}: a symbolic link or not a directory;"
                                               " refusing to write through it") from None
            raise
        try:
            _check_dir_fd(fd, where)
        except BaseException:
            os.close(fd)
            raise
        return fd
    raise FileNotFoundError(errno.ENOENT, f"{where}: could not be created")


def _open_parent(path: Path) -> int:
    """A checked directory fd for ``path.parent``: ancestors are made as usual (the run
    folder may live under a link of the user's), the folder itself is a real directory."""
    parent = path.parent
    if not os.path.lexists(parent):
        parent.parent.mkdir(parents=True, exist_ok=True)
    return _open_subdir(None, parent, parent, create=True)


def _atomic_write_at(dfd: int, name: str, data: str | bytes, where: str | Path) -> None:
    """Write ``name`` in the directory ``dfd``: a fresh temporary file (O_EXCL|O_NOFOLLOW),
    fsync, rename over ``name``. A symlinked ``name`` is refused; the temporary file is
    removed on any error."""
    if "/" in name or name in ("", ".", ".."):
        raise ValueError(f"bad file name {name!r}")
    try:
        st = os.lstat(name, dir_fd=dfd)
    except FileNotFoundError:
        st = None
    if st is not None and not stat.S_ISREG(st.st_mode):
        raise UnsafePathError(errno.ELOOP, f"{where}: a symbolic link or not a regular file;"
                                           " refusing to write through it")
    payload = data.encode() if isinstance(data, str) else bytes(data)
    flags = (os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
             | getattr(os, "O_CLOEXEC", 0))
    while True:
        tmp = f".{name}.{secrets.token_hex(6)}.tmp"
        try:
            fd = os.open(tmp, flags, 0o644, dir_fd=dfd)
            break
        except FileExistsError:
            continue
    try:
        try:
            view = memoryview(payload)
            while view:
                n = os.write(fd, view)
                view = view[n:]
            os.fsync(fd)
            os.fchmod(fd, 0o644)
        finally:
            os.close(fd)
        os.replace(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)
    except BaseException as e:
        try:
            os.unlink(tmp, dir_fd=dfd)
        except OSError:
            pass
        if isinstance(e, OSError) and e.filename is None and e.errno is not None:
            # a full disk fails os.write, which names no file: name the one being written
            raise OSError(e.errno, e.strerror, str(where)) from e
        raise


def atomic_write(path: Path, data: str | bytes) -> None:
    """Write to a temporary file in the same folder, fsync, then rename over ``path``.

    The folder is opened without following a link (and made with ``os.mkdir`` when
    missing); a symlinked folder or file is refused with UnsafePathError; the temporary
    file never outlives an error."""
    path = Path(path)
    dfd = _open_parent(path)
    try:
        _atomic_write_at(dfd, path.name, data, path)
    finally:
        os.close(dfd)


def _read_capped(dfd: int | None, name: str | Path, cap: int, where: str | Path) -> bytes:
    """The bytes of a regular file, opened without following a link (nor blocking on a
    FIFO); UnsafePathError for a link or special file, ValueError past ``cap`` bytes."""
    kw = {} if dfd is None else {"dir_fd": dfd}
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(name, flags, **kw)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise UnsafePathError(e.errno, f"{where}: a symbolic link; not read") from None
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise UnsafePathError(errno.EINVAL, f"{where}: not a regular file; not read")
        if st.st_size > cap:
            raise ValueError(f"{where}: {st.st_size} bytes, over the {cap}-byte limit")
        chunks, total = [], 0
        while True:
            b = os.read(fd, min(1 << 20, cap + 1 - total))
            if not b:
                break
            chunks.append(b)
            total += len(b)
            if total > cap:
                raise ValueError(f"{where}: over the {cap}-byte limit")
        return b"".join(chunks)
    finally:
        os.close(fd)


def append_jsonl(path: Path, obj: dict[str, Any]) -> None:
    """Append one JSON line (a single write call, so concurrent appenders do not interleave).

    The file is opened without following a link; a torn last line (a writer that died or
    ran out of space) is ended first, so that this line stays whole."""
    path = Path(path)
    line = (json.dumps(obj, default=str) + "\n").encode()
    dfd = _open_parent(path)
    try:
        flags = (os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW
                 | getattr(os, "O_CLOEXEC", 0))
        try:
            fd = os.open(path.name, flags, 0o644, dir_fd=dfd)
        except OSError as e:
            if e.errno == errno.ELOOP:
                raise UnsafePathError(e.errno, f"{path}: a symbolic link; refusing to"
                                               " append through it") from None
            raise
    finally:
        os.close(dfd)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise UnsafePathError(errno.EINVAL, f"{path}: not a regular file")
        if st.st_size and _last_byte(path) not in (b"\n", b""):
            line = b"\n" + line
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)


def _last_byte(path: Path) -> bytes:
    try:
        with open(path, "rb") as fh:
            fh.seek(-1, os.SEEK_END)
            return fh.read(1)
    except OSError:
        return b""


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Read a JSON-lines file, skipping a torn last line left by a killed writer and any
    line that is not a JSON object."""
    path = Path(path)
    try:
        raw = _read_capped(None, path, 1 << 30, path)
    except (OSError, ValueError):
        return []
    out = []
    for line in raw.decode("utf-8", "replace").splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(obj, dict):
            out.append(obj)
    return out


# -- validating records ---------------------------------------------------------------------


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def failed_record(reason: str) -> dict[str, Any]:
    """A failed evaluation record (the shape ``hyarch.evaluate.failed`` writes)."""
    return {"status": "failed", "reason": reason, "parameters": {}, "param_rel_error": {},
            "metrics": {}, "reduced": {}, "regularizers": {}, "closure_share": None,
            "n_neural_params": None, "seconds": 0.0}


_NUMBER_OR_NONE = ("closure_share", "n_neural_params", "seconds", "wall_seconds")
_NUMBER_MAPS = ("parameters", "param_rel_error", "regularizers")


def result_problem(result: Any) -> str | None:
    """Why an evaluation record (metrics.json) cannot be used, or None when it can."""
    if not isinstance(result, dict):
        return f"not a JSON object but {type(result).__name__}"
    status = result.get("status")
    if status not in ("ok", "failed"):
        return f"status {str(status)[:40]!r} is neither 'ok' nor 'failed'"
    reason = result.get("reason")
    if reason is not None and not isinstance(reason, str):
        return f"reason is {type(reason).__name__}, not text"
    for k in _NUMBER_OR_NONE:
        v = result.get(k)
        if v is not None and not _is_number(v):
            return f"{k} is {type(v).__name__} {str(v)[:20]!r}, not a number"
    for k in _NUMBER_MAPS:
        m = result.get(k)
        if m is None:
            continue
        if not isinstance(m, dict):
            return f"{k} is {type(m).__name__}, not an object"
        for name, v in m.items():
            if v is not None and not _is_number(v):
                return f"{k}.{name} is {type(v).__name__} {str(v)[:20]!r}, not a number"
    metrics = result.get("metrics")
    for k in ("metrics", "reduced"):
        tree = result.get(k)
        if tree is None:
            continue
        if not isinstance(tree, dict):
            return f"{k} is {type(tree).__name__}, not an object"
        bad = _bad_leaf(tree, k)
        if bad:
            return bad
    if status == "ok":
        val = (metrics or {}).get("val")
        if not isinstance(val, dict) or not _is_number(val.get("nmse")):
            return "status 'ok' without a numeric metrics.val.nmse"
    return None


def _bad_leaf(tree: dict[str, Any], where: str, depth: int = 0) -> str | None:
    """The first leaf of a metrics tree that is not a number, a flag or null."""
    if depth > 4:
        return f"{where}: nested too deep"
    for name, v in tree.items():
        if isinstance(v, dict):
            bad = _bad_leaf(v, f"{where}.{name}", depth + 1)
            if bad:
                return bad
        elif isinstance(v, list):  # per-trajectory values and the like
            if not all(x is None or isinstance(x, (int, float)) for x in v):
                return f"{where}.{name} is a list with something other than numbers"
        elif v is not None and not isinstance(v, (int, float)):
            return f"{where}.{name} is {type(v).__name__} {str(v)[:20]!r}, not a number"
    return None


_META_TYPES: dict[str, tuple[type, ...]] = {
    "proposer": (str,), "round": (int,), "trial": (int,), "attempt": (int,),
    "code_hash": (str,), "worker": (str,), "status": (str,), "repair_of": (str,),
    "created": (int, float), "finished": (int, float),
}


def meta_problem(meta: Any) -> str | None:
    """Why a meta.json cannot be used, or None when it can."""
    if not isinstance(meta, dict):
        return f"not a JSON object but {type(meta).__name__}"
    for k, types in _META_TYPES.items():
        v = meta.get(k)
        if v is not None and (not isinstance(v, types) or isinstance(v, bool)):
            return f"{k} is {type(v).__name__} {str(v)[:20]!r}"
    parents = meta.get("parents")
    if parents is not None and not (isinstance(parents, list)
                                    and all(isinstance(p, str) for p in parents)):
        return "parents is not a list of ids"
    return None


def _clean_meta(meta: Any, cid: str) -> dict[str, Any]:
    """The well-typed part of a meta.json."""
    if not isinstance(meta, dict):
        return {"id": cid}
    out = {}
    for k, v in meta.items():
        types = _META_TYPES.get(k)
        if types is not None and v is not None and (not isinstance(v, types)
                                                    or isinstance(v, bool)):
            continue
        if k == "parents" and not (isinstance(v, list) and all(isinstance(p, str) for p in v)):
            continue
        out[k] = v
    out["id"] = cid
    return out


def _loads(raw: bytes) -> Any:
    def no_constant(name):  # NaN/Infinity are allowed (a diverged fit); nothing else odd
        return {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}[name]

    return json.loads(raw.decode("utf-8"), parse_constant=no_constant)


@dataclass(frozen=True)
class CandidateRecord:
    """One candidate as stored: code, provenance and (once finished) its evaluation."""

    id: str
    path: Path
    source: str
    meta: dict[str, Any]
    result: dict[str, Any] | None

    @property
    def finished(self) -> bool:
        return self.result is not None

    @property
    def status(self) -> str:
        return str(self.result.get("status")) if self.result else "pending"

    @property
    def proposer(self) -> str:
        p = self.meta.get("proposer")
        return p if isinstance(p, str) else "?"

    @property
    def parents(self) -> list[str]:
        p = self.meta.get("parents")
        return [x for x in p if isinstance(x, str)] if isinstance(p, list) else []


def valid_candidate_id(cid: str) -> bool:
    return isinstance(cid, str) and bool(_CID.match(cid)) and cid not in (".", "..")


class Run:
    """A run folder. Cheap to construct; every read goes to disk, so several processes
    (workers, a reviewer) can share one run."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    # -- layout ---------------------------------------------------------------------
    @property
    def candidates_dir(self) -> Path:
        return self.path / "candidates"

    @property
    def journal_path(self) -> Path:
        return self.path / "study.journal"

    @property
    def llm_log(self) -> Path:
        return self.path / "llm.jsonl"

    @property
    def reviews_path(self) -> Path:
        return self.path / "reviews.jsonl"

    def exists(self) -> bool:
        return (self.path / "run.yaml").is_file()

    # -- configuration ----------------------------------------------------------------
    def write_config(self, config: dict[str, Any]) -> None:
        atomic_write(self.path / "run.yaml", yaml.safe_dump(config, sort_keys=False))

    def config(self) -> dict[str, Any]:
        p = self.path / "run.yaml"
        if not p.is_file():
            raise FileNotFoundError(f"{self.path}: not a hyarch run (no run.yaml)")
        return yaml.safe_load(p.read_text()) or {}

    def elapsed(self) -> float:
        """Seconds the run's search sessions have taken so far (0 for a new run)."""
        try:
            value = json.loads((self.path / "elapsed.json").read_text()).get("seconds")
        except (OSError, ValueError, AttributeError):
            return 0.0
        return float(value) if isinstance(value, (int, float)) and value >= 0 else 0.0

    def write_elapsed(self, seconds: float) -> None:
        """Record the search's total time, so that a time budget survives --resume."""
        if self.exists():
            atomic_write(self.path / "elapsed.json", json.dumps({"seconds": round(seconds, 3)}))

    # -- candidates -------------------------------------------------------------------
    def candidate_dir(self, cid: str) -> Path:
        """The candidate's folder. Raises ValueError for an id that is not a plain name and
        UnsafePathError when the folder (or ``candidates/``) exists as a link or as
        something other than a directory: nothing is ever written through it."""
        if not valid_candidate_id(cid):
            raise ValueError(f"bad candidate id {cid!r}")
        for p in (self.candidates_dir, self.candidates_dir / cid):
            try:
                st = os.lstat(p)
            except FileNotFoundError:
                break
            if not stat.S_ISDIR(st.st_mode):
                raise UnsafePathError(errno.ELOOP, f"{p}: a symbolic link or not a directory;"
                                                   " hyarch never writes through it")
        return self.candidates_dir / cid

    def _candidate_fd(self, cid: str, *, create: bool) -> int:
        """A directory fd for the candidate's folder, reached from the run folder one
        component at a time without following links (made with ``os.mkdir``)."""
        d = self.candidate_dir(cid)
        if create:
            self.path.mkdir(parents=True, exist_ok=True)
        root = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY | getattr(os, "O_CLOEXEC", 0))
        try:
            cands = _open_subdir(root, "candidates", self.candidates_dir, create=create)
        finally:
            os.close(root)
        try:
            return _open_subdir(cands, cid, d, create=create)
        finally:
            os.close(cands)

    def write_file(self, cid: str, name: str, data: str | bytes) -> None:
        """Write one file of the candidate's folder atomically, link-safe."""
        dfd = self._candidate_fd(cid, create=True)
        try:
            _atomic_write_at(dfd, name, data, self.candidates_dir / cid / name)
        finally:
            os.close(dfd)

    def make_candidate_dir(self, cid: str) -> Path:
        """Create the candidate's folder (a real directory of ours) and return it."""
        os.close(self._candidate_fd(cid, create=True))
        return self.candidates_dir / cid

    def candidate_ids(self) -> list[str]:
        """Ids of the candidate folders that hold a meta.json; links are not candidates."""
        try:
            names = os.listdir(self.candidates_dir)
        except (FileNotFoundError, NotADirectoryError):
            return []
        if os.path.islink(self.candidates_dir):
            return []
        out = []
        for name in names:
            if not valid_candidate_id(name):
                continue
            d = self.candidates_dir / name
            try:
                if stat.S_ISDIR(os.lstat(d).st_mode) and os.path.lexists(d / "meta.json"):
                    out.append(name)
            except OSError:
                continue
        return sorted(out)

    def write_proposal(self, cid: str, source: str | None, meta: dict[str, Any],
                       extras: dict[str, str | bytes] | None = None) -> Path:
        """The candidate's code and provenance, before it is evaluated."""
        dfd = self._candidate_fd(cid, create=True)
        d = self.candidates_dir / cid
        try:
            if source is not None:
                _atomic_write_at(dfd, "model.py", source, d / "model.py")
            for name, data in (extras or {}).items():
                _atomic_write_at(dfd, name, data, d / name)
            _atomic_write_at(dfd, "meta.json",
                             json.dumps({**meta, "id": cid}, indent=2, default=str),
                             d / "meta.json")
        finally:
            os.close(dfd)
        return d

    def _read_record(self, dfd: int, name: str, cid: str, cap: int = MAX_RECORD_BYTES
                     ) -> tuple[Any, str | None]:
        """(parsed JSON, None), or (None, why it could not be read). FileNotFoundError
        when there is no such file."""
        where = f"{cid}/{name}"
        try:
            raw = _read_capped(dfd, name, cap, where)
        except FileNotFoundError:
            raise
        except (OSError, ValueError) as e:
            return None, f"{name}: {e}"
        try:
            return _loads(raw), None
        except (ValueError, UnicodeDecodeError, RecursionError, KeyError) as e:
            return None, f"{name} is not valid JSON ({str(e)[:80]})"

    def update_meta(self, cid: str, **fields: Any) -> None:
        dfd = self._candidate_fd(cid, create=True)
        try:
            try:
                meta, problem = self._read_record(dfd, "meta.json", cid)
            except FileNotFoundError:
                meta, problem = None, None
            meta = _clean_meta(meta, cid)
            if problem:
                meta.setdefault("invalid", problem)
            meta.update(fields)
            meta["id"] = cid
            _atomic_write_at(dfd, "meta.json", json.dumps(meta, indent=2, default=str),
                             self.candidates_dir / cid / "meta.json")
        finally:
            os.close(dfd)

    def write_result(self, cid: str, result: dict[str, Any]) -> None:
        """The evaluation: written last and atomically, it marks the candidate finished."""
        self.write_file(cid, "metrics.json", json.dumps(result, indent=2, default=str))

    def write_predictions(self, cid: str, arrays: dict[str, Any]) -> None:
        """What the candidate predicted on each split (``<split>.full`` and
        ``<split>.reduced``): reports and review plot these and never run its code."""
        import io

        import numpy as np

        buf = io.BytesIO()
        np.savez_compressed(buf, **{k.replace(".", "__"): np.asarray(v, dtype=np.float64)
                                    for k, v in arrays.items()})
        self.write_file(cid, "predictions.npz", buf.getvalue())

    def read_predictions(self, cid: str) -> dict[str, Any]:
        """The arrays ``write_predictions`` stored ({} when there are none, or when the
        file is a link, too large or not a valid archive)."""
        import io

        import numpy as np

        try:
            dfd = self._candidate_fd(cid, create=False)
        except (OSError, ValueError):
            return {}
        try:
            raw = _read_capped(dfd, "predictions.npz", MAX_PREDICTIONS_BYTES,
                               f"{cid}/predictions.npz")
        except (OSError, ValueError):
            return {}
        finally:
            os.close(dfd)
        try:
            with np.load(io.BytesIO(raw), allow_pickle=False) as z:
                return {k.replace("__", "."): z[k] for k in z.files}
        except Exception:  # noqa: BLE001 - a damaged archive is no predictions
            return {}

    def read_candidate(self, cid: str) -> CandidateRecord:
        """The candidate as stored. Never raises for damaged records: a meta.json or
        metrics.json that is a link, too large, not JSON or of the wrong types makes the
        candidate a failed record whose reason says so. KeyError: no such candidate."""
        d = self.candidates_dir / cid
        try:
            dfd = self._candidate_fd(cid, create=False)
        except (FileNotFoundError, NotADirectoryError, ValueError):
            dfd = None
        except UnsafePathError as e:
            return CandidateRecord(cid, d, "", {"id": cid}, failed_record(
                f"invalid candidate folder: {e.strerror or e}"))
        try:
            if dfd is None:
                raise FileNotFoundError
            meta_raw, meta_err = self._read_record(dfd, "meta.json", cid)
        except FileNotFoundError:
            if dfd is not None:
                os.close(dfd)
            known = self.candidate_ids()
            raise KeyError(f"no candidate {cid!r} in {self.path}"
                           f" (candidates: {', '.join(known[:10]) or 'none'}"
                           f"{' ...' if len(known) > 10 else ''})") from None
        try:
            problems = []
            if meta_err is None:
                meta_err = meta_problem(meta_raw)
                meta_err = f"meta.json: {meta_err}" if meta_err else None
            if meta_err:
                problems.append(meta_err)
            meta = _clean_meta(meta_raw, cid)
            src = ""
            try:
                raw = _read_capped(dfd, "model.py", MAX_SOURCE_BYTES, f"{cid}/model.py")
                src = raw.decode("utf-8", "replace")
            except FileNotFoundError:
                pass
            except (OSError, ValueError) as e:
                problems.append(f"model.py: {e}")
            res = None
            try:
                res_raw, res_err = self._read_record(dfd, "metrics.json", cid)
            except FileNotFoundError:
                res_raw, res_err = None, None
            else:
                if res_err is None:
                    why = result_problem(res_raw)
                    res_err = f"metrics.json: {why}" if why else None
                if res_err is None:
                    res = res_raw
                else:
                    problems.append(res_err)
        finally:
            os.close(dfd)
        if problems:
            res = failed_record("invalid candidate record: " + "; ".join(problems))
            res["invalid_record"] = True
        return CandidateRecord(cid, d, src, meta, res)

    def candidates(self) -> Iterator[CandidateRecord]:
        for cid in self.candidate_ids():
            try:
                yield self.read_candidate(cid)
            except KeyError:  # removed meanwhile (a released duplicate claim)
                continue

    def finished(self) -> list[CandidateRecord]:
        return [c for c in self.candidates() if c.finished]

    def sweep_temp_files(self, max_age_s: float = TEMP_MAX_AGE_S) -> list[Path]:
        """Remove ``.<name>.*.tmp`` files that killed writers left in the run folder and the
        candidate folders (only old ones: a live writer's is seconds old). Returns them."""
        now = time.time()
        removed = []
        dirs = [self.path] + [self.candidates_dir / c for c in self.candidate_ids()]
        for d in dirs:
            try:
                dfd = os.open(d, _DIR_FLAGS)
            except OSError:
                continue
            try:
                for name in os.listdir(dfd):
                    if not (name.startswith(".") and name.endswith(".tmp")):
                        continue
                    try:
                        st = os.lstat(name, dir_fd=dfd)
                        if stat.S_ISREG(st.st_mode) and now - st.st_mtime > max_age_s:
                            os.unlink(name, dir_fd=dfd)
                            removed.append(d / name)
                    except OSError:
                        continue
            finally:
                os.close(dfd)
        return removed

    # -- logs -------------------------------------------------------------------------
    def log_llm(self, entry: dict[str, Any]) -> None:
        append_jsonl(self.llm_log, {"time": time.time(), **entry})

    def add_review(self, entry: dict[str, Any]) -> None:
        append_jsonl(self.reviews_path, {"time": time.time(), **entry})

    def reviews(self) -> list[dict[str, Any]]:
        return read_jsonl(self.reviews_path)

    def verdicts(self) -> dict[str, dict[str, Any]]:
        """The latest verdict and note per candidate id (a later review wins)."""
        out: dict[str, dict[str, Any]] = {}
        for r in self.reviews():
            cid = r.get("candidate")
            if cid and isinstance(cid, str):
                cur = out.setdefault(cid, {})
                if r.get("verdict"):
                    cur["verdict"] = str(r["verdict"])
                if r.get("note"):
                    cur.setdefault("notes", []).append(str(r["note"]))
        return out

    def general_notes(self) -> list[str]:
        return [str(r["note"]) for r in self.reviews()
                if not r.get("candidate") and r.get("note")]


def load_run(path: str | Path) -> Run:
    run = Run(path)
    if not run.exists():
        raise FileNotFoundError(f"{path}: not a hyarch run (no run.yaml)")
    return run
