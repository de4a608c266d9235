"""Shared fixtures: one thread per test process, and a tiny pendulum space for evaluate tests.

Keep this file small; fixtures for one topic belong in that topic's test file.
"""

from __future__ import annotations

import os
import tempfile
import textwrap

import pytest
import torch

torch.set_num_threads(1)
# simulated data is cached between processes (hyarch/spaces/loader.py): a fresh folder per
# test session, so that no test reads what another session (or the user) left behind
os.environ.setdefault("HYARCH_CACHE", tempfile.mkdtemp(prefix="hyarch-test-cache-"))

# A pendulum space small enough to train in about a second: few short trajectories and a
# training schedule of a few dozen iterations.
TINY_SPACE = """\
name: tiny_pendulum
description: A damped pendulum, small enough for tests.
states:
  theta: {description: angle, unit: rad}
  omega: {description: angular velocity, unit: rad/s}
data:
  simulator:
    name: damped_pendulum
    options: {points: 12, dt: 0.5, radius: [1.3, 2.3]}
    trajectories: {train: 3, val: 2, test: 2}
    ood: {trajectories: 2, options: {radius: [2.3, 2.8]}}
    seed: 0
truth:
  omega0_sq: 1.0966227112321507
  alpha: 0.2
training:
  windows: [2, 4]
  stage_iters: 15
  final_iters: 20
  patience: 10
  restarts: 1
  lbfgs: never
  regularizers: {closure_norm: 1.0e-3}
"""


@pytest.fixture
def tiny_space_path(tmp_path):
    """Path to a YAML file of a tiny damped-pendulum space with a short training schedule."""
    path = tmp_path / "tiny_pendulum.yaml"
    path.write_text(textwrap.dedent(TINY_SPACE))
    return path


@pytest.fixture
def tiny_space(tiny_space_path):
    from hyarch.spaces.loader import load_space

    return load_space(tiny_space_path)
