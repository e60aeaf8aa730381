"""Train runs: ``train(run, data, settings) -> RunResult`` and ``train_group(runs, ...)``.

Never imports mlflow: every epoch becomes an :class:`~vgtrack.records.EpochRecord` handed to
``on_epoch``, and whoever called ``train`` decides where records go.

Runs that share an architecture and optimizer (:func:`vgtrack.grid.stack_key`) train together
as replicas of one :class:`~vgtrack.stack.StackedMLP`. One epoch is one ``tf.function`` call:
each replica's shuffled batches, the optimizer steps, the per-layer gradient statistics of every
step (taken from the gradients the optimizer applies) and the test evaluation all run inside one
graph. This removes the per-step and per-model overhead of ``model.fit`` while training the same
function: the same initial weights as ``model.build_model``, the same loss, the same Keras
optimizer; tests check it against a plain Keras model to 1e-5.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence

import numpy as np

from vgtrack.data import Dataset
from vgtrack.errors import RunFailed
from vgtrack.grid import Run, stack_key
from vgtrack.records import GRADIENT_STATS, KERNEL_STATS, LAYER_STATS, PERCENTILES, SCALARS, EpochRecord, RunResult
from vgtrack.spec import TrainSpec

_configured = False


def _tensorflow():
    """Import TensorFlow quietly, with one thread per op: these models are far too small to split,
    and ``--workers`` puts one process on each core instead."""
    global _configured
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    if not _configured:
        try:
            tf.config.threading.set_intra_op_parallelism_threads(1)
            tf.config.threading.set_inter_op_parallelism_threads(1)
        except RuntimeError:  # the runtime was already started by someone else; keep its settings
            pass
        # Grappler's passes cost ~0.1 s per traced group and did not make these graphs measurably faster.
        tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": True})
        _configured = True
    return tf


def warm_up() -> None:
    """Import TensorFlow and Keras (seconds, once per process) before the first group needs them."""
    _tensorflow()
    import keras  # noqa: F401


def batches_per_epoch(n: int, batch_size: int) -> int:
    """Batches in an epoch of ``n`` examples; the last may be short (padded, see :func:`_batch_layout`)."""
    return -(-n // batch_size)


def _batch_layout(n: int, batch_size: int):
    """Every epoch as ``n_batches`` batches of exactly ``batch_size`` positions, so that the graph's
    shapes are static: the last batch, if short, is padded with examples that count for nothing.

    Returns (n_batches, mask ``(n_batches, batch_size)``: 1 where a position holds a real example).
    """
    n_batches = batches_per_epoch(n, batch_size)
    mask = (np.arange(n_batches * batch_size) < n).astype(np.float32).reshape(n_batches, batch_size)
    return n_batches, mask


def epoch_orders(shuffles: Sequence[np.random.Generator], n: int, batch_size: int) -> np.ndarray:
    """``(K, n_batches * batch_size)`` example indices: each replica's shuffled epoch, its short last
    batch padded by repeating the epoch's order (masked out, see :func:`_batch_layout`)."""
    padded = batches_per_epoch(n, batch_size) * batch_size  # as _batch_layout lays it out; this runs every epoch, so no mask is built
    return np.stack([np.resize(shuffle.permutation(n), padded) for shuffle in shuffles]).astype(np.int32)


def _epoch_function(mlp, optimizer, data: Dataset, batch_size: int, statistics: bool = True):
    """A compiled function ``orders (K, n_batches * batch_size) -> dict of (K, ...) tensors`` that trains one epoch.

    ``statistics=False`` leaves the per-layer statistics out (zeros): only the benchmark uses it,
    to measure what they cost.
    """
    import keras

    from vgtrack.instrument import gradient_percentiles, gradient_stats, kernel_stats

    tf = _tensorflow()
    k = mlp.replicas
    n = len(data.x_train)
    n_batches, mask = _batch_layout(n, batch_size)
    x_train, y_train = tf.constant(data.x_train), tf.constant(data.y_train[:, None])
    x_test = tf.constant(np.broadcast_to(data.x_test, (k, *data.x_test.shape)))
    y_test = tf.constant(np.broadcast_to(data.y_test[:, None], (k, len(data.y_test), 1)))
    sizes = tf.constant(mask.sum(axis=1))  # real examples per batch
    mask = tf.constant(mask)

    def correct(y, p):  # (K, batch): 1 where a replica's prediction is right at threshold 0.5
        return tf.cast(tf.equal(tf.cast(p > 0.5, y.dtype), y), tf.float32)[:, :, 0]

    def step(xb, yb, mb, size):
        with tf.GradientTape() as tape:
            pred = mlp(xb)
            # (K,): each replica's mean binary cross-entropy over the batch's real examples, as
            # keras.losses.BinaryCrossentropy (padding has weight 0)
            loss = tf.reduce_sum(keras.losses.binary_crossentropy(yb, pred) * mb, axis=1) / size
            total = tf.reduce_sum(loss)  # d total / d replica k's weights = replica k's own gradient
        grads = tape.gradient(total, mlp.variables)
        optimizer.apply(grads, mlp.variables)
        blocks = mlp.kernel_blocks(grads)
        stats = gradient_stats(blocks) if statistics else tf.zeros((k, mlp.depth + 1, len(GRADIENT_STATS)))
        return loss * size, tf.reduce_sum(correct(yb, pred) * mb, axis=1), stats, blocks

    # autograph=False: the loop below is written as the tf.while_loop it is; converting the
    # step's Python code (Keras' optimizer included) costs more tracing time than it saves.
    @tf.function(autograph=False)
    def run_epoch(orders):
        def batches(values):  # (K, n_batches * batch_size, d) -> (n_batches, K, batch_size, d)
            return tf.transpose(tf.reshape(tf.gather(values, orders), (k, n_batches, batch_size, -1)), (1, 0, 2, 3))

        xs, ys = batches(x_train), batches(y_train)

        def body(i, loss_sum, hits, grad_sum, _):
            batch_loss, batch_hits, batch_grads, last_grads = step(xs[i], ys[i], mask[i], sizes[i])
            return i + 1, loss_sum + batch_loss, hits + batch_hits, grad_sum + batch_grads, last_grads

        # One traced step in a graph loop over the batches, whatever their number.
        start = (
            tf.constant(0), tf.zeros((k,)), tf.zeros((k,)), tf.zeros((k, mlp.depth + 1, len(GRADIENT_STATS))),
            [tf.zeros_like(block) for block in mlp.kernel_blocks()],
        )
        _, loss_sum, hits, grad_sum, last_grads = tf.while_loop(lambda i, *_: i < n_batches, body, start)
        test_pred = mlp(x_test)
        return {
            "train_loss": loss_sum / n,
            "train_accuracy": hits / n,
            "test_loss": tf.reduce_mean(keras.losses.binary_crossentropy(y_test, test_pred), axis=1),
            "test_accuracy": tf.reduce_mean(correct(y_test, test_pred), axis=1),
            "grad": grad_sum / n_batches,
            # the distribution is taken at the epoch's last batch: sorting every batch would cost more than training
            "percentiles": gradient_percentiles(last_grads, PERCENTILES) if statistics else tf.zeros((k, mlp.depth + 1, len(PERCENTILES))),
            "kernel": kernel_stats(mlp.kernel_blocks()) if statistics else tf.zeros((k, mlp.depth + 1, len(KERNEL_STATS))),
        }

    return run_epoch


