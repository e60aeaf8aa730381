"""Per-layer gradient and weight statistics: tensors in, numbers out.

Both functions run inside the training graph, on the gradients the optimizer applies, so
recording them costs no extra forward or backward pass. They take kernel blocks shaped
``(K, layers, fan_in, fan_out)`` (stack.StackedMLP.kernel_blocks) and return one row per
replica and one column per layer, input side first.
"""

from __future__ import annotations


def _per_layer(blocks, functions):
    import tensorflow as tf

    return tf.stack([tf.concat([f(block) for block in blocks], axis=1) for f in functions], axis=2)


def gradient_stats(blocks):
    """``(K, n_layers, 3)``: mean |g|, std of g and L2 norm of g (records.GRADIENT_STATS)."""
    import tensorflow as tf

    return _per_layer(blocks, [
        lambda g: tf.reduce_mean(tf.abs(g), axis=[2, 3]),
        lambda g: tf.math.reduce_std(g, axis=[2, 3]),
        lambda g: tf.sqrt(tf.reduce_sum(tf.square(g), axis=[2, 3])),
    ])


def kernel_stats(blocks):
    """``(K, n_layers, 3)``: L1 norm, mean and std of each kernel (records.KERNEL_STATS)."""
    import tensorflow as tf

    return _per_layer(blocks, [
        lambda w: tf.reduce_sum(tf.abs(w), axis=[2, 3]),
        lambda w: tf.reduce_mean(w, axis=[2, 3]),
        lambda w: tf.math.reduce_std(w, axis=[2, 3]),
    ])


def gradient_percentiles(blocks, percentiles):
    """``(K, n_layers, len(percentiles))``: percentiles of each kernel gradient's entries, interpolated
    linearly between order statistics as ``numpy.percentile`` does."""
    import numpy as np
    import tensorflow as tf

    out = []
    for block in blocks:
        n = block.shape[2] * block.shape[3]
        position = np.asarray(percentiles, np.float64) / 100 * (n - 1)
        low = np.floor(position).astype(np.int32)
        high = np.minimum(low + 1, n - 1)
        frac = tf.constant(position - low, tf.float32)
        flat = tf.sort(tf.reshape(block, [block.shape[0], block.shape[1], n]), axis=-1)
        below, above = tf.gather(flat, low, axis=2), tf.gather(flat, high, axis=2)
        out.append(below * (1 - frac) + above * frac)
    return tf.concat(out, axis=1)
