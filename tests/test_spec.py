from __future__ import annotations

import pytest

from vgtrack.errors import SpecError
from vgtrack.spec import ACTIVATIONS, load_spec, parse_spec
from vgtrack.sweep import main

from conftest import SWEEPS, run_module, tiny_spec

BAD_SPECS = [
    # (id, spec mapping or raw YAML text, the expected message after "<file>: ")
    ("depth-zero", tiny_spec(grid={"depth": [0, 1]}), "grid.depth: expected integers >= 1, got 0"),
    ("depth-float", tiny_spec(grid={"depth": [1.5]}), "grid.depth: expected integers >= 1, got 1.5"),
    ("depth-string", tiny_spec(grid={"depth": "5"}), "grid.depth: expected integers >= 1, got '5'"),
    ("depth-missing", tiny_spec(grid={"width": 5}), "grid.depth: required key is missing"),
    ("depth-empty", tiny_spec(grid={"depth": []}), "grid.depth: expected at least one value, got an empty list"),
    ("depth-twice", tiny_spec(grid={"depth": [2, 2]}), "grid.depth: expected distinct values, got 2 twice"),
    ("range-backwards", tiny_spec(grid={"depth": {"from": 5, "to": 1}}), "grid.depth: expected a range with from <= to, got from 5 to 1"),
    ("range-key", tiny_spec(grid={"depth": {"from": 1, "upto": 3}}), "grid.depth: unknown range key 'upto', allowed: from, to, step"),
    ("width-negative", tiny_spec(grid={"depth": 1, "width": -5}), "grid.width: expected integers >= 1, got -5"),
    ("activation", tiny_spec(grid={"depth": 1, "activation": ["tanh", "tanhh"]}), "grid.activation: expected Keras activation names such as tanh, relu, sigmoid, got 'tanhh'"),
    ("initializer", tiny_spec(grid={"depth": 1, "initializer": "glorot"}), "grid.initializer: expected one of uniform, normal, xavier, xavier_normal, he, he_normal, got 'glorot'"),
    ("optimizer", tiny_spec(grid={"depth": 1, "optimizer": "adagrad"}), "grid.optimizer: expected one of sgd, adam, rmsprop, got 'adagrad'"),
    ("grid-unknown-key", tiny_spec(grid={"depth": 1, "layers": 3}), "grid.layers: unknown key, allowed: depth, width, activation, initializer, optimizer"),
    ("top-unknown-key", tiny_spec(epochs=5), "epochs: unknown key, allowed: name, experiment, data, grid, exclude, include, seeds, train, optimizers, tracking, queue"),
    ("grace-short", tiny_spec(queue={"heartbeat": 10, "grace": 10}), "queue.grace: expected more than heartbeat (10) seconds, got 10"),
    ("retries-negative", tiny_spec(queue={"retries": -1}), "queue.retries: expected a value >= 0, got -1"),
    ("epochs-zero", tiny_spec(train={"epochs": 0}), "train.epochs: expected a value >= 1, got 0"),
    ("epochs-type", tiny_spec(train={"epochs": "many"}), "train.epochs: expected an integer, got 'many'"),
    ("batch-float", tiny_spec(train={"batch_size": 3.5}), "train.batch_size: expected an integer, got 3.5"),
    ("noise-negative", tiny_spec(data={"noise": -0.1}), "data.noise: expected a value >= 0, got -0.1"),
    ("factor-one", tiny_spec(data={"factor": 1.0}), "data.factor: expected a value < 1, got 1.0"),
    ("n-train-too-big", tiny_spec(data={"n_samples": 100, "n_train": 200}), "data.n_train: expected at most n_samples (100), got 200"),
    ("no-test-set", tiny_spec(data={"n_samples": 100, "n_train": 100}), "data.n_train: expected less than n_samples (100) to leave a test set (or set evaluate_on: train), got 100"),
    ("evaluate-on", tiny_spec(data={"evaluate_on": "validation"}), "data.evaluate_on: expected one of 'test' or 'train', got 'validation'"),
    ("seeds-zero", tiny_spec(seeds=0), "seeds: expected a count >= 1 or a list of integers >= 0, got 0"),
    ("seeds-negative", tiny_spec(seeds=[0, -1]), "seeds: expected a count >= 1 or a list of integers >= 0, got -1"),
    ("lr-zero", tiny_spec(optimizers={"sgd": {"learning_rate": 0}}), "optimizers.sgd.learning_rate: expected a value > 0, got 0"),
    ("adam-momentum", tiny_spec(optimizers={"adam": {"momentum": 0.9}}), "optimizers.adam.momentum: unknown key, allowed: learning_rate"),
    ("exclude-key", tiny_spec(exclude=[{"activation": "relu", "init": "he"}]), "exclude[0].init: unknown key, allowed: depth, width, activation, initializer, optimizer"),
    ("exclude-value", tiny_spec(exclude=[{"activation": "rellu"}]), "exclude[0].activation: expected Keras activation names such as tanh, relu, sigmoid, got 'rellu'"),
    ("exclude-empty-rule", tiny_spec(exclude=[{}]), "exclude[0]: expected at least one of depth, width, activation, initializer, optimizer, got an empty rule"),
    ("exclude-not-list", tiny_spec(exclude={"activation": "relu"}), "exclude: expected a list, got {'activation': 'relu'}"),
    ("exclude-everything", tiny_spec(exclude=[{"depth": [1, 2]}]), "exclude: expected at least one cell to remain, got an empty grid"),
    ("name-pattern", tiny_spec(name="my sweep"), "name: expected letters, digits, '_', '.', '-' (starting with a letter or digit), got 'my sweep'"),
    ("metric-points", tiny_spec(tracking={"metric_points": 0}), "tracking.metric_points: expected a value >= 10, got 0"),
    ("save-model", tiny_spec(tracking={"save_model": "yes"}), "tracking.save_model: expected true or false, got 'yes'"),
    ("not-a-mapping", "- just\n- a list\n", "expected a mapping of sweep keys at the top level, got ['just', 'a list']"),
    ("empty-file", "", "expected a mapping of sweep keys at the top level, got null"),
    ("bad-yaml", "name: x\ngrid: {depth: [1, 2\n", "invalid YAML at line 3, column 1: expected ',' or ']', but got '<stream end>'"),
]


