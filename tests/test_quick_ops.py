"""quick_ops.gelu and quick_ops.layer_norm: as accurate as model.gelu and model.norm under XLA."""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf

from gpt2easy import model, quick_ops


def ulps(got: np.ndarray, exact: np.ndarray) -> float:
    """Largest error in units in the last place of float32 (at the exact value's magnitude)."""
    spacing = np.spacing(np.abs(exact).astype(np.float32)).astype(np.float64)
    return float(np.max(np.abs(got.astype(np.float64) - exact) / spacing))


def test_tanh_and_gelu_match_float64_as_closely_as_tensorflows_own():
    y = np.concatenate([np.linspace(-12, 12, 200_001), np.linspace(-1e-4, 1e-4, 2001),
                        [0.0, -0.0, 30.0, -30.0]]).astype(np.float32)
    both = tf.function(lambda v: (tf.tanh(v), quick_ops.tanh(v), model.gelu(v),
                                  quick_ops.gelu(v)), jit_compile=True)
    tanh_tf, tanh_quick, gelu_tf, gelu_quick = [t.numpy() for t in both(tf.constant(y))]
    y64 = y.astype(np.float64)
    exact_tanh = np.tanh(y64)
    assert ulps(tanh_quick, exact_tanh) <= max(8.0, ulps(tanh_tf, exact_tanh) + 2)
    assert np.all(np.sign(tanh_quick) == np.sign(exact_tanh))
    exact_gelu = 0.5 * y64 * (1 + np.tanh(math.sqrt(2 / math.pi) * (y64 + 0.044715 * y64**3)))
    # 1 + tanh(z) cancels for very negative inputs in both: errors there are absolute, ~3e-7
    assert np.max(np.abs(gelu_quick - exact_gelu)) <= 2 * np.max(np.abs(gelu_tf - exact_gelu))
    np.testing.assert_allclose(gelu_quick, exact_gelu, rtol=2e-6, atol=1e-6)
    np.testing.assert_allclose(gelu_quick, gelu_tf, rtol=2e-6, atol=1e-6)


def test_layer_norm_matches_model_norm():
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((6, 768)) * rng.uniform(1e-3, 50, (6, 1))).astype(np.float32)
    g = rng.standard_normal(768).astype(np.float32)
    b = rng.standard_normal(768).astype(np.float32)
    both = tf.function(lambda *a: (model.norm(*a), quick_ops.layer_norm(*a)), jit_compile=True)
    ref, quick = [t.numpy() for t in both(x, g, b)]
    x64 = x.astype(np.float64)
    exact = (x64 - x64.mean(-1, keepdims=True)) / np.sqrt(x64.var(-1, keepdims=True) + 1e-5) * g + b
    np.testing.assert_allclose(quick, exact, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(quick, ref, rtol=1e-5, atol=1e-5)
