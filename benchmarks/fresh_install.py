"""A newcomer's first hour, end to end: README.md's two commands and the docs/spaces.md
walk-through, in a fresh clone and a fresh virtual environment.

    python benchmarks/fresh_install.py [--workdir DIR] [--search-budget N] [--quick]
        [--tests PYTEST_ARGS] [--json]

The commands are read from the documents, not copied here, so that a README that drifts from
what works fails this script:
1. README's first command (install, then a search on the built-in pendulum);
2. docs/spaces.md's walk-through: ``prior.py`` and ``tank.yaml`` from its code blocks, a
   ``tank.csv`` that this script simulates (Torricelli's drain plus a small linear leak, six
   experiments, as the page describes), then every command of its bash block;
3. README's second command (install the test extra, run the tests).

Each runs in a fresh ``git clone`` of this repository's HEAD (what is committed, nothing
else) and a fresh venv made with ``python -m venv`` (no system site-packages). Options make
the expensive parts smaller, and the table says what was changed: ``--search-budget N``
replaces every ``--budget`` of a search, ``--quick`` adds ``--quick`` to searches and
baselines, and ``--tests`` replaces the test command's ``python -m pytest -q`` arguments
(for CI, which runs the whole suite once already). Prints one row per command: exit code,
seconds and its last line; exits 1 when any command failed.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def blocks(markdown: str, lang: str) -> list[str]:
    """The fenced code blocks of ``markdown`` whose info string is ``lang`` ('' for none)."""
    out, cur, inside = [], [], None
    for line in markdown.splitlines():
        m = re.match(r"^```(\w*)\s*$", line)
        if m and inside is None:
            inside, cur = m.group(1), []
        elif line.startswith("```") and inside is not None:
            if inside == lang:
                out.append("\n".join(cur))
            inside = None
        elif inside is not None:
            cur.append(line)
    return out


def readme_commands(readme: str) -> tuple[str, str]:
    """README's two commands: the first two bash blocks after 'Two commands'."""
    tail = readme[readme.index("Two commands"):]
    first, second = (b.strip() for b in blocks(tail, "bash")[:2])
    return first, second


def walkthrough(doc: str) -> tuple[str, str, list[str]]:
    """docs/spaces.md's walk-through: the prior's code, the space's YAML and its commands
    (comments dropped)."""
    section = doc[doc.index("## Walk-through"):doc.index("\n## ", doc.index("## Walk-through") + 5)]
    (prior,) = blocks(section, "python")[:1]
    (space,) = blocks(section, "yaml")[:1]
    cmds = [line.split("#", 1)[0].strip() for line in blocks(section, "bash")[0].splitlines()]
    return prior + "\n", space + "\n", [c for c in cmds if c]


def tank_csv(path: Path, seed: int = 0) -> None:
    """Six experiments of the walk-through's tank: dh/dt = pump/A - c sqrt(h) - leak h,
    A = 0.5 m^2, sampled every 0.5 s for 15 s, 1% noise (the leak is what the prior lacks)."""
    import random

    rng = random.Random(seed)
    a, c, leak, dt, sub = 0.5, 0.3, 0.05, 0.5, 50
    rows = ["experiment,time,level,pump"]
    for k in range(6):
        h, pump = 0.6 + 0.2 * k, 0.05 * (k % 3)
        for i in range(30):
            noisy = h * (1 + 0.01 * rng.gauss(0, 1))
            rows.append(f"exp{k},{i * dt:.1f},{noisy:.5f},{pump}")
            for _ in range(sub):  # Euler substeps, fine enough for 1% noise
                h += dt / sub * (pump / a - c * math.sqrt(max(h, 0.0)) - leak * h)
    path.write_text("\n".join(rows) + "\n")


def adapt(cmd: str, budget: int | None, quick: bool, tests: str | None) -> str:
    if budget is not None:
        cmd = re.sub(r"--budget \d+", f"--budget {budget}", cmd)
    if quick:
        cmd = re.sub(r"(hyarch (?:search|baselines) \S+)(?! --quick)", r"\1 --quick", cmd)
    if tests is not None:
        cmd = cmd.replace("python -m pytest -q", f"python -m pytest -q {tests}")
    return cmd


def run(cmd: str, cwd: Path, env: dict[str, str], log: Path) -> dict:
    t0 = time.perf_counter()
    with log.open("ab") as f:
        f.write(f"\n$ {cmd}\n".encode())
        f.flush()
        p = subprocess.run(["bash", "-c", cmd], cwd=cwd, env=env, stdout=f,
                           stderr=subprocess.STDOUT)
    out = log.read_text(errors="replace").rsplit(f"\n$ {cmd}\n", 1)[-1]
    lines = [x.strip(" │┃") for x in out.splitlines() if re.search(r"[A-Za-z]{3}", x)]
    return {"command": cmd, "cwd": str(cwd), "rc": p.returncode,
            "seconds": round(time.perf_counter() - t0, 1), "last": lines[-1] if lines else ""}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", help="where the clone and venv go (default: a new temp dir)")
    ap.add_argument("--search-budget", type=int, help="replace every search's --budget")
    ap.add_argument("--quick", action="store_true", help="add --quick to searches and baselines")
    ap.add_argument("--tests", help="arguments for the test command's pytest (default: all)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="hyarch-fresh-"))
    work.mkdir(parents=True, exist_ok=True)
    clone, venv, log = work / "hyarch", work / "venv", work / "log.txt"
    subprocess.run(["git", "clone", "-q", "--no-hardlinks", str(REPO), str(clone)], check=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env["PATH"] = f"{venv / 'bin'}:{env.get('PATH', '')}"
    env["VIRTUAL_ENV"] = str(venv)
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"

    first, second = readme_commands((clone / "README.md").read_text())
    prior, space, cmds = walkthrough((clone / "docs" / "spaces.md").read_text())
    tank = work / "tank"
    tank.mkdir(exist_ok=True)
    (tank / "prior.py").write_text(prior)
    (tank / "tank.yaml").write_text(space)
    tank_csv(tank / "tank.csv")

    steps = [("README: install and search", first, clone)]
    steps += [(f"docs/spaces.md: {c.split()[1]}", c, tank) for c in cmds]
    steps += [("README: install and test", second, clone)]
    rows = []
    for label, cmd, cwd in steps:
        row = {"step": label, **run(adapt(cmd, args.search_budget, args.quick, args.tests),
                                    cwd, env, log)}
        row["as_written"] = row["command"] == cmd
        rows.append(row)
        if not args.json:
            print(f"{label:<36} rc {row['rc']:<3} {row['seconds']:>7.1f} s  "
                  f"{'' if row['as_written'] else '(adapted) '}{row['last'][:100]}", flush=True)
    if args.json:
        print(json.dumps({"workdir": str(work), "log": str(log), "steps": rows}, indent=2))
    else:
        print(f"\nlog: {log}")
        changed = [r["command"] for r in rows if not r["as_written"]]
        if changed:
            print("adapted commands:\n  " + "\n  ".join(shlex.quote(c) for c in changed))
    return 0 if all(r["rc"] == 0 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
