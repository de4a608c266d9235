"""The benchmark scripts read real runs and print what they say they print (no timing)."""

from __future__ import annotations

import importlib.util
import re
import statistics
import sys
from pathlib import Path

import pytest

from tests.review_fixtures import demo_copy

ROOT = Path(__file__).resolve().parents[1]


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look themselves up there
    spec.loader.exec_module(module)
    return module


def test_candidates_table_and_medians_come_from_the_runs_records(tmp_path_factory, capsys):
    run = demo_copy(tmp_path_factory, "bench")
    for i, rec in enumerate(run.finished()):  # as a search records them (the demo has none)
        run.write_result(rec.id, {**rec.result, "wall_seconds": rec.result["seconds"] + 2 + i})
    _load("candidates").main([str(run.path)])
    out = capsys.readouterr().out
    records = [r for r in run.finished() if r.result.get("seconds") is not None]
    assert records
    for rec in records:  # one row per candidate, its own seconds
        assert re.search(rf"\| {rec.id} \|.*\| {rec.result['seconds']:.1f} \|", out)
    every = statistics.median(r.result["seconds"] for r in records)
    assert f"all {every:.1f} s ({len(records)})" in out
    hybrids = [r.result["seconds"] for r in records
               if r.status == "ok" and r.result.get("n_neural_params")]
    if hybrids:
        assert f"hybrids {statistics.median(hybrids):.1f} s ({len(hybrids)})" in out
    walls = [r.result["wall_seconds"] for r in records]
    assert f"wall (with the sandbox's process start) {statistics.median(walls):.1f} s" in out


def test_speed_benchmark_refuses_a_missing_cuda_device_plainly(capsys):
    speed = _load("speed")
    if sys.modules["torch"].cuda.is_available():
        pytest.skip("a CUDA device is here")
    with pytest.raises(SystemExit) as exc:
        speed.main(["--device", "cuda", "--only", "true"])
    assert exc.value.code == 2
    assert "no CUDA device" in capsys.readouterr().err
