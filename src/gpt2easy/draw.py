"""Turning next-token logits into a token: repetition penalty, temperature, top-k, top-p, a draw.

Small pure TensorFlow functions on float32 logits `[batch, n_vocab]`. Every control is a tensor, so
changing it never retraces a compiled function, and everything compiles under XLA: no full sort of
the vocabulary (XLA's CPU sort of 50257 values costs about as much as a quarter of a forward pass).
Thresholds are found instead by bisection on the floats' bit patterns (exact, about 32 passes over
the row), and the noise for the draw comes from an integer hash rather than `stateless_uniform`,
whose XLA CPU code is about 60 times slower than the rest of the sampler.

Conventions (those of HuggingFace `transformers` and nshepperd's top-p, not OpenAI's master):
- `temperature` 0 means greedy (argmax); nothing is ever divided by zero.
- `top_k` 0 means off. Tokens tied with the k-th largest logit are kept too (as OpenAI's code does).
- `top_p` 0 or 1 means off. The nucleus is the smallest set of most likely tokens whose mass reaches
  p, *including* the token that crosses p; the most likely token is always kept.
- With both, top-k is applied first, then top-p over what is left (renormalised).
- `repetition_penalty` (1 = off) is CTRL's: logits of tokens already in the prompt or the generated
  text are divided by it when positive and multiplied by it when negative. It comes first.
- The draw is Gumbel-max on stateless uniform noise (`argmax(logits / T + Gumbel)`, the same
  distribution as a softmax draw): the same seed always gives the same token.
"""

from __future__ import annotations

import tensorflow as tf

from .quick_ops import softmax

NEG_INF = float("-inf")
FAST_K = 64  # 0 < top_k <= FAST_K: sample among the FAST_K largest logits (the fast path)


def sortable_keys(logits: tf.Tensor) -> tf.Tensor:
    """int32 keys whose order is the order of the float32 logits (-inf included)."""
    bits = tf.bitcast(logits, tf.int32)
    return tf.where(bits < 0, tf.bitwise.bitwise_xor(bits, tf.int32.max), bits)


def _bisect_keys(keys: tf.Tensor, ok) -> tf.Tensor:
    """Per row, the largest key t with `ok(keys >= t)` true, assuming ok holds at the row minimum
    and is monotone (true below some t, false above). `keys` int32 [batch, n]; returns [batch]."""
    lo = tf.reduce_min(keys, axis=-1)
    hi = tf.reduce_max(keys, axis=-1)

    def body(lo, hi):
        mid = lo + tf.cast((tf.cast(hi, tf.int64) - tf.cast(lo, tf.int64) + 1) // 2, tf.int32)
        good = ok(keys >= mid[:, None])
        return tf.where(good, mid, lo), tf.where(good, hi, mid - 1)

    lo, _ = tf.while_loop(lambda lo, hi: tf.reduce_any(lo < hi), body, (lo, hi))
    return lo


def top_k_filter(logits: tf.Tensor, k: tf.Tensor) -> tf.Tensor:
    """Keep the `k` largest logits of each row (and ties with the k-th), set the rest to -inf."""
    k = tf.convert_to_tensor(k, tf.int32)

    def apply():
        keys = sortable_keys(logits)
        count_ok = lambda keep: tf.reduce_sum(tf.cast(keep, tf.int32), axis=-1) >= k  # noqa: E731
        t = _bisect_keys(keys, count_ok)
        return tf.where(keys >= t[:, None], logits, NEG_INF)

    return tf.cond((k > 0) & (k < logits.shape[-1]), apply, lambda: tf.identity(logits))


def top_p_filter(logits: tf.Tensor, p: tf.Tensor) -> tf.Tensor:
    """Keep the nucleus: the most likely tokens until their mass reaches `p`, the crossing one
    included (ties with the last kept logit too); set the rest to -inf. p <= 0 or >= 1: off."""
    p = tf.convert_to_tensor(p, tf.float32)

    def apply():
        probs = softmax(logits)
        keys = sortable_keys(logits)
        mass_ok = lambda keep: tf.reduce_sum(tf.where(keep, probs, 0.0), axis=-1) >= p  # noqa: E731
        t = _bisect_keys(keys, mass_ok)
        return tf.where(keys >= t[:, None], logits, NEG_INF)

    return tf.cond((p > 0.0) & (p < 1.0), apply, lambda: tf.identity(logits))


def repetition_penalty(logits: tf.Tensor, seen: tf.Tensor, penalty: tf.Tensor) -> tf.Tensor:
    """CTRL's penalty on tokens already seen (`seen` bool [batch, n_vocab]); 1.0 = unchanged."""
    penalty = tf.convert_to_tensor(penalty, tf.float32)
    penalised = tf.where(logits > 0, logits / penalty, logits * penalty)
    return tf.where(seen, penalised, logits)


def _mix32(x: tf.Tensor) -> tf.Tensor:
    """MurmurHash3's 32-bit finaliser: a bijection on uint32 that spreads every input bit."""
    x = tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, 16)) * tf.constant(0x85EBCA6B, tf.uint32)
    x = tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, 13)) * tf.constant(0xC2B2AE35, tf.uint32)
    return tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, 16))


def _key(seed0: tf.Tensor, seed1: tf.Tensor) -> tf.Tensor:
    """The uint32 hash key of the int64 seed pair (seed0, seed1) (any matching shapes)."""
    words = [tf.cast(tf.bitwise.bitwise_and(w, 0xFFFFFFFF), tf.uint32) for w in
             (seed0, tf.bitwise.right_shift(seed0, 32), seed1, tf.bitwise.right_shift(seed1, 32))]
    key = tf.constant(0x9E3779B9, tf.uint32)
    for w in words:
        key = _mix32(tf.bitwise.bitwise_xor(key, w) + tf.constant(0x7F4A7C15, tf.uint32))
    return key