@pytest.mark.parametrize("content, expected", [case[1:] for case in BAD_SPECS], ids=[case[0] for case in BAD_SPECS])
def test_bad_spec_is_one_line_and_exit_2(content, expected, write_spec, capsys, tmp_path):
    path = write_spec(content)
    assert main([str(path), "--tracking-uri", f"sqlite:///{tmp_path}/mlruns/mlflow.db"]) == 2
    err = capsys.readouterr().err
    assert err == f"{path}: {expected}\n"
    assert not (tmp_path / "mlruns").exists()  # nothing trained or logged


def test_missing_file(tmp_path, capsys):
    assert main([str(tmp_path / "nope.yaml")]) == 2
    assert capsys.readouterr().err == f"{tmp_path / 'nope.yaml'}: file not found\n"


def test_bad_spec_from_the_command_line_has_no_traceback(write_spec):
    path = write_spec(tiny_spec(grid={"depth": 0}))
    done = run_module("vgtrack.sweep", str(path))
    assert done.returncode == 2
    assert done.stderr == f"{path}: grid.depth: expected integers >= 1, got 0\n"
    assert "Traceback" not in done.stdout + done.stderr


def test_defaults_follow_the_tutorial():
    spec = parse_spec({"name": "d", "grid": {"depth": 5}})
    assert (spec.data.n_samples, spec.data.noise, spec.data.factor, spec.data.random_state, spec.data.n_train) == (1000, 0.1, 0.8, 1, 500)
    assert (spec.train.epochs, spec.train.batch_size) == (500, 32)
    assert spec.optimizers.settings("sgd") == (0.01, 0.9)
    assert spec.experiment_name == "d"
    assert spec.seeds == (0,)


def test_ranges_scalars_and_overrides():
    spec = parse_spec({
        "name": "r", "experiment": "exp",
        "grid": {"depth": {"from": 2, "to": 10, "step": 4}, "width": 7, "optimizer": ["sgd", "adam"]},
        "optimizers": {"sgd": {"learning_rate": 0.1}},
        "seeds": [3, 7],
    })
    assert spec.grid.depth == (2, 6, 10)
    assert spec.grid.width == (7,)
    assert spec.optimizers.settings("sgd") == (0.1, 0.9)
    assert spec.optimizers.settings("adam") == (0.001, 0.0)
    assert spec.seeds == (3, 7)
    assert spec.experiment_name == "exp"


def test_spec_is_frozen():
    spec = parse_spec({"name": "f", "grid": {"depth": 1}})
    with pytest.raises(Exception):
        spec.train.epochs = 3  # type: ignore[misc]


@pytest.mark.parametrize("path", sorted(SWEEPS.glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_sweeps_load(path):
    spec = load_spec(path)
    assert spec.name == path.stem


def test_spec_error_names_file_key_and_value():
    with pytest.raises(SpecError, match=r"^x\.yaml: grid\.depth: expected integers >= 1, got 0$"):
        parse_spec(tiny_spec(grid={"depth": 0}), "x.yaml")


def test_activation_names_are_keras_names():
    import keras

    for name in ACTIVATIONS:
        assert callable(keras.activations.get(name))
    from keras.src.activations import ALL_OBJECTS_DICT

    assert set(ACTIVATIONS) == set(ALL_OBJECTS_DICT)
