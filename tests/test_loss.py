"""The training loss: `model.loss_fn` (mean cross-entropy with its own compiled gradient) and
`model.token_losses`, against NumPy and TensorFlow's own `sparse_softmax_cross_entropy_with_logits`
and its gradient (independent references), at the vocabulary size the model uses."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from gpt2easy.model import loss_fn, token_losses


def numpy_losses(logits: np.ndarray, targets: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float64)
    top = z.max(axis=-1, keepdims=True)
    lse = np.log(np.exp(z - top).sum(axis=-1)) + top[..., 0]
    return lse - np.take_along_axis(z, targets[..., None], axis=-1)[..., 0]


@pytest.fixture(scope="module")
def case():
    rng = np.random.default_rng(0)
    logits = (rng.standard_normal((2, 7, 50257)) * 4).astype(np.float32)
    logits[0, 0, :100] = -1e9  # very negative logits, as masked or bf16-saturated rows may have
    targets = rng.integers(0, 50257, size=(2, 7)).astype(np.int32)
    targets[1, 3] = 50256
    return logits, targets


def test_token_losses_equal_numpy_and_tensorflow(case):
    logits, targets = case
    ours = token_losses(tf.constant(logits), tf.constant(targets)).numpy()
    assert ours.shape == (2, 7)
    np.testing.assert_allclose(ours, numpy_losses(logits, targets), rtol=1e-5, atol=1e-5)
    tf_losses = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=targets, logits=logits)
    np.testing.assert_allclose(ours, tf_losses.numpy(), rtol=1e-5, atol=1e-5)


def test_loss_and_gradient_equal_tensorflow(case):
    logits, targets = (tf.constant(t) for t in case)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(logits)
        ours = loss_fn(logits, targets) * 3.0  # an upstream gradient other than 1
        ref = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
            labels=targets, logits=logits)) * 3.0  # fmt: skip
    np.testing.assert_allclose(ours.numpy(), ref.numpy(), rtol=1e-6)
    g_ours, g_ref = tape.gradient(ours, logits).numpy(), tape.gradient(ref, logits).numpy()
    assert np.abs(g_ref).max() > 1e-3
    np.testing.assert_allclose(g_ours, g_ref, rtol=1e-5, atol=1e-8)


def test_loss_in_a_compiled_step_with_a_two_dimensional_batch():
    """Inside a tf.function (as the training step calls it), rows of any batch shape."""
    rng = np.random.default_rng(1)
    logits = tf.constant(rng.standard_normal((3, 50)).astype(np.float32))
    targets = tf.constant(rng.integers(0, 50, size=3).astype(np.int32))

    @tf.function
    def both(logits):
        with tf.GradientTape() as tape:
            tape.watch(logits)
            loss = loss_fn(logits, targets)
        return loss, tape.gradient(loss, logits)

    loss, grad = both(logits)
    probs = tf.nn.softmax(logits).numpy()
    expected = (probs - np.eye(50)[targets.numpy()]) / 3
    np.testing.assert_allclose(grad.numpy(), expected, atol=1e-7)
    np.testing.assert_allclose(loss.numpy(), numpy_losses(logits.numpy(), targets.numpy()).mean(),
                               rtol=1e-6)  # fmt: skip


def test_bf16_logits_give_what_casting_them_to_float32_gives(case):
    """The bf16 training step hands bf16 logits to the loss (no float32 copy): the loss must be the
    float32 loss of those logits and the gradient what the cast's gradient rounds it to."""
    logits = tf.cast(tf.constant(case[0][:, :, :3000]), tf.bfloat16)
    targets = tf.constant(case[1] % 3000)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(logits)
        ours = loss_fn(logits, targets)
        ref = loss_fn(tf.cast(logits, tf.float32), targets)
    assert ours.dtype == tf.float32
    np.testing.assert_allclose(ours.numpy(), ref.numpy(), rtol=1e-6)
    g_ours, g_ref = tape.gradient(ours, logits), tape.gradient(ref, logits)
    assert g_ours.dtype == tf.bfloat16
    np.testing.assert_array_equal(g_ours.numpy().astype(np.float32),
                                  g_ref.numpy().astype(np.float32))
    assert np.abs(g_ref.numpy().astype(np.float32)).max() > 1e-3
