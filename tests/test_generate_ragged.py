"""Prompts of different lengths in one batch: each row gives what its prompt gives alone (same seed),
the compiled functions are not traced again, and the many-prompts library entry point."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from gpt2easy import bulk, draw, sample
from gpt2easy.generate import Controls, Generator
from gpt2easy.hparams import HParams
from gpt2easy.model import GPT2, model

HP = HParams(n_vocab=80, n_ctx=40, n_embd=16, n_head=2, n_layer=2)
PROMPTS = [[5], [1, 2, 3, 4], [9, 8, 7, 6, 5, 4, 3, 2, 1], list(range(20, 37))]  # 1, 4, 9, 17


@pytest.fixture(scope="module")
def gpt2():
    return GPT2(HP, seed=11)


@pytest.fixture(scope="module")
def generator(gpt2):
    return Generator(gpt2, "fp32")


def tokens_of(steps):
    steps = list(steps)
    return np.stack([t for t, _ in steps], axis=1), np.stack([d for _, d in steps], axis=1)


@pytest.fixture(scope="module")
def generator_bf16(gpt2):
    return Generator(gpt2, "bf16")


def test_row_noise_is_a_row_of_the_whole_batch_noise():
    seed = tf.constant([7, 3], tf.int64)
    whole = draw.uniform_noise([4, 50], seed).numpy()
    seeds = tf.constant([[7, 3]] * 4, tf.int64)
    np.testing.assert_array_equal(draw.row_noise(seeds, tf.constant([0, 1, 2, 3]), 50), whole)
    mixed = draw.row_noise(tf.constant([[7, 3], [1, 1]], tf.int64), tf.constant([2, 0]), 50)
    np.testing.assert_array_equal(mixed[0], whole[2])
    np.testing.assert_array_equal(mixed[1], draw.uniform_noise([1, 50], tf.constant([1, 1]))[0])


SETTINGS = [
    dict(temperature=0.0),
    dict(temperature=1.0),
    dict(temperature=0.9, top_k=5),
    dict(temperature=1.0, top_p=0.8),
    dict(temperature=1.2, top_k=30, top_p=0.9, penalty=1.3),
    dict(temperature=0.7, top_k=70, penalty=0.8),  # top_k above the fast path: the general path
]


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("controls", SETTINGS)
def test_each_row_equals_its_prompt_alone(generator, generator_bf16, precision, controls):
    """bf16 batches run on float32 copies of the bf16 weights ("wide"), batch 1 on bf16 itself."""
    generator = generator if precision == "fp32" else generator_bf16
    length = 12
    alone = [tokens_of(generator.generate([p], length, Controls.make(seed=(7, s), **controls)))[0][0]
             for s, p in enumerate(PROMPTS)]  # fmt: skip
    # row r is sample r of its prompt: stream r, lane 0 (the order of the rows does not matter)
    order = [2, 0, 3, 1]
    tokens, _ = tokens_of(generator.generate([PROMPTS[r] for r in order], length,
                                             Controls.make(seed=(7, 0), **controls),
                                             streams=order, lanes=[0] * 4))  # fmt: skip
    for row, r in enumerate(order):
        assert tokens[row].tolist() == alone[r].tolist(), (row, r)


def test_greedy_rows_are_the_models_argmax(gpt2, generator):
    tokens, _ = tokens_of(generator.generate(PROMPTS, 8, Controls.make(temperature=0.0)))
    for row, prompt in enumerate(PROMPTS):
        seq = list(prompt)
        for _ in range(8):
            logits, _ = model(gpt2.params(), tf.constant([seq]), HP)
            seq.append(int(np.argmax(logits[0, -1])))
        assert tokens[row].tolist() == seq[len(prompt):]


def test_default_rows_keep_the_old_rule(generator):
    """Without streams/lanes, row r of equal-length prompts draws as it always did (lane r)."""
    same = [[1, 2, 3]] * 3
    controls = Controls.make(seed=(5, 2), top_k=20)
    tokens, _ = tokens_of(generator.generate(np.array(same), 10, controls))
    again, _ = tokens_of(generator.generate(same, 10, controls, streams=[0] * 3, lanes=[0, 1, 2]))
    np.testing.assert_array_equal(tokens, again)
    assert len({tuple(t) for t in tokens.tolist()}) == 3


def test_rows_stop_at_eos_as_alone(generator):
    greedy = [tokens_of(generator.generate([p], 12, Controls.make(temperature=0.0)))[0][0] for p in PROMPTS]
    eos = int(greedy[1][4])
    tokens, done = tokens_of(generator.generate(PROMPTS, 12, Controls.make(temperature=0.0, eos=eos),
                                                streams=[0] * 4, lanes=[0] * 4))  # fmt: skip
    for row, g in enumerate(greedy):
        g = g.tolist()
        stop = g.index(eos) if eos in g else len(g)
        assert tokens[row, : stop + 1].tolist() == g[: stop + 1]
        assert done[row, stop:].all() and not done[row, :stop].any()


def test_ragged_batches_do_not_retrace(generator):
    list(generator.generate(PROMPTS, 10, Controls.make(seed=(1, 0))))
    compiled = generator.compiled[(4, HP.n_ctx)]
    steps = compiled.step.experimental_get_tracing_count()
    others = [[3, 3], [4] * 16, [1], [7, 7, 7, 7, 7]]  # longest 16: the other prompt bucket
    list(generator.generate(others, 6, Controls.make(seed=(2, 0), top_p=0.9), streams=[1, 2, 3, 4],
                            lanes=[0] * 4))  # fmt: skip
    list(generator.generate(PROMPTS[::-1], 9, Controls.make(temperature=0.0)))
    assert compiled.step.experimental_get_tracing_count() == steps == 1
    assert compiled.prefill.experimental_get_tracing_count() <= 2  # one per prompt bucket (16, 32)


# --- the library entry point ----------------------------------------------------------------

BIG = HParams(n_vocab=50257, n_ctx=64, n_embd=16, n_head=2, n_layer=2)


@pytest.fixture(scope="module")
def big_generator():
    return Generator(GPT2(BIG, seed=3), "fp32")


def alone(generator, encoder, prompt, settings, j):
    """Sample j + 1 of the interactive script with --batch_size 1: batch j, row 0."""
    ids = bulk.prompt_ids(encoder, prompt, settings, BIG.n_ctx)
    events = sample.sample_batch(generator, encoder, ids, 1, settings, j)
    return "".join(piece for _, piece, _ in events)


@pytest.mark.parametrize("kw", [dict(temperature=0.0), dict(top_k=40, stop=("a", "\n")),
                                dict(top_p=0.9, repetition_penalty=1.2, stop=("the",))])  # fmt: skip
def test_generate_texts_equals_each_prompt_alone(big_generator, fast, kw):
    prompts = ["Hello", "", "It was the best of times, it was the worst of times,", "A B C D"]
    settings = sample.Settings(length=10, seed=123, **kw)
    got = bulk.generate_texts(big_generator, fast, prompts, settings, batch_size=3, nsamples=2)
    assert [(s.prompt, s.index) for s in got] == [(p, j) for p in prompts for j in range(2)]
    for s in got:
        assert s.text == alone(big_generator, fast, s.prompt, settings, s.index), (s.prompt, s.index)
        assert s.seed == 123 and 1 <= s.tokens <= 10
        assert not any(stop in s.text for stop in settings.stop)
    if settings.temperature > 0:
        assert got[0].text != got[1].text  # two samples of one prompt differ


def test_generate_texts_skips_and_reports_batches(big_generator, fast):
    settings = sample.Settings(length=4, seed=1, top_k=10)
    seen = []
    got = bulk.generate_texts(big_generator, fast, ["a", "b", "c"], settings, batch_size=2,
                              lines=[10, 20, 30], skip={(20, 0)}, on_batch=seen.append)  # fmt: skip
    assert [(s.line, s.prompt) for s in got] == [(10, "a"), (30, "c")]
    assert [len(b) for b in seen] == [2]