def _bits_to_uniform(index: tf.Tensor, key: tf.Tensor) -> tf.Tensor:
    bits = _mix32(_mix32(tf.bitwise.bitwise_xor(index * tf.constant(0x9E3779B9, tf.uint32), key)))
    return (tf.cast(tf.bitwise.right_shift(bits, 8), tf.float32) + 0.5) * (1.0 / (1 << 24))


def uniform_noise(shape, seed: tf.Tensor) -> tf.Tensor:
    """Uniform floats in (0, 1), a pure function of (seed int64 [2], element index): the same on
    every machine, under XLA or not, whatever ran before."""
    seed = tf.cast(seed, tf.int64)
    key = _key(seed[0], seed[1])
    index = tf.cast(tf.reshape(tf.range(tf.reduce_prod(shape)), shape), tf.uint32)
    return _bits_to_uniform(index, key)


def row_noise(seeds: tf.Tensor, lanes: tf.Tensor, n: int) -> tf.Tensor:
    """Uniform noise [rows, n] where row r is elements `lanes[r] * n ... lanes[r] * n + n - 1` of
    `uniform_noise` with seed `seeds[r]` (int64 [rows, 2]): rows of one batch can each draw the
    noise they would draw at another row of another batch (a row of a many-prompt batch draws
    what its prompt's run alone draws)."""
    seeds = tf.cast(seeds, tf.int64)
    key = _key(seeds[:, 0], seeds[:, 1])[:, None]
    lanes = tf.cast(lanes, tf.uint32)[:, None]
    index = lanes * tf.cast(n, tf.uint32) + tf.cast(tf.range(n), tf.uint32)[None, :]
    return _bits_to_uniform(index, key)


def gumbel_noise(shape, seed: tf.Tensor, lanes: tf.Tensor | None = None) -> tf.Tensor:
    """Standard Gumbel noise [rows, n]: from a stateless seed (int64 [2]) over the whole shape,
    or, with `lanes`, per row from seeds int64 [rows, 2] (see `row_noise`)."""
    if lanes is None:
        uniform = uniform_noise(shape, seed)
    else:
        uniform = row_noise(seed, lanes, shape[-1])
    return -tf.math.log(-tf.math.log(uniform))


def _draw_full(logits, seed, top_k, top_p, lanes):
    """The general path: filters by bisection over the whole vocabulary, Gumbel-max draw."""
    filtered = top_p_filter(top_k_filter(logits, top_k), top_p)
    noisy = filtered + gumbel_noise(_shape(filtered), seed, lanes)
    return tf.argmax(noisy, axis=-1, output_type=tf.int32)


def _shape(t):
    """Static where known (row_noise needs the row length), dynamic otherwise."""
    return t.shape if t.shape.is_fully_defined() else tf.shape(t)


def _draw_top(logits, seed, top_k, top_p, lanes):
    """The fast path for 0 < top_k <= FAST_K: everything on the FAST_K largest logits of each row
    (ties with the k-th that rank beyond FAST_K are dropped)."""
    values, ids = tf.math.top_k(logits, min(FAST_K, logits.shape[-1]))
    rank = tf.range(values.shape[-1])
    kth = tf.reduce_min(tf.where(rank < top_k, values, float("inf")), axis=-1, keepdims=True)
    values = tf.where(values >= kth, values, NEG_INF)
    probs = softmax(values)
    before = tf.cumsum(probs, axis=-1, exclusive=True)
    nucleus = (top_p <= 0.0) | (top_p >= 1.0) | (before < top_p)
    values = tf.where(nucleus, values, NEG_INF)
    noisy = values + gumbel_noise(_shape(values), seed, lanes)
    pick = tf.argmax(noisy, axis=-1, output_type=tf.int32)
    return tf.gather(ids, pick, batch_dims=1)


def sample_tokens(logits, seed, *, temperature=1.0, top_k=0, top_p=1.0, penalty=1.0, seen=None,
                  lanes=None):  # fmt: skip
    """Draw one token per row from float32 logits [batch, n_vocab] -> int32 [batch].

    `seed` is an int64 [2] stateless seed: the same seed and inputs always give the same tokens;
    row r draws noise elements r * n ... of that seed. With `lanes` (int [batch]), `seed` is one
    seed per row (int64 [batch, 2]) and row r draws elements lanes[r] * n ... of its seed.
    `seen` (bool [batch, n_vocab]) marks the tokens the repetition penalty applies to.
    """
    logits = tf.convert_to_tensor(logits, tf.float32)
    temperature = tf.convert_to_tensor(temperature, tf.float32)
    top_k = tf.convert_to_tensor(top_k, tf.int32)
    top_p = tf.convert_to_tensor(top_p, tf.float32)
    if seen is not None:
        logits = repetition_penalty(logits, seen, penalty)

    def draw():
        scaled = logits / tf.where(temperature > 0, temperature, 1.0)
        fast = (top_k > 0) & (top_k <= min(FAST_K, logits.shape[-1]))
        return tf.cond(
            fast,
            lambda: _draw_top(scaled, seed, top_k, top_p, lanes),
            lambda: _draw_full(scaled, seed, top_k, top_p, lanes),
        )

    def greedy():
        return tf.argmax(logits, axis=-1, output_type=tf.int32)

    return tf.cond(temperature > 0, draw, greedy)
