from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from vgtrack.data import load_dataset
from vgtrack.errors import RunFailed
from vgtrack.grid import expand
from vgtrack.records import PERCENTILE_STATS, PERCENTILES, history_frame
from vgtrack.spec import parse_spec
from vgtrack.train import train

from conftest import ROOT, tiny_spec


def _spec(n_train: int = 70, **grid):
    return parse_spec(tiny_spec(
        data={"n_samples": 100, "n_train": n_train},  # 70 points, batches of 32: two full batches and one of 6
        grid={"depth": 3, "width": 4, "activation": "tanh", "initializer": "uniform", **grid},
        train={"epochs": 2, "batch_size": 32},
    ))


def _independent_epochs(run, data, settings):
    """The same training written plainly: eager GradientTape steps over the same shuffled batches."""
    import keras
    import tensorflow as tf

    from vgtrack.model import build_model, build_optimizer

    keras.utils.set_random_seed(run.seed)
    model, optimizer = build_model(run.cell), build_optimizer(run.cell)
    loss_fn = keras.losses.BinaryCrossentropy()
    shuffle = np.random.default_rng(run.seed)
    kernels = [layer.kernel for layer in model.layers]
    epochs = []
    for _ in range(settings.epochs):
        order = shuffle.permutation(len(data.x_train))
        per_batch = []
        for start in range(0, len(order), settings.batch_size):
            idx = order[start : start + settings.batch_size]
            xb, yb = data.x_train[idx], data.y_train[idx][:, None]
            with tf.GradientTape() as tape:
                loss = loss_fn(yb, model(xb, training=True))
            grads = tape.gradient(loss, model.trainable_variables)
            kernel_grads = [g.numpy() for g, v in zip(grads, model.trainable_variables) if any(v is k for k in kernels)]
            per_batch.append([[np.abs(g).mean(), g.std(), np.sqrt((g.astype(np.float64) ** 2).sum())] for g in kernel_grads])
            last_batch = np.array([np.percentile(g, PERCENTILES) for g in kernel_grads])
            optimizer.apply(grads, model.trainable_variables)
        k = [kernel.numpy() for kernel in kernels]
        epochs.append({
            "grad": np.mean(per_batch, axis=0),
            "kernel": np.array([[np.abs(w).sum(), w.mean(), w.std()] for w in k]),
            "percentiles": last_batch,
            "weights": [w.numpy() for w in model.weights],
        })
    return epochs


@pytest.mark.parametrize(("optimizer", "n_train"), [("sgd", 70), ("adam", 70), ("rmsprop", 70), ("sgd", 10)])
def test_layer_statistics_equal_an_independent_gradient_tape(optimizer, n_train):
    # 70 points in batches of 32: a short last batch (padded in the graph); 10: one batch, shorter than its padding
    spec = _spec(n_train, optimizer=optimizer)
    run, data = expand(spec)[0], load_dataset(spec.data)
    result = train(run, data, spec.train)
    expected = _independent_epochs(run, data, spec.train)
    for record, want in zip(result.history, expected):
        got_grad = np.stack([record.stats[s] for s in ("grad_mean_abs", "grad_std", "grad_l2")], axis=1)
        got_kernel = np.stack([record.stats[s] for s in ("kernel_l1", "kernel_mean", "kernel_std")], axis=1)
        np.testing.assert_allclose(got_grad, want["grad"], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(got_kernel, want["kernel"], rtol=1e-5, atol=1e-5)
        got_spread = np.stack([record.stats[s] for s in PERCENTILE_STATS], axis=1)
        np.testing.assert_allclose(got_spread, want["percentiles"], rtol=1e-5, atol=1e-6)  # the epoch's last batch
    assert result.history[0].layers == ("layer_01", "layer_02", "layer_03", "layer_04")


def test_same_seed_same_numbers():
    spec = _spec()
    run, data = expand(spec)[0], load_dataset(spec.data)
    first = history_frame(train(run, data, spec.train).history)
    second = history_frame(train(run, data, spec.train).history)
    assert first.equals(second)
    other = parse_spec({**tiny_spec(), "seeds": [5]})
    assert not history_frame(train(expand(other)[0], load_dataset(other.data), other.train).history).equals(first)


def test_records_are_emitted_every_epoch_with_every_statistic():
    spec = _spec()
    seen = []
    result = train(expand(spec)[0], load_dataset(spec.data), spec.train, on_epoch=seen.append)
    assert [r.epoch for r in seen] == [0, 1]
    assert seen == list(result.history)
    frame = history_frame(result.history)
    assert list(frame.columns[:5]) == ["epoch", "train_loss", "train_accuracy", "test_loss", "test_accuracy"]
    assert "grad_mean_abs/layer_04" in frame and "kernel_l1/layer_01" in frame
    assert frame.notna().all().all()


def test_nan_loss_fails_the_run_with_its_reason():
    spec = parse_spec(tiny_spec(
        grid={"depth": 3, "activation": "relu", "initializer": "normal"},
        optimizers={"sgd": {"learning_rate": 1e12}},
    ))
    seen = []
    with pytest.raises(RunFailed, match=r"train loss became nan at epoch 0"):
        train(expand(spec)[0], load_dataset(spec.data), spec.train, on_epoch=seen.append)
    assert len(seen) == 1  # the epoch that diverged was still handed over


def test_training_module_does_not_import_mlflow():
    code = "import sys, vgtrack.train, vgtrack.model, vgtrack.instrument; assert 'mlflow' not in sys.modules; print('ok')"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert done.stdout.strip() == "ok", done.stderr


def test_importing_vgtrack_does_not_import_tensorflow():
    code = "import sys, vgtrack, vgtrack.sweep; assert 'tensorflow' not in sys.modules and 'mlflow' not in sys.modules; print('ok')"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert done.stdout.strip() == "ok", done.stderr
