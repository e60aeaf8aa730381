from __future__ import annotations

import json
import os
import subprocess
import sys

from vgtrack.grid import expand
from vgtrack.spec import load_spec, parse_spec

from conftest import ROOT, SWEEPS, tiny_spec


def test_size_and_order():
    spec = parse_spec(tiny_spec(grid={"depth": [1, 2, 3], "width": [4, 8], "activation": ["tanh", "relu"], "initializer": "xavier"}, seeds=2))
    grid = expand(spec)
    assert len(grid) == 3 * 2 * 2 * 2
    names = [run.name for run in grid]
    # seed outermost, then activation, initializer, optimizer, width; depth fastest
    assert names[:4] == [
        "tanh-xavier-sgd-d01-w04-s0", "tanh-xavier-sgd-d02-w04-s0", "tanh-xavier-sgd-d03-w04-s0", "tanh-xavier-sgd-d01-w08-s0",
    ]
    assert names[12] == "tanh-xavier-sgd-d01-w04-s1"
    assert grid[-1].name == "relu-xavier-sgd-d03-w08-s1"
    assert len({run.key for run in grid}) == len(grid)


def test_exclude_and_include():
    spec = load_spec(SWEEPS / "tutorial.yaml")
    grid = expand(spec)
    assert [c.name for c in grid.cells] == ["tanh-uniform-sgd-d01-w05", "tanh-uniform-sgd-d05-w05", "relu-he-sgd-d05-w05"]
    assert len(grid) == 15
    depth = expand(load_spec(SWEEPS / "depth.yaml"))
    assert {c.config for c in depth.cells} == {"tanh-uniform-sgd", "tanh-xavier-sgd", "relu-he-sgd"}
    assert len(depth.cells) == 60


def test_full_grid_is_the_card_grid():
    assert len(expand(load_spec(SWEEPS / "full.yaml"))) == 20 * 5 * 2 * 3 * 2


def test_key_depends_on_everything_that_changes_the_numbers():
    base = expand(parse_spec(tiny_spec()))[0]
    assert expand(parse_spec(tiny_spec()))[0].key == base.key
    assert expand(parse_spec(tiny_spec(train={"epochs": 5})))[0].key != base.key
    assert expand(parse_spec(tiny_spec(data={"n_samples": 120, "n_train": 80, "noise": 0.2})))[0].key != base.key
    assert expand(parse_spec(tiny_spec(optimizers={"sgd": {"momentum": 0.5}})))[0].key != base.key
    assert expand(parse_spec(tiny_spec(seeds=[1])))[0].key != base.key
    # the sweep's name is not part of a run's identity
    assert expand(parse_spec(tiny_spec(name="other")))[0].key == base.key


def test_ids_are_identical_across_processes():
    # Different hash seeds: ids must not depend on Python's per-process string hashing.
    code = "import json; from vgtrack import load_spec, expand; print(json.dumps([r.key for r in expand(load_spec('sweeps/depth.yaml'))]))"
    outputs = [
        subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True,
                       env={**os.environ, "PYTHONHASHSEED": seed}).stdout
        for seed in ("1", "2")
    ]
    assert outputs[0] == outputs[1]
    assert json.loads(outputs[0]) == [r.key for r in expand(load_spec(SWEEPS / "depth.yaml"))]
