"""Cached generation with cache buckets shorter than n_ctx, as 124M (n_ctx 1024) uses them: a model
with n_ctx 512 and prompts on both sides of the 128/256/384 edges, each step's logits compared with
an uncached full forward pass over the whole sequence so far (the model itself, checked against
NumPy in test_model.py). The decode step attends over the first 64, 128, 256, ... cache positions,
the smallest width past its position: the cases step across those edges too."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from test_model import random_weights

from gpt2easy.generate import Controls, Generator, cache_bucket, prompt_bucket
from gpt2easy.hparams import HParams
from gpt2easy.model import GPT2, model

HP = HParams(n_vocab=64, n_ctx=512, n_embd=16, n_head=2, n_layer=2)

# (prompt tokens, new tokens): cache buckets 128, 256 (129 positions: one past the edge; prompt
# under and over 128), 384, 512; steps across the decode step's attention widths 64, 128, 256.
CASES = [(50, 30), (100, 28), (120, 10), (120, 20), (130, 12), (250, 20), (300, 40), (500, 13)]


@pytest.fixture(scope="module")
def gpt2():
    return GPT2(HP, random_weights(HP, seed=2))


def test_the_cases_cover_the_buckets():
    caches = {cache_bucket(n + length - 1, HP.n_ctx) for n, length in CASES}
    assert caches == {128, 256, 384, 512}
    assert any(prompt_bucket(n, cache_bucket(n + k - 1, HP.n_ctx)) > 128 for n, k in CASES)


@pytest.mark.parametrize("n, length", CASES)
def test_cached_steps_equal_the_uncached_forward(gpt2, n, length):
    generator = Generator(gpt2, "fp32")
    prompt = np.random.default_rng(n).integers(0, HP.n_vocab, size=n).tolist()
    greedy = Controls.make(temperature=0.0)
    compiled, state = generator.start(np.array([prompt]), length, greedy)
    assert (1, cache_bucket(n + length - 1, HP.n_ctx)) in generator.compiled
    tokens = list(prompt)
    for k in range(length):
        full, _ = model(gpt2.params(), tf.constant([tokens], tf.int32), HP)
        expected = full[0, -1].numpy()
        np.testing.assert_allclose(state.logits[0].numpy(), expected, atol=1e-4, rtol=0)
        assert int(state.token[0]) == int(np.argmax(expected))
        tokens.append(int(state.token[0]))
        if k < length - 1:
            state = compiled.step(state, greedy)
