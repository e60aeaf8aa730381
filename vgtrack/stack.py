"""K replicas of one architecture as one set of stacked weights: the fast path of train.py.

Replicas share width, activation and optimizer and differ in their initial weights (seed,
initializer), in the order they see the data and in depth (see below). Every weight gets a leading
replica axis and each replica's loss is summed, so the gradient of the sum with respect to
replica k's weights is exactly replica k's own gradient. SGD with momentum, Adam and RMSprop
act element by element, so one Keras optimizer over the stacked variables updates every
replica exactly as it would alone.

The hidden-to-hidden kernels, all ``(width, width)``, are further stacked on a layer axis into
one variable ``(K, depth - 1, width, width)``: the optimizer update and the per-layer statistics
are then a handful of operations whatever the depth, instead of a handful per layer.

Replicas may differ in depth too. Every replica runs through all of the stack's hidden layers,
and the output layer reads each replica's activations at its own depth (one gather): a replica's
function, gradients and updates are exactly those of its own depth. The layers past a replica's
depth hold zeros, contribute nothing to its loss, receive exactly zero gradient and never move.
(A gather is one operation in each direction; selecting the input past a replica's depth with
``tf.where`` cost two per layer and a third of the step's time.)
"""

from __future__ import annotations

from collections.abc import Sequence


class StackedMLP:
    """The MLP of ``model.build_model`` for K replicas at once.

    ``variables`` are the weights as the optimizer sees them; ``kernel_blocks()`` gives every
    kernel as ``(K, layers, fan_in, fan_out)`` blocks, input side first, for the statistics.

    Example:
        >>> mlp = StackedMLP("tanh", [initial_weights(cell, s) for s in (0, 1)])  # doctest: +SKIP
        >>> mlp(x).shape   # x: (K, batch, 2)
        TensorShape([2, 32, 1])
    """

    def __init__(self, activation: str, replica_weights: Sequence[list]) -> None:
        import keras
        import numpy as np

        self.activation = keras.activations.get(activation)
        self.replicas = len(replica_weights)
        self.depths = [len(weights) // 2 - 1 for weights in replica_weights]
        self.depth = max(self.depths)  # hidden layers in the stack; column `depth` of the statistics is the output layer
        self.first_kernel = keras.Variable(np.stack([w[0] for w in replica_weights]), name="first_kernel")
        self.first_bias = keras.Variable(np.stack([w[1] for w in replica_weights]), name="first_bias")
        self.last_kernel = keras.Variable(np.stack([w[-2] for w in replica_weights]), name="last_kernel")
        self.last_bias = keras.Variable(np.stack([w[-1] for w in replica_weights]), name="last_bias")
        self.variables = [self.first_kernel, self.first_bias]
        self.hidden_kernels = self.hidden_biases = None
        self.width = replica_weights[0][0].shape[1]
        if self.depth > 1:
            kernels = np.zeros((self.replicas, self.depth - 1, self.width, self.width), np.float32)
            biases = np.zeros((self.replicas, self.depth - 1, self.width), np.float32)
            for k, weights in enumerate(replica_weights):
                hidden = weights[2:-2]
                for j in range(len(hidden) // 2):
                    kernels[k, j], biases[k, j] = hidden[2 * j], hidden[2 * j + 1]
            self.hidden_kernels = keras.Variable(kernels, name="hidden_kernels")
            self.hidden_biases = keras.Variable(biases, name="hidden_biases")
            self.variables += [self.hidden_kernels, self.hidden_biases]
        self.variables += [self.last_kernel, self.last_bias]
        # The hidden layers that are some replica's last, and for each replica the position of its own
        # among them; only those layers are stacked for the gather (a layer in the stack feeds two ops
        # and costs a gradient sum per step). None when every replica has the stack's depth.
        tops = sorted(set(self.depths))
        self._tops = None if len(tops) == 1 else [d - 1 for d in tops]
        self._top = None if len(tops) == 1 else np.array([tops.index(d) for d in self.depths], np.int32)

    def layer_columns(self, k: int) -> list[int]:
        """Replica k's layers among the statistics' columns: first, its hidden layers, output."""
        return list(range(self.depths[k])) + [self.depth]

    def hidden_outputs(self, x) -> list:
        """Each hidden layer's output, ``(K, batch, width)``, for inputs ``(K, batch, 2)``; rows past a
        replica's own depth are not its activations (they come from its zero weights)."""
        import tensorflow as tf

        k, w = self.replicas, self.width
        # Biases as (K, 1, width) by reshape, not [:, None, :]: a reshape's gradient is a reshape,
        # a strided slice's is a StridedSliceGrad per layer and step.
        h = self.activation(tf.matmul(x, self.first_kernel) + tf.reshape(self.first_bias, (k, 1, w)))
        outputs = [h]
        if self.hidden_kernels is not None:
            # unstack: its gradient is one stack, not one full-size slice gradient per layer
            kernels = tf.unstack(self.hidden_kernels, axis=1)
            biases = tf.unstack(tf.reshape(self.hidden_biases, (k, self.depth - 1, 1, w)), axis=1)
            for kernel, bias in zip(kernels, biases):
                h = self.activation(tf.matmul(h, kernel) + bias)
                outputs.append(h)
        return outputs

    def __call__(self, x):
        """``(K, batch, 2)`` inputs -> ``(K, batch, 1)`` probabilities (sigmoid output, as Dense(1, sigmoid))."""
        import keras
        import tensorflow as tf

        outputs = self.hidden_outputs(x)
        if self._top is None:
            h = outputs[-1]
        else:  # each replica's output layer reads its own last hidden layer
            h = tf.gather(tf.stack([outputs[j] for j in self._tops], axis=1), self._top, axis=1, batch_dims=1)
        logits = tf.matmul(h, self.last_kernel) + tf.reshape(self.last_bias, (self.replicas, 1, 1))
        return keras.activations.sigmoid(logits)

    def dead_shares(self, x) -> list[float]:
        """Per replica: the share of its hidden units whose output is exactly 0 for every input in ``x`` (N, 2)."""
        import numpy as np
        import tensorflow as tf

        stacked = tf.constant(np.broadcast_to(x, (self.replicas, *x.shape)))
        fired = np.stack([tf.reduce_any(h != 0, axis=1).numpy() for h in self.hidden_outputs(stacked)], axis=1)  # (K, depth, width)
        return [float(1 - fired[k, : self.depths[k]].mean()) for k in range(self.replicas)]

    def kernel_blocks(self, values=None) -> list:
        """Kernels (or ``values`` aligned with ``variables``, e.g. gradients) as (K, layers, fan_in, fan_out) blocks."""
        values = list(self.variables) if values is None else list(values)
        first, last = values[0], values[-2]
        blocks = [first[:, None]]
        if self.hidden_kernels is not None:
            blocks.append(values[2])
        blocks.append(last[:, None])
        return blocks

    def replica_weights(self, k: int) -> list:
        """Replica k's weights in ``model.build_model`` order: ``[kernel_1, bias_1, ...]``."""
        weights = [self.first_kernel.numpy()[k], self.first_bias.numpy()[k]]
        if self.hidden_kernels is not None:
            kernels, biases = self.hidden_kernels.numpy()[k], self.hidden_biases.numpy()[k]
            for kernel, bias in list(zip(kernels, biases))[: self.depths[k] - 1]:
                weights += [kernel, bias]
        return weights + [self.last_kernel.numpy()[k], self.last_bias.numpy()[k]]
