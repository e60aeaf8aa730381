"""The Keras MLP of a cell, built as the tutorials build it, and its optimizer."""

from __future__ import annotations

from vgtrack.grid import Cell


def layer_names(depth: int) -> list[str]:
    """``layer_01`` .. ``layer_{depth+1}``: hidden layers, then the sigmoid output; they sort by position."""
    return [f"layer_{i:02d}" for i in range(1, depth + 2)]


def make_initializer(name: str):
    """A fresh Keras initializer for a sweep-file name (fresh: each layer draws its own weights)."""
    import keras

    if name == "uniform":  # the first tutorial: RandomUniform(minval=0, maxval=1)
        return keras.initializers.RandomUniform(minval=0.0, maxval=1.0)
    if name == "normal":  # the second tutorial: RandomNormal(mean=0, stddev=1)
        return keras.initializers.RandomNormal(mean=0.0, stddev=1.0)
    keras_names = {"xavier": "glorot_uniform", "xavier_normal": "glorot_normal", "he": "he_uniform", "he_normal": "he_normal"}
    return keras.initializers.get(keras_names[name])


def build_model(cell: Cell):
    """Input(2) -> depth x Dense(width, activation) -> Dense(1, sigmoid), every kernel from the cell's initializer.

    Example:
        >>> model = build_model(Cell(5, 5, "relu", "he", "sgd", 0.01, 0.9))  # doctest: +SKIP
        >>> [layer.name for layer in model.layers]
        ['layer_01', 'layer_02', 'layer_03', 'layer_04', 'layer_05', 'layer_06']
    """
    import keras

    names = layer_names(cell.depth)
    layers = [keras.Input(shape=(2,))]
    layers += [
        keras.layers.Dense(cell.width, activation=cell.activation, kernel_initializer=make_initializer(cell.initializer), name=n)
        for n in names[:-1]
    ]
    layers.append(keras.layers.Dense(1, activation="sigmoid", kernel_initializer=make_initializer(cell.initializer), name=names[-1]))
    return keras.Sequential(layers, name=cell.name)


def build_optimizer(cell: Cell):
    """SGD with momentum, Adam or RMSprop with the cell's learning rate (and momentum)."""
    import keras

    if cell.optimizer == "sgd":
        return keras.optimizers.SGD(learning_rate=cell.learning_rate, momentum=cell.momentum)
    if cell.optimizer == "adam":
        return keras.optimizers.Adam(learning_rate=cell.learning_rate)
    if cell.optimizer == "rmsprop":
        return keras.optimizers.RMSprop(learning_rate=cell.learning_rate, momentum=cell.momentum)
    raise ValueError(f"Received an invalid value for `optimizer`, expected sgd, adam or rmsprop. Received: {cell.optimizer!r}")


def layer_sizes(cell: Cell) -> list[int]:
    """Units from the input to the output: ``[2, width, ..., width, 1]``."""
    return [2] + [cell.width] * cell.depth + [1]


def initial_weights(cell: Cell, seed: int) -> list:
    """The weights ``build_model(cell)`` starts from after ``keras.utils.set_random_seed(seed)``.

    ``[kernel_1, bias_1, ..., kernel_out, bias_out]`` as NumPy arrays, drawn without building a
    model: the same initializers, made in the same order, called with the same shapes.
    """
    import keras
    import numpy as np

    keras.utils.set_random_seed(seed)
    sizes = layer_sizes(cell)
    initializers = [make_initializer(cell.initializer) for _ in range(cell.depth + 1)]
    weights = []
    for fan_in, fan_out, initializer in zip(sizes[:-1], sizes[1:], initializers):
        weights.append(np.asarray(initializer(shape=(fan_in, fan_out), dtype="float32")))
        weights.append(np.zeros(fan_out, dtype=np.float32))  # Dense's default bias initializer
    return weights


def keras_model(cell: Cell, weights: list):
    """An ordinary Keras model of ``cell`` holding ``weights`` (e.g. a trained run's), compiled as the tutorial does."""

    model = build_model(cell)
    model.set_weights(weights)
    model.compile(optimizer=build_optimizer(cell), loss="binary_crossentropy", metrics=["accuracy"])
    model.optimizer.build(model.trainable_variables)  # saved with its (fresh) slots, so loading it warns of nothing
    return model
