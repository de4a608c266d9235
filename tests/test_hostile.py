"""The hostile corpus (tests/hostile/): every attack ends as a failed candidate with a reason
or as a harmless ok, and nothing escapes the sandbox (issue #12, "What it must show").

After the runs: no file outside the sandbox created or changed, no process left (the session
marker in the environment, each attack's marker in command lines), no byte on the loopback
listeners, the victim process alive, no canary secret in any result, stderr tail, run folder
or prompt. The canaries are shown to fire when the same attacks run without the sandbox.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from hyarch.sandbox.checks import CheckError, check_source
from hyarch.sandbox.runner import Limits, run_candidate
from tests.hostile.harness import Canaries, attacks, result_text, stray_files
from tests.search_fixtures import FRICTION, PRIOR, write_space

ROOT = Path(__file__).resolve().parents[1]
ATTACKS = {a.name: a for a in attacks()}
RUN = [a for a in ATTACKS.values() if a.static == "passes"]
# quick training: the attacks need a model that trains, not a good one
QUICK = {"stage_iters": 10, "final_iters": 10, "restarts": 1}


def _controls() -> dict[str, str]:
    prior = PRIOR.read_text()
    return {"control_friction": FRICTION.read_text(), "control_prior": prior}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    from hyarch.spaces.loader import load_space

    root = tmp_path_factory.mktemp("hostile")
    space_file = write_space(root)
    can = Canaries(root, space_file)
    with pytest.MonkeyPatch.context() as mp:
        can.start(list(ATTACKS))
        mp.setenv("OPENAI_API_KEY", can.api_key)
        mp.setenv("DATABASE_URL", can.db_url)
        mp.setenv("TZ", can.session + "0")  # passed to the child: every descendant carries it
        space = load_space(space_file)
        leftovers: dict[str, list[str]] = {}

        def one(name: str, source: str, timeout: float, memory_mb: int):
            res = run_candidate(space, source, filename=f"{name}.py", overrides=QUICK,
                                limits=Limits(timeout=timeout, memory_mb=memory_mb))
            leftovers[name] = can.wait_no_leftovers(can.marker(name), grace=1.0)
            return name, res

        jobs = [(a.name, can.source(a), a.timeout, a.memory_mb) for a in ATTACKS.values()]
        jobs += [(n, s, 60.0, 4096) for n, s in _controls().items()]
        # the slow ones first, so that two workers finish together
        jobs.sort(key=lambda j: -(j[2] < 60 or j[0].startswith(("huge", "proc_thread"))))
        with ThreadPoolExecutor(max_workers=2) as ex:
            results = dict(ex.map(lambda j: one(*j), jobs))
        state = {
            "leftovers": can.wait_no_leftovers(grace=3.0),
            "files": can.file_changes(),
            "network": can.network(),
            "victim": can.victim_alive(),
            "seconds": {n: round(r.seconds, 1) for n, r in results.items()},
            "stray": stray_files([can.session], [Path("/tmp"), ROOT, Path.cwd(), Path.home()]),
        }
        try:
            yield can, results, leftovers, state
        finally:
            can.stop()


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_static_checks_as_documented(name):
    """A file meant to evade the static checks does (so the OS layers are what it tests)."""
    a = ATTACKS[name]
    if a.static == "rejected":
        with pytest.raises(CheckError):
            check_source(a.template)
    else:
        check_source(a.template)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_attack_ends_failed_with_reason_or_harmless_ok(corpus, name):
    can, results, leftovers, _ = corpus
    a = ATTACKS[name]
    res = results[name]
    r = res.result
    assert r["status"] in ("ok", "failed")
    if r["status"] == "failed":
        assert isinstance(r["reason"], str) and r["reason"].strip(), r
    if a.expect != "any":
        assert r["status"] == a.expect, (a.route, r["reason"])
    out = result_text(res)
    assert "ESCAPED" not in out, out[:3000]
    assert not can.leaks(out), (can.leaks(out), out[:3000])
    assert not leftovers[name]
    assert not [f for f in _own(can, name, "files", corpus)], _own(can, name, "files", corpus)
    assert not [x for x in corpus[3]["network"] if can.marker(name).encode() in x[1]]
    assert len(res.stderr_tail) <= 4100
    assert "\x1b" not in out


def _own(can, name, key, corpus):
    return [f for f in corpus[3][key] if f"/canary/{name}/" in f or can.marker(name) in f]


@pytest.mark.slow
def test_nothing_escaped_the_whole_corpus(corpus):
    can, results, _, state = corpus
    assert state["files"] == []
    assert state["network"] == []
    assert state["victim"], "the victim process was killed"
    assert state["leftovers"] == []
    assert state["stray"] == []
    assert set(results) >= set(ATTACKS)
    print("seconds per attack:", sorted(state["seconds"].items(), key=lambda x: -x[1]))
    for name in ("control_friction", "control_prior"):
        assert results[name].result["status"] == "ok", results[name].result["reason"]


@pytest.mark.slow
def test_specific_outcomes(corpus):
    can, results, _, _ = corpus
    reason = {n: (r.result["reason"] or "") for n, r in results.items()}
    assert "timed out after 6 s" in reason["hang"]
    assert "timed out after 6 s" in reason["hang_ignore_signals"]
    assert "timed out after 8 s" in reason["proc_grandchild"]
    assert "memory" in reason["memory_exhaustion"].lower()
    assert len(reason["huge_exception"]) < 5000
    assert results["huge_stderr"].result["status"] == "ok"
    assert "[/oops]" in reason["rich_markup"] and "\x1b" not in reason["rich_markup"]
    # forged scores: the parent scores the predictions it received, nothing else
    prior = results["control_prior"].result["metrics"]["val"]["nmse"]
    friction = results["control_friction"].result["metrics"]["val"]["nmse"]
    assert prior > 10 * friction
    for name in ("forge_monkeypatch", "forge_result_fd_arrays"):
        r = results[name].result
        if name == "forge_result_fd_arrays" and r["status"] == "failed":
            assert "no predictions" in r["reason"]  # it forged too few splits
            continue
        assert r["status"] == "ok" and "score" not in r
        assert r["metrics"]["val"]["nmse"] > 0.3 * prior, (name, r["metrics"]["val"])
    r = results["forge_training_data"].result
    if r["status"] == "ok":
        assert r["metrics"]["val"]["nmse"] > 10 * friction


@pytest.mark.slow
def test_claimed_neural_parameter_count_is_checked(corpus):
    """The child's claims are checked where the code allows: a network-size claim below
    what the code declares is replaced by the declared size (3*16 + 17*16 + 17 weights)."""
    _, results, _, _ = corpus
    r = results["forge_claims"].result
    assert r["status"] == "ok"
    assert r["n_neural_params"] >= 3 * 16 + 17 * 16 + 17


def test_rich_markup_reason_prints_on_the_terminal(tmp_path):
    """The non-JSON evaluate output renders a hostile reason as text, not as markup."""
    space = write_space(tmp_path)
    f = tmp_path / "rich_markup.py"
    f.write_text(ATTACKS["rich_markup"].template)
    out = subprocess.run([sys.executable, "-m", "hyarch", "evaluate", str(space), str(f)],
                         capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert "Traceback" not in out.stderr, out.stderr[-2000:]
    assert "MarkupError" not in out.stdout + out.stderr
    assert "\x1b]0;pwned" not in out.stdout + out.stderr


# -- the canaries fire: the same attacks without the sandbox ---------------------------------


def test_canaries_fire_without_the_sandbox(tmp_path, monkeypatch):
    """Run three attacks in this process (``isolation="none"``): the file, network and
    process canaries must each catch them, or they prove nothing."""
    root = tmp_path / "c"
    root.mkdir()
    can = Canaries(root, write_space(tmp_path)).start(["write_torch_os", "net_tcp",
                                                        "proc_subprocess_import"])
    monkeypatch.setenv("TZ", can.session + "0")
    started = []
    try:
        for name in ("write_torch_os", "net_tcp", "proc_subprocess_import"):
            res = run_candidate(str(can.space_file), can.source(ATTACKS[name]),
                                isolation="none", overrides=QUICK)
            assert "ESCAPED" in res.result["reason"], res.result["reason"]
        assert [f for f in can.file_changes() if "write_torch_os" in f]
        assert can.wait_received(can.marker("net_tcp").encode())
        assert can.leftovers(can.marker("proc_subprocess_import"))
        started = can.leftovers()
    finally:
        for line in started or can.leftovers():
            pid = int(line.split()[1].rstrip(":"))
            try:
                os.kill(pid, signal.SIGKILL)  # the processes this test started, by id
            except ProcessLookupError:
                pass
        can.stop()


def test_corpus_metadata_is_complete():
    assert len(ATTACKS) >= 40
    for a in ATTACKS.values():
        assert a.expect in ("ok", "failed", "any") and a.static in ("rejected", "passes")
        assert "@" not in json.dumps(a.route)


# -- the search: hostile replies from the LLM endpoint ---------------------------------------

SEARCH_ATTACKS = ("forge_result_fd_arrays", "net_tcp", "proc_os_fork_evade", "after_thread",
                  "read_parent_environ", "write_open", "forge_monkeypatch")


def _fenced(code: str) -> str:
    return "Here is my model.\n```python\n" + code + "```\n"


@pytest.mark.slow
def test_search_with_hostile_llm_replies(tmp_path, monkeypatch):
    from hyarch.agent.loop import SearchConfig, Session
    from hyarch.runs import Run
    from tests.fake_openai import Action, FakeOpenAI

    space = write_space(tmp_path)
    root = tmp_path / "canaries"
    root.mkdir()
    run_dir = tmp_path / "run"
    can = Canaries(root, space, run_dir=tmp_path / "other-run").start(list(SEARCH_ATTACKS))
    monkeypatch.setenv("OPENAI_API_KEY", can.api_key)
    monkeypatch.setenv("DATABASE_URL", can.db_url)
    monkeypatch.setenv("TZ", can.session + "0")
    try:
        with FakeOpenAI() as server:
            for name in SEARCH_ATTACKS:
                server.reply(_fenced(can.source(ATTACKS[name])))
            server.default = Action("reply", text=_fenced(FRICTION.read_text()))
            cfg = SearchConfig(space=str(space), run_dir=run_dir, budget=8, per_round=4,
                               workers=2, llm="fake-model", base_url=server.url, distill=False,
                               overrides=QUICK)
            summary = Session(cfg).run_search()
            bodies = json.dumps(server.bodies)
            # the run folder and the study survive: resume and the leaderboard work
            out = subprocess.run(
                [sys.executable, "-m", "hyarch", "search", str(space), "--run", str(run_dir),
                 "--resume", "--budget", "9", "--per-round", "1", "--llm", "fake-model",
                 "--base-url", server.url], capture_output=True, text=True, cwd=ROOT,
                timeout=400)
            assert out.returncode == 0, out.stderr[-3000:]
        board = subprocess.run([sys.executable, "-m", "hyarch", "leaderboard", str(run_dir),
                                "--json"], capture_output=True, text=True, cwd=ROOT, timeout=120)
        assert board.returncode == 0, board.stderr[-3000:]
        rows = json.loads(board.stdout)
        run = Run(run_dir)
        recs = list(run.candidates())
        # seven attacks and the friction law; the endpoint's later repeats of the friction
        # law are sent back ("already tried"), never evaluated nor counted
        assert len(recs) == 8 and len(rows) == 8
        codes = {}
        for rec in recs:
            assert rec.finished, rec.id
            r = rec.result
            assert r["status"] in ("ok", "failed"), r
            if r["status"] == "failed":
                assert (r.get("reason") or "").strip(), rec.id
            assert "ESCAPED" not in json.dumps(r), r["reason"]
            codes[rec.id] = (run.candidate_dir(rec.id) / "model.py").read_text()
        # every hostile reply was evaluated, and a forged score does not rank first
        assert sum("@" not in c and can.session in c for c in codes.values()) >= 1
        best = rows[0]
        assert best["id"] == summary.best_id or best["status"] == "ok"
        assert "HYR1" not in codes[best["id"]] and "hyarch.sandbox" not in codes[best["id"]]
        assert "self.alpha * s.omega" in codes[best["id"]]
        forged = [r for r in rows if "HYR1" in codes[r["id"]] or "hyarch.sandbox" in codes[r["id"]]]
        assert forged
        for r in forged:
            if r["status"] == "ok":
                assert r["metrics"]["val"]["nmse"] > 10 * best["metrics"]["val"]["nmse"]
        # nothing escaped; no secret in the run folder or the prompts
        for p in run_dir.rglob("*"):
            if p.is_file():
                data = p.read_bytes().decode(errors="replace")
                assert not can.leaks(data), (p, can.leaks(data))
        assert not can.leaks(bodies)
        assert can.file_changes() == []
        assert can.network() == []
        assert can.victim_alive()
        assert can.wait_no_leftovers() == []
    finally:
        can.stop()


# -- the same attacks through the `hyarch evaluate` command ----------------------------------

CLI_SAMPLE = ("write_torch_os", "read_parent_environ", "proc_posixsubprocess", "net_tcp",
              "signal_parent", "forge_result_fd")


@pytest.mark.slow
def test_attacks_through_hyarch_evaluate(tmp_path):
    """`hyarch evaluate` runs candidates through the same runner: one attack of each kind
    exits 1 with its reason in the JSON, and the canaries stay quiet."""
    root = tmp_path / "c"
    root.mkdir()
    can = Canaries(root, write_space(tmp_path)).start(list(CLI_SAMPLE))
    env = {**os.environ, "OPENAI_API_KEY": can.api_key, "DATABASE_URL": can.db_url}
    try:
        def one(name):
            f = tmp_path / f"{name}.py"
            f.write_text(can.source(ATTACKS[name]))
            return name, subprocess.run(
                [sys.executable, "-m", "hyarch", "evaluate", str(can.space_file), str(f),
                 "--json"], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)

        with ThreadPoolExecutor(2) as pool:
            outs = dict(pool.map(one, CLI_SAMPLE))
        for name, out in outs.items():
            assert out.returncode == 1, (name, out.returncode, out.stderr[-1000:])
            rec = json.loads(out.stdout)
            assert rec["status"] == "failed" and rec["reason"], name
            assert not can.leaks(out.stdout + out.stderr), name
        assert not can.file_changes()
        assert not [n for n in can.network() if n[1]]
        assert can.victim_alive()
        assert not can.wait_no_leftovers()
    finally:
        can.stop()
