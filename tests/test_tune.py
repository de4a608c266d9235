"""--tune: an inner single-objective study with pruning over training settings."""

from __future__ import annotations

import math
import re

from hyarch.ranking.tune import scale_widths, tune
from hyarch.spaces.loader import load_space
from tests.search_fixtures import HYBRID, write_space


def test_scale_widths_rewrites_every_hidden_tuple():
    src = "a = Closure(inputs=('x',), hidden=(64, 32))\nb = Closure(inputs=('y',), hidden=(3,))"
    assert "hidden=(32, 16)" in scale_widths(src, 0.5)
    assert "hidden=(6,)" in scale_widths(src, 2.0)


def test_tune_never_returns_worse_than_untuned(tmp_path):
    space = load_space(write_space(tmp_path))
    said = []
    res = tune(space, HYBRID, 4, seed=0, progress=said.append)
    assert res.trials == 4
    # one line per trial, pruned or not, each with an estimate of the time left
    lines = [m for m in said if m.startswith("trial ")]
    assert [m.split(":")[0] for m in lines] == [f"trial {k}/4" for k in range(1, 5)]
    assert all(re.search(r"; about \d+ s left$", m) for m in lines), lines
    untuned = res.untuned["metrics"]["val"]["nmse"]
    tuned = res.tuned["metrics"]["val"]["nmse"]
    assert math.isfinite(tuned) and tuned <= untuned
    if res.settings:  # tuned settings are what produced the tuned result
        assert set(res.settings) <= {"lr", "lr_physical", "regularizers", "width_scale"}
    if "width_scale" in res.settings and res.settings["width_scale"] != 1.0:
        assert "hidden=(8, 8)" not in res.source
