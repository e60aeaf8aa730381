"""The two-circles data set, exactly as the tutorials make it."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vgtrack.spec import DataSpec


@dataclass(frozen=True)
class Dataset:
    """Inputs scaled to [-1, 1]; ``x_test``/``y_test`` are what each epoch is scored on."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    x_all: np.ndarray
    y_all: np.ndarray


def load_dataset(spec: DataSpec) -> Dataset:
    """``make_circles`` + ``MinMaxScaler(feature_range=(-1, 1))`` fitted on all points, as the tutorial does.

    Example:
        >>> data = load_dataset(DataSpec())
        >>> data.x_train.shape, data.x_test.shape
        ((500, 2), (500, 2))
    """
    from sklearn.datasets import make_circles
    from sklearn.preprocessing import MinMaxScaler

    x, y = make_circles(n_samples=spec.n_samples, noise=spec.noise, factor=spec.factor, random_state=spec.random_state)
    x = MinMaxScaler(feature_range=(-1, 1)).fit_transform(x).astype(np.float32)
    y = y.astype(np.float32)
    n = spec.n_train
    if spec.evaluate_on == "train":
        return Dataset(x[:n], y[:n], x[:n], y[:n], x, y)
    return Dataset(x[:n], y[:n], x[n:], y[n:], x, y)
