"""The TF model and the compiled generator against an independent NumPy forward pass.

The reference below is written from OpenAI's description of GPT-2 (pre-norm blocks, layer norm with
biased variance and eps 1e-5, tanh GELU, causal softmax attention, tied output embedding), in
float64, one head and one position at a time where that is clearer; it shares no code with
gpt2easy.model or gpt2easy.generate.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import tensorflow as tf

from gpt2easy.generate import Controls, Generator
from gpt2easy.hparams import HParams
from gpt2easy.model import GPT2, model, weight_shapes

HP = HParams(n_vocab=96, n_ctx=48, n_embd=24, n_head=3, n_layer=2)


def random_weights(hp: HParams, seed: int = 0) -> dict[str, np.ndarray]:
    """Every weight random and non-trivial: biases far from 0, layer-norm gains far from 1."""
    rng = np.random.default_rng(seed)
    out = {}
    for name, shape in weight_shapes(hp).items():
        leaf = name.rsplit("/", 1)[-1]
        if leaf == "g":
            value = 1.0 + 0.3 * rng.standard_normal(shape)
        elif leaf == "b":
            value = 0.2 * rng.standard_normal(shape)
        else:
            value = 0.3 * rng.standard_normal(shape)
        out[name] = value.astype(np.float32)
    return out


def reference_logits(w: dict[str, np.ndarray], tokens: list[int], hp: HParams) -> np.ndarray:
    """NumPy GPT-2 forward pass in float64: logits [len(tokens), n_vocab]."""
    w = {k: v.astype(np.float64) for k, v in w.items()}
    t = len(tokens)

    def layer_norm(x, prefix):
        mu = x.mean(axis=-1, keepdims=True)
        var = ((x - mu) ** 2).mean(axis=-1, keepdims=True)
        return (x - mu) / np.sqrt(var + 1e-5) * w[prefix + "/g"] + w[prefix + "/b"]

    def dense(x, prefix):
        return x @ w[prefix + "/w"][0] + w[prefix + "/b"]

    def gelu(x):
        return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))

    x = w["model/wte"][tokens] + w["model/wpe"][:t]
    d = hp.n_embd // hp.n_head
    for i in range(hp.n_layer):
        p = f"model/h{i}"
        qkv = dense(layer_norm(x, p + "/ln_1"), p + "/attn/c_attn")
        q, k, v = np.split(qkv, 3, axis=-1)
        heads = []
        for h in range(hp.n_head):
            qh, kh, vh = (m[:, h * d : (h + 1) * d] for m in (q, k, v))
            out = np.zeros((t, d))
            for row in range(t):
                scores = kh[: row + 1] @ qh[row] / math.sqrt(d)  # keys up to this position
                probs = np.exp(scores - scores.max())
                out[row] = (probs / probs.sum()) @ vh[: row + 1]
            heads.append(out)
        x = x + dense(np.concatenate(heads, axis=-1), p + "/attn/c_proj")
        hidden = gelu(dense(layer_norm(x, p + "/ln_2"), p + "/mlp/c_fc"))
        x = x + dense(hidden, p + "/mlp/c_proj")
    return layer_norm(x, "model/ln_f") @ w["model/wte"].T


@pytest.fixture(scope="module")
def weights():
    return random_weights(HP, seed=1)


@pytest.fixture(scope="module")
def gpt2(weights):
    return GPT2(HP, weights)


def test_reference_is_not_trivial(weights):
    logits = reference_logits(weights, [1, 2, 3], HP)
    assert logits.std() > 1.0  # big enough that a wrong bias or gain cannot hide under 1e-4


def test_forward_equals_numpy_reference(weights, gpt2):
    rows = np.random.default_rng(2).integers(0, HP.n_vocab, size=(2, 11))
    logits, present = model(gpt2.params(), tf.constant(rows, tf.int32), HP)
    assert present.shape == (2, HP.n_layer, 2, HP.n_head, 11, HP.n_embd // HP.n_head)
    for r in range(2):
        np.testing.assert_allclose(logits[r].numpy(), reference_logits(weights, list(rows[r]), HP),
                                   atol=1e-4, rtol=0)  # fmt: skip


def test_cached_decoding_equals_full_forward(gpt2):
    tokens = tf.constant(np.random.default_rng(3).integers(0, HP.n_vocab, size=(2, 9)), tf.int32)
    full, _ = model(gpt2.params(), tokens, HP)
    logits, past = model(gpt2.params(), tokens[:, :4], HP)  # a prompt, then one token at a time
    steps = [logits]
    for i in range(4, 9):
        logits, present = model(gpt2.params(), tokens[:, i : i + 1], HP, past=past)
        past = tf.concat([past, present], axis=-2)
        steps.append(logits)
    np.testing.assert_allclose(tf.concat(steps, axis=1).numpy(), full.numpy(), atol=1e-5)


def test_future_tokens_do_not_change_earlier_logits(gpt2):
    a = np.arange(10, 20)[None]
    b = a.copy()
    b[0, 6:] = 0
    la, _ = model(gpt2.params(), tf.constant(a, tf.int32), HP)
    lb, _ = model(gpt2.params(), tf.constant(b, tf.int32), HP)
    np.testing.assert_allclose(la[:, :6].numpy(), lb[:, :6].numpy(), atol=1e-6)
    assert not np.allclose(la[:, 6:].numpy(), lb[:, 6:].numpy(), atol=1e-3)


def test_generator_prefill_and_steps_equal_reference(weights, gpt2):
    """The compiled path (padded prompt, cache variables, one-token steps) in fp32 is the model."""
    generator = Generator(gpt2, "fp32")
    prompt = [5, 17, 33, 2, 90]
    greedy = Controls.make(temperature=0.0)
    compiled, state = generator.start(np.array([prompt, prompt]), 6, greedy)
    tokens = list(prompt)
    for _ in range(5):
        expected = reference_logits(weights, tokens, HP)[-1]
        for r in range(2):
            np.testing.assert_allclose(state.logits[r].numpy(), expected, atol=1e-4, rtol=0)
        assert state.token.numpy().tolist() == [int(np.argmax(expected))] * 2
        tokens.append(int(state.token[0]))
        state = compiled.step(state, greedy)


def test_generator_bf16_is_close_to_fp32(weights, gpt2):
    prompt = np.array([[7, 8, 9, 10]])
    greedy = Controls.make(temperature=0.0)
    _, s32 = Generator(gpt2, "fp32").start(prompt, 4, greedy)
    _, s16 = Generator(gpt2, "bf16").start(prompt, 4, greedy)
    a, b = s32.logits.numpy(), s16.logits.numpy()
    assert np.abs(a - b).max() < 0.05 * np.abs(a).max()
    assert not np.array_equal(a, b)  # really computed in bf16
