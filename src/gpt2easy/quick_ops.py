"""TensorFlow ops that XLA builds quickly, for the compiled decoder (generate.py) and the draw.

TensorFlow turns some ops into XLA through a pipeline of MLIR passes set up anew for every op
instance (`MlirXlaOpKernel`): about 4-6 ms each on 2 cores, against about 0.05-0.5 ms for ops with
a direct XLA kernel (measured per op, 2026-12-04: Softmax, LogSoftmax, Tanh, Sigmoid, Rsqrt, Sqrt,
Exp, Reciprocal, Relu, Abs and Sign go through MLIR; Elu, Pow, Log, Erf, Softplus, division,
Minimum and selects do not). Every launch builds the prompt pass and the decode step anew before
the XLA cache can answer, so such ops cost every launch time before its first tokens:
- `softmax`: the same numbers as `tf.nn.softmax` under XLA, bit for bit; 60 per decode step.
- `gelu` and `layer_norm`: GPT-2's GELU and layer norm without Tanh and Rsqrt (12 and 25 per
  program), within a few units in the last place of `model.gelu`/`model.norm` (as accurate as
  XLA's own tanh and rsqrt against float64), not bit for bit. Training and `evaluate` keep
  `model`'s ops: in the plain graph every extra element-wise op is a pass over memory.
"""

from __future__ import annotations

import math

import tensorflow as tf


def softmax(x: tf.Tensor) -> tf.Tensor:
    """`tf.nn.softmax` over the last axis. `SoftmaxCrossEntropyWithLogits` has a direct XLA kernel
    whose second output, with zero labels, is exactly that softmax (the same max, exponentials,
    sum and division; tested bit for bit against `tf.nn.softmax` under XLA)."""
    x = tf.convert_to_tensor(x)
    flat = tf.reshape(x, [-1, tf.shape(x)[-1]])  # static where x's shape is: XLA sees constants
    probs = tf.raw_ops.SoftmaxCrossEntropyWithLogits(features=flat, labels=tf.zeros_like(flat))[1]
    return tf.reshape(probs, tf.shape(x))


def tanh(y: tf.Tensor) -> tf.Tensor:
    """tanh(y) = -expm1(-2|y|) / (2 + expm1(-2|y|)) with the sign of y; `Elu` of a negative
    number is its expm1 (a direct XLA kernel), and the formula keeps full precision near 0.
    |y| and the sign come from Minimum and a select: Abs and Sign are lowered through MLIR too."""
    m = tf.nn.elu(tf.minimum(-2.0 * y, 2.0 * y))
    t = -m / (2.0 + m)
    return tf.where(y < 0.0, -t, t)


def gelu(x: tf.Tensor) -> tf.Tensor:
    """GPT-2's tanh approximation of GELU (`model.gelu`) over `tanh` above."""
    return 0.5 * x * (1.0 + tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * tf.pow(x, 3))))


def layer_norm(x: tf.Tensor, g: tf.Tensor, b: tf.Tensor, eps: float = 1e-5) -> tf.Tensor:
    """`model.norm` with (var + eps) ** -0.5 (`Pow`, a direct XLA kernel) instead of Rsqrt."""
    mean, var = tf.nn.moments(x, axes=[-1], keepdims=True)
    return (x - mean) * tf.pow(var + eps, -0.5) * g + b
