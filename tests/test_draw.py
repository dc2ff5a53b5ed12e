"""`draw` on hand-made logits: which tokens each filter keeps, and how draws behave."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from gpt2easy import draw

NEG = -np.inf
# One row, probabilities 0.4 0.3 0.2 0.1 (as logits), plus a row with a tie.
PROBS = np.array([[0.1, 0.4, 0.2, 0.3]])
LOGITS = np.log(PROBS).astype(np.float32)


def kept(filtered) -> list[list[int]]:
    return [list(np.flatnonzero(np.isfinite(row))) for row in np.asarray(filtered)]


@pytest.mark.parametrize(
    "k, expected", [(0, [0, 1, 2, 3]), (1, [1]), (2, [1, 3]), (3, [1, 2, 3]), (4, [0, 1, 2, 3])]
)
def test_top_k_keeps_the_k_largest(k, expected):
    assert kept(draw.top_k_filter(LOGITS, k)) == [expected]


def test_top_k_keeps_ties_and_works_per_row():
    logits = np.array([[1.0, 3.0, 3.0, 0.0], [5.0, 4.0, 3.0, 2.0]], np.float32)
    assert kept(draw.top_k_filter(logits, 1)) == [[1, 2], [0]]


def test_top_k_handles_negative_and_infinite_logits():
    logits = np.array([[-5.0, -1.0, NEG, -3.0, -2.0]], np.float32)
    assert kept(draw.top_k_filter(logits, 2)) == [[1, 4]]


@pytest.mark.parametrize(
    "p, expected",
    [
        (0.0, [0, 1, 2, 3]),  # off
        (1.0, [0, 1, 2, 3]),  # off
        (0.3, [1]),  # 0.4 already reaches 0.3
        (0.4, [1]),  # reaching p exactly is enough
        (0.5, [1, 3]),  # 0.4 < 0.5: the crossing token (0.3) is kept
        (0.75, [1, 2, 3]),  # 0.7 < 0.75 -> add 0.2
        (0.95, [0, 1, 2, 3]),
    ],
)
def test_top_p_keeps_the_token_that_crosses_p(p, expected):
    assert kept(draw.top_p_filter(LOGITS, p)) == [expected]


def test_top_p_per_row():
    logits = np.log(np.array([[0.7, 0.1, 0.1, 0.1], [0.25, 0.25, 0.25, 0.25]], np.float32))
    assert kept(draw.top_p_filter(logits, 0.6)) == [[0], [0, 1, 2, 3]]


def test_repetition_penalty_is_ctrl_style():
    logits = np.array([[2.0, -2.0, 2.0, -2.0]], np.float32)
    seen = np.array([[True, True, False, False]])
    out = draw.repetition_penalty(logits, seen, 2.0).numpy()
    np.testing.assert_allclose(out, [[1.0, -4.0, 2.0, -2.0]])
    np.testing.assert_allclose(draw.repetition_penalty(logits, seen, 1.0).numpy(), logits)


def test_uniform_noise_is_a_pure_function_of_the_seed():
    a = draw.uniform_noise([3, 1000], tf.constant([7, 1], tf.int64)).numpy()
    b = draw.uniform_noise([3, 1000], tf.constant([7, 1], tf.int64)).numpy()
    c = draw.uniform_noise([3, 1000], tf.constant([7, 2], tf.int64)).numpy()
    np.testing.assert_array_equal(a, b)
    assert (a > 0).all() and (a < 1).all() and abs(a.mean() - 0.5) < 0.03
    assert np.mean(a == c) < 0.01


def draws(logits, n=4000, **kw):
    """n draws from one row, each with its own seed; counts per token."""
    batch = np.repeat(np.asarray(logits, np.float32), n, axis=0)
    tokens = draw.sample_tokens(batch, tf.constant([11, 0], tf.int64), **kw).numpy()
    return np.bincount(tokens, minlength=batch.shape[1])


@pytest.mark.parametrize("top_k", [0, 3])  # the general path and the fast (top_k <= 64) path
def test_draws_follow_the_softmax(top_k):
    counts = draws(LOGITS, top_k=top_k if top_k else 0)
    expected = PROBS[0].copy()
    if top_k:
        expected[0] = 0
        expected /= expected.sum()
    np.testing.assert_allclose(counts / counts.sum(), expected, atol=0.03)


def test_draws_respect_filters_on_both_paths():
    logits = np.log(np.array([[0.05, 0.35, 0.25, 0.2, 0.15]], np.float32))
    assert set(np.flatnonzero(draws(logits, top_k=2))) == {1, 2}
    assert set(np.flatnonzero(draws(logits, top_p=0.55))) == {1, 2}  # general path
    assert set(np.flatnonzero(draws(logits, top_k=4, top_p=0.55))) == {1, 2}  # fast path
    assert set(np.flatnonzero(draws(logits, top_k=4, top_p=0.99))) == {1, 2, 3, 4}


def test_temperature_zero_is_greedy_and_never_divides_by_zero():
    logits = np.array([[0.0, 3.0, 1.0], [2.0, -1.0, 1.9]], np.float32)
    seed = tf.constant([1, 2], tf.int64)
    for k, p in [(0, 1.0), (2, 0.5)]:
        out = draw.sample_tokens(logits, seed, temperature=0.0, top_k=k, top_p=p).numpy()
        assert out.tolist() == [1, 0]


def test_low_temperature_sharpens():
    near_greedy = draws(LOGITS, temperature=0.01)  # odds of the runner-up: e**-29
    assert near_greedy[1] == near_greedy.sum()
    flat = draws(LOGITS, temperature=100.0)
    assert flat.min() > 800  # close to uniform over 4 tokens


def test_penalty_changes_the_greedy_choice():
    logits = np.array([[2.0, 1.5, 0.0]], np.float32)
    seen = np.array([[True, False, False]])
    seed = tf.constant([0, 0], tf.int64)
    out = draw.sample_tokens(logits, seed, temperature=0.0, penalty=2.0, seen=seen)
    assert out.numpy().tolist() == [1]


def test_same_seed_same_draws_under_xla_and_not():
    logits = tf.random.stateless_normal([4, 300], seed=[1, 1]) * 3
    seed = tf.constant([5, 9], tf.int64)

    def one(logits, k, p):
        return draw.sample_tokens(logits, seed, temperature=0.9, top_k=k, top_p=p)

    compiled = tf.function(one, jit_compile=True)
    for k, p in [(0, 1.0), (10, 0.8), (0, 0.7), (100, 1.0)]:
        eager = one(logits, tf.constant(k), tf.constant(p)).numpy()
        np.testing.assert_array_equal(eager, compiled(logits, tf.constant(k), tf.constant(p)))
    assert compiled.experimental_get_tracing_count() == 1  # controls are tensors: no retrace


# --- the order of top-k and top-p ---------------------------------------------------------------


def kept_k_then_p(probs: np.ndarray, k: int, p: float) -> set[int]:
    """NumPy reference of the documented order: top-k, renormalize, then the nucleus of what is left."""
    order = np.argsort(-probs, kind="stable")[:k]
    mass = probs[order] / probs[order].sum()
    n = int(np.searchsorted(np.cumsum(mass), p)) + 1  # the token that reaches p is kept
    return set(order[:n].tolist())


def kept_p_then_k(probs: np.ndarray, k: int, p: float) -> set[int]:
    """The other order (nucleus of the whole distribution, then the k largest of it)."""
    order = np.argsort(-probs, kind="stable")
    n = int(np.searchsorted(np.cumsum(probs[order]), p)) + 1
    return set(order[: min(n, k)].tolist())


def orders_disagree(n_vocab: int, k: int) -> tuple[np.ndarray, float]:
    """Probabilities (distinct, no ties) and a p for which the two orders keep different sets: one
    large token just under p of the whole mass, which reaches p only once the tail beyond k is cut."""
    rng = np.random.default_rng(0)
    probs = np.concatenate([[0.5], rng.uniform(1.0, 2.0, k - 1) * 0.4 / (k - 1),
                            rng.uniform(0.1, 0.5, n_vocab - k) * 0.1 / (n_vocab - k)])
    probs = probs / probs.sum()
    head = probs[0] / np.sort(probs)[::-1][:k].sum()  # its share after top-k
    return probs, float((probs[0] + head) / 2)


@pytest.mark.parametrize("n_vocab, k", [(8, 3), (200, 100)])  # fast path (k <= 64) and general path
def test_top_k_applies_before_top_p(n_vocab, k):
    probs, p = orders_disagree(n_vocab, k)
    expected = kept_k_then_p(probs, k, p)
    assert expected != kept_p_then_k(probs, k, p)  # the case tells the orders apart
    assert expected == {0}
    counts = draws(np.log(probs)[None, :], n=2000, top_k=k, top_p=p)
    assert set(np.flatnonzero(counts)) == expected
    filtered = draw.top_p_filter(draw.top_k_filter(np.log(probs)[None, :].astype(np.float32), k), p)
    assert set(kept(filtered)[0]) == expected


def test_training_samples_let_top_p_replace_top_k(tmp_path, vocab_dir):
    """train.py's samples keep nshepperd's rule: --top_p > 0 replaces --top_k (top_k is then off)."""
    from gpt2easy.generate import Controls, Generator
    from gpt2easy.hparams import HParams
    from gpt2easy.model import GPT2, initial_weights
    from gpt2easy.sample_writer import SampleWriter

    hp = HParams(n_vocab=300, n_ctx=32, n_embd=32, n_head=2, n_layer=2)
    gpt = GPT2(hp, initial_weights(hp, 0))
    common = dict(seed=1, length=12, num=2, batch_size=2, precision="fp32", encoding="utf-8")

    def reference(top_k: int, top_p: float) -> np.ndarray:
        gen = Generator(gpt, "fp32")
        controls = Controls.make(seed=(1, 2), temperature=1.0, top_k=top_k, top_p=top_p)
        prompts = np.full([2, 1], 7, np.int32)
        return np.stack([t for t, _ in gen.generate(prompts, 12, controls)], axis=1)

    got = SampleWriter(gpt, vocab_dir, tmp_path, top_k=1, top_p=0.95, **common).generate(7, (1, 2))[:, 1:]
    np.testing.assert_array_equal(got, reference(0, 0.95))
    assert not np.array_equal(got, reference(1, 0.95))  # top_k 1 would be greedy
    got = SampleWriter(gpt, vocab_dir, tmp_path, top_k=1, top_p=0.0, **common).generate(7, (1, 2))[:, 1:]
    np.testing.assert_array_equal(got, reference(1, 1.0))


@pytest.mark.parametrize("shape", [(3, 5, 7), (2, 50257), (1, 64)])
def test_quick_softmax_is_tf_softmax_bit_for_bit_under_xla(shape):
    # quick_ops.softmax stands in for tf.nn.softmax in the compiled decoder (it compiles ~50x
    # faster): under XLA it must give exactly the same numbers, masked (-1e10) and -inf entries too.
    from gpt2easy.quick_ops import softmax

    rng = np.random.default_rng(sum(shape))
    x = (rng.standard_normal(shape) * 4).astype(np.float32)
    x[rng.random(shape) < 0.2] = -1e10
    x[rng.random(shape) < 0.2] = -np.inf
    x[..., 0] = 1.0  # every row keeps something
    compiled = lambda f: tf.function(f, jit_compile=True, autograph=False)  # noqa: E731
    ours = compiled(softmax)(x).numpy()
    theirs = compiled(lambda t: tf.nn.softmax(t, axis=-1))(x).numpy()
    assert np.array_equal(ours, theirs)
    np.testing.assert_allclose(softmax(tf.constant(x)).numpy(), theirs, rtol=1e-5, atol=1e-12)
    unknown = tf.TensorSpec([None] * len(shape), tf.float32)  # shapes known only when it runs
    dynamic = tf.function(softmax, input_signature=[unknown], autograph=False)
    np.testing.assert_allclose(dynamic(x).numpy(), theirs, rtol=1e-5, atol=1e-12)
