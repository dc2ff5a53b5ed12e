"""TensorFlow ops that XLA builds quickly: the same numbers as TensorFlow's own under XLA, bit for bit.

TensorFlow turns some ops into XLA through a pipeline of MLIR passes set up anew for every op
instance (`MlirXlaOpKernel`): about 5 ms each on 2 cores, against about 0.05-0.3 ms for ops with a
direct XLA kernel. Softmax is one of them (so are Tanh, Rsqrt, Sqrt and Exp, which have no
bit-identical stand-in). The decode step has 60 softmaxes (one per attention width per layer) and
the draw two, so they cost every launch about 0.3 s before the second token, and part of the first.
"""

from __future__ import annotations

import tensorflow as tf


def softmax(x: tf.Tensor) -> tf.Tensor:
    """`tf.nn.softmax` over the last axis. `SoftmaxCrossEntropyWithLogits` has a direct XLA kernel
    whose second output, with zero labels, is exactly that softmax (the same max, exponentials,
    sum and division; tested bit for bit against `tf.nn.softmax` under XLA)."""
    x = tf.convert_to_tensor(x)
    flat = tf.reshape(x, [-1, tf.shape(x)[-1]])  # static where x's shape is: XLA sees constants
    probs = tf.raw_ops.SoftmaxCrossEntropyWithLogits(features=flat, labels=tf.zeros_like(flat))[1]
    return tf.reshape(probs, tf.shape(x))
