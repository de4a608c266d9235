"""A tiny demo run shared by the review and report tests."""

from __future__ import annotations

import shutil

from hyarch.report.demo import make_demo_run
from hyarch.runs import Run


def demo_copy(factory, name: str) -> Run:
    """A fresh copy of one tiny demo run, trained once per test session (seconds)."""
    base = factory.getbasetemp() / "hyarch_demo_run"
    if not (base / "candidates" / "c0004" / "metrics.json").is_file():
        make_demo_run(base, None)
    dst = factory.mktemp(name) / "run"
    shutil.copytree(base, dst)
    return Run(dst)
