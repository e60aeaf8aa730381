"""What training hands to tracking: one :class:`EpochRecord` per epoch, one :class:`RunResult` per run."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

# Per-layer statistics, in the order instrument.py computes them. Gradient statistics are the mean
# over the epoch's batches of each batch's statistic; kernel statistics are taken at the epoch's end.
GRADIENT_STATS = ("grad_mean_abs", "grad_std", "grad_l2")
KERNEL_STATS = ("kernel_l1", "kernel_mean", "kernel_std")
# Percentiles of each layer's kernel gradient at the epoch's last batch (TensorBoard's distribution bands).
PERCENTILES = (0, 7, 16, 31, 50, 69, 84, 93, 100)
PERCENTILE_STATS = tuple(f"grad_p{p:03d}" for p in PERCENTILES)
LAYER_STATS = GRADIENT_STATS + KERNEL_STATS + PERCENTILE_STATS
SCALARS = ("train_loss", "train_accuracy", "test_loss", "test_accuracy")


@dataclass(frozen=True)
class EpochRecord:
    """One epoch of one run: scalar metrics and a ``(n_layers,)`` array per layer statistic
    (``stats`` is empty in a record that carries only the scalars to MLflow, see RecordSampler)."""

    epoch: int
    train_loss: float
    train_accuracy: float
    test_loss: float
    test_accuracy: float
    layers: tuple[str, ...]
    stats: dict[str, np.ndarray] = field(repr=False)

    def scalars(self) -> dict[str, float]:
        return {name: getattr(self, name) for name in SCALARS}


@dataclass(frozen=True)
class RunResult:
    """A trained run: its full history, final weights and, if it diverged, why."""

    history: tuple[EpochRecord, ...]
    seconds: float
    weights: list = field(default_factory=list, repr=False)  # [kernel_1, bias_1, ...] as model.build_model orders them
    failure: str | None = None
    dead_share: float = 0.0  # share of hidden units that never fire on the data with the final weights

    @property
    def final(self) -> dict[str, float]:
        return self.history[-1].scalars()


def history_columns(history: tuple[EpochRecord, ...] | list[EpochRecord]) -> dict[str, np.ndarray]:
    """The full-resolution history as columns, one value per epoch.

    ``epoch``, the scalars, then ``<stat>/<layer>`` for every layer statistic (stat by stat,
    layers in order). Built from whole arrays: a run of 500 epochs and 21 layers has 160,000 values.
    """
    columns: dict[str, np.ndarray] = {"epoch": np.array([r.epoch for r in history], dtype=np.int64)}
    for name in SCALARS:
        columns[name] = np.array([getattr(r, name) for r in history], dtype=np.float64)
    layers = history[0].layers if history else ()
    for stat in LAYER_STATS:
        values = np.array([r.stats[stat] for r in history], dtype=np.float64).reshape(len(history), len(layers))
        columns |= {f"{stat}/{layer}": values[:, i] for i, layer in enumerate(layers)}
    return columns


def history_frame(history: tuple[EpochRecord, ...] | list[EpochRecord]):
    """The full-resolution history as a wide DataFrame: one row per epoch, the columns of :func:`history_columns`."""
    import pandas as pd

    return pd.DataFrame(history_columns(history))


# The per-layer statistics that go to MLflow metrics (every LAYER_STATS column goes to the history artifact).
LOGGED_LAYER_STATS = ("grad_mean_abs", "grad_std", "grad_l2", "kernel_l1")


def logged_epochs(epochs: int, series: int, budget: int) -> list[int]:
    """About ``budget / series`` epochs, evenly spaced from the first to the last (the last alone if
    the budget allows one point per series).

    Example:
        >>> epochs = logged_epochs(500, 4, 125)   # the four scalars, 31 points each
        >>> len(epochs), epochs[:3], epochs[-1]
        (31, [0, 17, 33], 499)
    """
    points = min(epochs, max(1, budget // series))
    if points == 1:
        return [epochs - 1]
    return sorted({round(i * (epochs - 1) / (points - 1)) for i in range(points)})


def metric_plan(epochs: int, n_layers: int, budget: int) -> tuple[set[int], set[int]]:
    """Which epochs MLflow gets the scalars at, and which the per-layer statistics at: about
    ``budget`` points for the run.

    Half the budget goes to the four scalars (the curves the MLflow UI charts and compares), half
    to the four statistics of every layer, whose full history is in ``history.parquet`` and
    ``gradients.png``: a deep network gets few points per layer, at least its last epoch.
    """
    scalars = logged_epochs(epochs, len(SCALARS), budget // 2)
    layers = logged_epochs(epochs, len(LOGGED_LAYER_STATS) * n_layers, budget - budget // 2)
    return set(scalars), set(layers)


def metric_values(record: EpochRecord) -> dict[str, float]:
    """What MLflow receives for one epoch: the scalars and, if the record carries them,
    ``<stat>/layer_NN`` for LOGGED_LAYER_STATS."""
    values = record.scalars()
    for stat in LOGGED_LAYER_STATS:
        if stat in record.stats:
            values |= {f"{stat}/{layer}": float(v) for layer, v in zip(record.layers, record.stats[stat])}
    return values


class RecordSampler:
    """``on_epoch`` for :func:`vgtrack.train.train_group` that keeps the epochs going to MLflow
    (:func:`metric_plan`) and hands them to ``send({run index: [EpochRecord, ...]})``: ``first``
    seconds after the group starts, then every ``every`` seconds, so the UI stays current with few
    calls. Each call to MLflow costs about as much as 60 points, and a long group's runs each get
    a point every few seconds: sent every 2 s, a full grid spent minutes of the sweep process on
    calls alone. A batch that falls due when the group is about to end (at its pace so far, within
    ``first`` seconds) waits for the final flush. A non-finite loss is always kept: it is why the
    run failed.

    Example:
        >>> sampler = RecordSampler([3, 5], epochs=500, budget=150, send=print)  # doctest: +SKIP
        >>> train_group(runs, data, settings, sampler); last = sampler.take()
    """

    def __init__(self, depths: list[int], epochs: int, budget: int, send, first: float = 2.0, every: float = 10.0) -> None:
        import time

        self._clock = time.monotonic
        self.plans = [metric_plan(epochs, depth + 1, budget) for depth in depths]
        self.send, self.first, self.every, self.epochs = send, first, every, epochs
        self.buffer: dict[int, list[EpochRecord]] = {}
        self.started = self._clock()
        self.next_send = self.started + first

    def __call__(self, i: int, record: EpochRecord) -> None:
        scalars, layers = self.plans[i]
        if record.epoch in layers or not np.isfinite(record.train_loss):
            self.buffer.setdefault(i, []).append(record)
        elif record.epoch in scalars:
            self.buffer.setdefault(i, []).append(replace(record, stats={}))  # the scalars only
        now = self._clock()
        if now > self.next_send:
            done = record.epoch + 1
            if (now - self.started) * (self.epochs - done) / done < self.first:
                self.next_send = now + self.first  # the final flush is near: it takes these along
            else:
                self.flush()

    def flush(self) -> None:
        """Send what is buffered now."""
        batch = self.take()
        if batch:
            self.send(batch)
        self.next_send = self._clock() + self.every

    def take(self) -> dict[int, list[EpochRecord]]:
        """What is buffered, removed from the buffer: the group's last records, which the caller
        writes together with the run's end (one MLflow call per run instead of two)."""
        batch, self.buffer = self.buffer, {}
        return batch
