"""A newcomer's first hour in CI: README.md's two commands and the docs/spaces.md walk-through,
read from the documents and run in a fresh clone and a fresh venv (benchmarks/fresh_install.py),
with a small search budget and a few test files so that it takes minutes."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _script():
    spec = importlib.util.spec_from_file_location("fresh_install",
                                                  ROOT / "benchmarks" / "fresh_install.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_the_documents_commands_are_found():
    mod = _script()
    first, second = mod.readme_commands((ROOT / "README.md").read_text())
    assert first.startswith("pip install") and "hyarch search" in first
    assert second.endswith("python -m pytest -q")
    assert (ROOT / ".ci" / "run").read_text().rstrip().endswith(second)  # CI runs exactly it
    prior, space, cmds = mod.walkthrough((ROOT / "docs" / "spaces.md").read_text())
    assert "class Model(HybridModel)" in prior and "csv: {path: tank.csv" in space
    assert [c.split()[1] for c in cmds] == ["validate", "validate", "baselines", "baselines",
                                           "search"]
    assert mod.adapt("hyarch search tank.yaml --budget 24", 2, True, None) == \
        "hyarch search tank.yaml --quick --budget 2"


@pytest.mark.slow
def test_fresh_clone_and_venv_walkthrough(tmp_path):
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("needs a git checkout to clone")
    p = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "fresh_install.py"), "--workdir",
         str(tmp_path), "--search-budget", "2", "--quick", "--tests",
         "tests/test_spaces_loader.py", "--json"],
        capture_output=True, text=True, timeout=1800)
    out = json.loads(p.stdout)
    failed = [(s["command"], s["last"]) for s in out["steps"] if s["rc"] != 0]
    assert not failed, (failed, Path(out["log"]).read_text()[-4000:])
    assert p.returncode == 0
    steps = [s["step"] for s in out["steps"]]
    assert steps[0] == "README: install and search" and steps[-1] == "README: install and test"
    assert len(steps) == 7
    assert " passed" in out["steps"][-1]["last"]
    tank_runs = list((tmp_path / "tank" / "runs").iterdir())
    assert tank_runs and list((tank_runs[0] / "candidates").iterdir())
