"""The fast path trains the same function as Keras: stacked replicas against plain Keras models."""

from __future__ import annotations

import multiprocessing

import numpy as np
import pytest

from vgtrack.data import load_dataset
from vgtrack.grid import expand, stack_groups
from vgtrack.model import build_model, build_optimizer, initial_weights
from vgtrack.records import history_frame
from vgtrack.spec import parse_spec
from vgtrack.train import train, train_group

from conftest import tiny_spec


def _group_spec(optimizer: str, epochs: int = 1, n_train: int = 32):
    return parse_spec(tiny_spec(
        data={"n_samples": 64, "n_train": n_train},
        grid={"depth": [1, 3], "width": 4, "activation": "tanh", "initializer": ["uniform", "xavier"], "optimizer": optimizer},
        seeds=[0, 3],
        train={"epochs": epochs, "batch_size": 32},
    ))


def test_initial_weights_are_those_of_build_model():
    import keras

    for run in expand(_group_spec("sgd")):
        keras.utils.set_random_seed(run.seed)
        expected = build_model(run.cell).get_weights()
        for got, want in zip(initial_weights(run.cell, run.seed), expected, strict=True):
            np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("optimizer", ["sgd", "adam", "rmsprop"])
def test_one_batch_matches_a_plain_keras_model(optimizer):
    """Same initial weights, one batch: updated weights and per-layer gradients equal Keras' to 1e-5."""
    import keras
    import tensorflow as tf

    spec = _group_spec(optimizer)
    data = load_dataset(spec.data)
    runs = list(expand(spec))  # depths 1 and 3, two initializers, two seeds: one mixed-depth group
    (group,) = stack_groups(runs, 64)
    results = train_group(group, data, spec.train)
    x, y = data.x_train, data.y_train[:, None]
    for run, result in zip(group, results):
        keras.utils.set_random_seed(run.seed)
        model = build_model(run.cell)
        with tf.GradientTape() as tape:
            loss = keras.losses.BinaryCrossentropy()(y, model(x, training=True))
        grads = [g.numpy() for g in tape.gradient(loss, model.trainable_variables)]
        kernel_grads = grads[0::2]
        record = result.history[0]
        np.testing.assert_allclose(record.stats["grad_mean_abs"], [np.abs(g).mean() for g in kernel_grads], rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(record.stats["grad_std"], [g.std() for g in kernel_grads], rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(record.stats["grad_l2"], [np.linalg.norm(g) for g in kernel_grads], rtol=1e-5, atol=1e-7)
        model.compile(optimizer=build_optimizer(run.cell), loss="binary_crossentropy")
        keras.utils.set_random_seed(run.seed)
        model.set_weights(initial_weights(run.cell, run.seed))
        model.train_on_batch(x, y)
        for got, want in zip(result.weights, model.get_weights(), strict=True):
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_a_run_gives_the_same_numbers_alone_and_in_a_group():
    spec = _group_spec("adam", epochs=5, n_train=50)
    data = load_dataset(spec.data)
    (group,) = stack_groups(list(expand(spec)), 64)
    together = train_group(group, data, spec.train)
    for run, result in zip(group, together):
        alone = train(run, data, spec.train)
        assert result.history[0].layers == alone.history[0].layers
        np.testing.assert_allclose(history_frame(result.history).values, history_frame(alone.history).values, rtol=1e-5, atol=1e-6)
        for got, want in zip(result.weights, alone.weights, strict=True):
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_groups_share_a_graph_only_when_the_architecture_allows():
    spec = parse_spec(tiny_spec(grid={"depth": [1, 2, 3], "width": [3, 5], "activation": ["tanh", "relu"]}, seeds=2))
    groups = stack_groups(list(expand(spec)), 4)
    for group in groups:
        assert len(group) <= 4
        assert len({(r.cell.width, r.cell.activation, r.cell.optimizer) for r in group}) == 1
        assert [r.cell.depth for r in group] == sorted(r.cell.depth for r in group)
    assert sorted(r.key for g in groups for r in g) == sorted(r.key for r in expand(spec))


def test_a_diverging_replica_fails_alone():
    spec = parse_spec(tiny_spec(
        grid={"depth": 3, "activation": "relu", "initializer": ["normal", "xavier"]},
        optimizers={"sgd": {"learning_rate": 1e12}},
    ))
    results = train_group(list(expand(spec)), load_dataset(spec.data), spec.train)
    assert results[0].failure == "train loss became nan at epoch 0" and len(results[0].history) == 1
    for result in results:  # a failed replica stops at its bad epoch; any other trains to the end
        if result.failure is None:
            assert len(result.history) == spec.train.epochs
        else:
            assert not np.isfinite(result.history[-1].train_loss)


@pytest.mark.slow
def test_fast_path_accuracy_agrees_with_keras_fit():
    """Over five seeds, mean final test accuracy of vgtrack and of model.fit agree within 0.05."""
    from vgtrack.bench import fit_baseline

    spec = parse_spec({
        "name": "agree", "seeds": 5, "train": {"epochs": 100},
        "grid": {"depth": 5, "activation": "tanh", "initializer": "uniform"},
        "include": [{"activation": "relu", "initializer": "he"}],
    })
    data = load_dataset(spec.data)
    groups = stack_groups(list(expand(spec)), 64)
    # The ten model.fit runs (the bench's baseline without its per-epoch validation pass, which
    # leaves the weights alone) take most of this test: two processes share them, one per core.
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        fits = pool.starmap_async(fit_baseline, [(run.cell, run.seed, data, spec.train.epochs, False) for group in groups for run in group])
        fast = [[r.final["test_accuracy"] for r in train_group(group, data, spec.train)] for group in groups]
        accuracies = iter([accuracy for _, accuracy in fits.get(timeout=1800)])
    for group, fast_group in zip(groups, fast):
        keras_fit = [next(accuracies) for _ in group]
        assert abs(np.mean(fast_group) - np.mean(keras_fit)) <= 0.05, (group[0].cell.config, fast_group, keras_fit)