def train_group(
    runs: Sequence[Run],
    data: Dataset,
    settings: TrainSpec,
    on_epoch: Callable[[int, EpochRecord], None] | None = None,
    statistics: bool = True,
) -> list[RunResult]:
    """Train runs that share :func:`~vgtrack.grid.stack_key` together; one result per run, in order.

    A replica whose loss becomes NaN or infinite stops emitting records and its result carries
    the reason in ``failure``; the others train on. ``on_epoch(i, record)`` receives run i's
    records; an exception it raises (an interrupt, say) stops the whole group.
    """
    import keras

    from vgtrack.model import build_optimizer, initial_weights, layer_names
    from vgtrack.stack import StackedMLP

    if len({stack_key(run.cell) for run in runs}) != 1:
        raise ValueError(f"Received runs that cannot share a graph: {sorted({run.cell.name for run in runs})}")
    tf = _tensorflow()
    started = time.perf_counter()
    cell = runs[0].cell
    mlp = StackedMLP(cell.activation, [initial_weights(run.cell, run.seed) for run in runs])
    keras.utils.set_random_seed(runs[0].seed)
    optimizer = build_optimizer(cell)
    optimizer.build(mlp.variables)
    run_epoch = _epoch_function(mlp, optimizer, data, settings.batch_size, statistics)
    layers = [tuple(layer_names(run.cell.depth)) for run in runs]
    columns = [mlp.layer_columns(i) for i in range(len(runs))]
    shuffles = [np.random.default_rng(run.seed) for run in runs]
    histories: list[list[EpochRecord]] = [[] for _ in runs]
    failures: list[str | None] = [None] * len(runs)
    n = len(data.x_train)
    for epoch in range(settings.epochs):
        orders = epoch_orders(shuffles, n, settings.batch_size)
        out = {name: value.numpy() for name, value in run_epoch(tf.constant(orders)).items()}
        # Whole arrays first, one slice per replica after: this loop runs for every replica and epoch.
        stats = np.concatenate([out["grad"], out["kernel"], out["percentiles"]], axis=2)  # (K, layers, LAYER_STATS)
        scalars = np.stack([out[name] for name in SCALARS], axis=1).tolist()
        for i in range(len(runs)):
            if failures[i] is not None:
                continue
            record = EpochRecord(epoch, *scalars[i], layers[i], dict(zip(LAYER_STATS, stats[i, columns[i]].T)))
            histories[i].append(record)
            if on_epoch is not None:
                on_epoch(i, record)
            if not np.isfinite(record.train_loss):
                failures[i] = f"train loss became {record.train_loss} at epoch {epoch}"
    dead = mlp.dead_shares(data.x_all)
    seconds = (time.perf_counter() - started) / len(runs)
    return [
        RunResult(history=tuple(history), seconds=seconds, weights=mlp.replica_weights(i), failure=failure, dead_share=dead[i])
        for i, (history, failure) in enumerate(zip(histories, failures))
    ]


def train(
    run: Run,
    data: Dataset,
    settings: TrainSpec,
    on_epoch: Callable[[EpochRecord], None] | None = None,
) -> RunResult:
    """Train one run's model for ``settings.epochs`` epochs and return its history.

    The same (cell, seed) gives the same numbers every time, alone or in a group: its initial
    weights are those of ``model.build_model`` after ``keras.utils.set_random_seed(seed)`` and a
    NumPy generator seeded alike shuffles every epoch.

    Raises:
        RunFailed: the loss became NaN or infinite; the epoch that did it was still emitted.

    Example:
        >>> result = train(expand(spec)[0], load_dataset(spec.data), spec.train)  # doctest: +SKIP
        >>> result.final["test_accuracy"]
        0.816
    """
    (result,) = train_group([run], data, settings, None if on_epoch is None else (lambda _, record: on_epoch(record)))
    if result.failure is not None:
        raise RunFailed(result.failure)
    return result
