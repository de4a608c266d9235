"""A search run on disk: the folder layout, atomic writes, and reading it back.

```
runs/<name>/
  run.yaml                 resolved configuration, versions, seed
  study.journal            Optuna storage (default)
  candidates/<id>/         model.py, meta.json, metrics.json, weights.pt, fit.png,
                           prompt.json and reply.txt where an LLM wrote it
  llm.jsonl                every LLM call
  reviews.jsonl            what the reviewer decided and wrote
  report.html
```

``metrics.json`` is written last, atomically: a candidate folder without it is unfinished
(killed mid-evaluation) and is evaluated again on resume.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml


def atomic_write(path: Path, data: str | bytes) -> None:
    """Write to a temporary file in the same folder, fsync, then rename over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = "wb" if isinstance(data, bytes) else "w"
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode) as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes it private; run files are for sharing
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def append_jsonl(path: Path, obj: dict[str, Any]) -> None:
    """Append one JSON line (a single write call, so concurrent appenders do not interleave)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps(obj, default=str) + "\n"
    with open(path, "a") as fh:
        fh.write(line)
        fh.flush()
        os.fsync(fh.fileno())


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Read a JSON-lines file, skipping a torn last line left by a killed writer."""
    if not path.is_file():
        return []
    out = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


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
        return self.result["status"] if self.result else "pending"

    @property
    def proposer(self) -> str:
        return self.meta.get("proposer", "?")

    @property
    def parents(self) -> list[str]:
        return list(self.meta.get("parents", []))


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

    # -- candidates -------------------------------------------------------------------
    def candidate_dir(self, cid: str) -> Path:
        return self.candidates_dir / cid

    def candidate_ids(self) -> list[str]:
        if not self.candidates_dir.is_dir():
            return []
        return sorted(p.name for p in self.candidates_dir.iterdir()
                      if p.is_dir() and (p / "meta.json").is_file())

    def write_proposal(self, cid: str, source: str | None, meta: dict[str, Any],
                       extras: dict[str, str | bytes] | None = None) -> Path:
        """The candidate's code and provenance, before it is evaluated."""
        d = self.candidate_dir(cid)
        d.mkdir(parents=True, exist_ok=True)
        if source is not None:
            atomic_write(d / "model.py", source)
        for name, data in (extras or {}).items():
            atomic_write(d / name, data)
        atomic_write(d / "meta.json", json.dumps({**meta, "id": cid}, indent=2, default=str))
        return d

    def update_meta(self, cid: str, **fields: Any) -> None:
        p = self.candidate_dir(cid) / "meta.json"
        meta = json.loads(p.read_text()) if p.is_file() else {"id": cid}
        meta.update(fields)
        atomic_write(p, json.dumps(meta, indent=2, default=str))

    def write_result(self, cid: str, result: dict[str, Any]) -> None:
        """The evaluation: written last and atomically, it marks the candidate finished."""
        atomic_write(self.candidate_dir(cid) / "metrics.json",
                     json.dumps(result, indent=2, default=str))

    def write_predictions(self, cid: str, arrays: dict[str, Any]) -> None:
        """What the candidate predicted on each split (``<split>.full`` and
        ``<split>.reduced``): reports and review plot these and never run its code."""
        import io

        import numpy as np

        buf = io.BytesIO()
        np.savez_compressed(buf, **{k.replace(".", "__"): np.asarray(v, dtype=np.float64)
                                    for k, v in arrays.items()})
        atomic_write(self.candidate_dir(cid) / "predictions.npz", buf.getvalue())

    def read_predictions(self, cid: str) -> dict[str, Any]:
        """The arrays ``write_predictions`` stored ({} when there are none)."""
        import numpy as np

        p = self.candidate_dir(cid) / "predictions.npz"
        if not p.is_file():
            return {}
        try:
            with np.load(p, allow_pickle=False) as z:
                return {k.replace("__", "."): z[k] for k in z.files}
        except (OSError, ValueError, KeyError):
            return {}

    def read_candidate(self, cid: str) -> CandidateRecord:
        d = self.candidate_dir(cid)
        if not (d / "meta.json").is_file():
            known = self.candidate_ids()
            raise KeyError(f"no candidate {cid!r} in {self.path}"
                           f" (candidates: {', '.join(known[:10]) or 'none'}"
                           f"{' ...' if len(known) > 10 else ''})")
        meta = json.loads((d / "meta.json").read_text())
        src = (d / "model.py").read_text() if (d / "model.py").is_file() else ""
        res = None
        if (d / "metrics.json").is_file():
            try:
                res = json.loads((d / "metrics.json").read_text())
            except json.JSONDecodeError:
                res = None
        return CandidateRecord(cid, d, src, meta, res)

    def candidates(self) -> Iterator[CandidateRecord]:
        for cid in self.candidate_ids():
            yield self.read_candidate(cid)

    def finished(self) -> list[CandidateRecord]:
        return [c for c in self.candidates() if c.finished]

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
            if cid:
                cur = out.setdefault(cid, {})
                if r.get("verdict"):
                    cur["verdict"] = r["verdict"]
                if r.get("note"):
                    cur.setdefault("notes", []).append(r["note"])
        return out

    def general_notes(self) -> list[str]:
        return [r["note"] for r in self.reviews() if not r.get("candidate") and r.get("note")]


def load_run(path: str | Path) -> Run:
    run = Run(path)
    if not run.exists():
        raise FileNotFoundError(f"{path}: not a hyarch run (no run.yaml)")
    return run
