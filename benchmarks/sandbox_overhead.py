"""What isolation costs: wall seconds per sandboxed evaluation with every layer on, and
with every layer off (a plain child process with resource limits), side by side.

    python benchmarks/sandbox_overhead.py [--space damped_pendulum] [--repeats 3]
        [FILE ...]

Runs each candidate file (default: the pendulum's prior, true structure and APHYNITY
hybrid) alternately in both modes, so that machine load hits both alike, and prints a
table of median wall seconds and the overhead in percent, then the same for the median
candidate. "Off" is the child as it ran before the sandbox had OS isolation (process
start, imports, training, predictions); "on" adds bubblewrap's namespaces, Landlock and
seccomp. The training itself is identical (same seeds), so the difference is isolation.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OFF = {"HYARCH_SANDBOX_NO_BWRAP": "1", "HYARCH_SANDBOX_NO_LANDLOCK": "1",
       "HYARCH_SANDBOX_NO_SECCOMP": "1"}


def _set_mode(on: bool) -> str:
    from hyarch.sandbox import isolation

    for k, v in OFF.items():
        if on:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    isolation.detect.cache_clear()
    return isolation.detect().describe()


def _launches(n: int) -> None:
    """Process start + torch import (+ Landlock and seccomp) with and without bubblewrap."""
    import subprocess

    from hyarch.sandbox import isolation, runner

    isolation.detect.cache_clear()
    caps = isolation.detect()
    pkg = runner.package_dir()
    lock = (f"import sys; sys.path.insert(0, {str(Path(pkg).parent)!r});"
            "from hyarch.sandbox import isolation as i;"
            f"i.apply_landlock({caps.landlock_abi}, i.read_roots({pkg!r}) + ['/dev/null'], ['/tmp'])"
            if caps.landlock_abi else "pass")
    code = f"import torch; {lock}; from hyarch.sandbox import isolation as i; i.apply_seccomp()"
    code = (f"import sys; sys.path.insert(0, {str(Path(pkg).parent)!r}); " + code)
    plain = [sys.executable, "-I", "-c", code]
    boxed = (isolation.bwrap_command(caps.bwrap, pkg, 256, False) + ["--"] + plain
             if caps.bwrap else None)
    t: dict[str, list[float]] = {"plain": [], "bwrap": []}
    for r in range(n):
        for kind in (("plain", "bwrap") if r % 2 == 0 else ("bwrap", "plain")):
            if kind == "bwrap" and boxed is None:
                continue
            t0 = time.perf_counter()
            subprocess.run(plain if kind == "plain" else boxed, check=True)
            t[kind].append(time.perf_counter() - t0)
    p = statistics.median(t["plain"])
    line = f"launch + import torch + Landlock + seccomp ({n} each): plain {p:.3f} s"
    if t["bwrap"]:
        b = statistics.median(t["bwrap"])
        line += f", in bubblewrap {b:.3f} s: namespaces cost {b - p:+.3f} s"
    print(line, flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("files", nargs="*")
    ap.add_argument("--space", default="damped_pendulum")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--startup", type=int, default=10, metavar="N",
                    help="also time N contract checks (start, isolate, build the model, one"
                         " derivative; no training) in each mode: the fixed cost of isolation")
    ap.add_argument("--launch", type=int, default=20, metavar="N",
                    help="also time N launches of `python -c 'import torch; <lock down>'`"
                         " with and without bubblewrap: isolation's own cost, free of"
                         " training noise")
    args = ap.parse_args(argv)
    if args.launch:
        _launches(args.launch)
    from hyarch.sandbox import runner
    from hyarch.spaces.loader import load_space

    runner._NOTICE_SHOWN = True  # the "off" mode is deliberate here
    space = load_space(args.space)
    d = ROOT / "search_spaces" / "damped_pendulum"
    files = [Path(f) for f in args.files] or [d / "prior.py", d / "friction.py", d / "aphynity.py"]
    print(f"space {space.name}; {args.repeats} repeats; load {os.getloadavg()[0]:.1f}")
    print(f"on:  {_set_mode(True)}")
    print(f"off: {_set_mode(False)}")
    rows = []
    if not args.repeats:
        files = []
    if args.startup:
        src = files[0].read_text()
        t: dict[bool, list[float]] = {True: [], False: []}
        for r in range(args.startup):
            for on in ((True, False) if r % 2 == 0 else (False, True)):
                _set_mode(on)
                t0 = time.perf_counter()
                res = runner.run_candidate(space, src, check_only=True)
                t[on].append(time.perf_counter() - t0)
                assert res.result["status"] == "ok", res.result["reason"]
        on, off = statistics.median(t[True]), statistics.median(t[False])
        print(f"contract check only ({args.startup} each): off {off:.3f} s, on {on:.3f} s,"
              f" isolation costs {on - off:+.3f} s")
    for f in files:
        src = f.read_text()
        times: dict[bool, list[float]] = {True: [], False: []}
        status = set()
        for r in range(args.repeats):
            for on in ((True, False) if r % 2 == 0 else (False, True)):
                _set_mode(on)
                t0 = time.perf_counter()
                res = runner.run_candidate(space, src, filename=str(f))
                times[on].append(time.perf_counter() - t0)
                status.add(res.result["status"])
        on, off = statistics.median(times[True]), statistics.median(times[False])
        rows.append((f.name, "/".join(sorted(status)), off, on))
    _set_mode(True)
    if not rows:
        return 0
    print()
    print(f"{'candidate':<16}{'status':>8}{'off (s)':>10}{'on (s)':>10}{'overhead':>10}")
    for name, st, off, on in rows:
        print(f"{name:<16}{st:>8}{off:>10.2f}{on:>10.2f}{100 * (on - off) / off:>9.1f}%")
    moff = statistics.median(r[2] for r in rows)
    mon = statistics.median(r[3] for r in rows)
    print(f"{'median':<16}{'':>8}{moff:>10.2f}{mon:>10.2f}{100 * (mon - moff) / moff:>9.1f}%")
    print(f"load at the end {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
