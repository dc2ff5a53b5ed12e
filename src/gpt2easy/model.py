"""The GPT-2 graph in TensorFlow 2: pure functions over named weights, and one `tf.Module`.

The math is OpenAI's (`src/model.py` of openai/gpt-2): pre-norm blocks, layer norm with epsilon 1e-5
and biased variance, tanh GELU, a causal mask anchored at the bottom right so that queries also see
cached keys, and output logits tied to the token embedding `model/wte`.

Weights are a dict from OpenAI's checkpoint names (`model/h3/attn/c_attn/w`, shapes like
`[1, n_embd, 3 * n_embd]`) to tensors, so reading or writing an OpenAI checkpoint is a dict copy.
This module knows nothing of files or flags.

Mixed precision: with `compute_dtype=tf.bfloat16` the matmuls run in bf16 while the residual stream,
layer norms, softmax, logits and loss stay in float32 (the weights themselves stay float32).
"""

from __future__ import annotations

import functools
import math

import numpy as np
import tensorflow as tf

from .hparams import HParams

BLOCK_WEIGHTS = (
    "ln_1/g", "ln_1/b", "attn/c_attn/w", "attn/c_attn/b", "attn/c_proj/w", "attn/c_proj/b",
    "ln_2/g", "ln_2/b", "mlp/c_fc/w", "mlp/c_fc/b", "mlp/c_proj/w", "mlp/c_proj/b",
)  # fmt: skip
MASKED = -1e10  # what OpenAI's mask writes into masked attention scores
COMPUTE_DTYPES = {"fp32": tf.float32, "bf16": tf.bfloat16}  # --precision -> the matmuls' dtype


def weight_shapes(hp: HParams) -> dict[str, tuple[int, ...]]:
    """OpenAI's variable names and shapes for `hp`, in checkpoint order (148 for 124M)."""
    e = hp.n_embd
    per_block = {
        "ln_1/g": (e,), "ln_1/b": (e,),
        "attn/c_attn/w": (1, e, 3 * e), "attn/c_attn/b": (3 * e,),
        "attn/c_proj/w": (1, e, e), "attn/c_proj/b": (e,),
        "ln_2/g": (e,), "ln_2/b": (e,),
        "mlp/c_fc/w": (1, e, 4 * e), "mlp/c_fc/b": (4 * e,),
        "mlp/c_proj/w": (1, 4 * e, e), "mlp/c_proj/b": (e,),
    }  # fmt: skip
    shapes = {"model/wte": (hp.n_vocab, e), "model/wpe": (hp.n_ctx, e)}
    for i in range(hp.n_layer):
        shapes.update({f"model/h{i}/{k}": v for k, v in per_block.items()})
    shapes["model/ln_f/g"] = (e,)
    shapes["model/ln_f/b"] = (e,)
    return shapes


def initial_weights(hp: HParams, seed: int = 0) -> dict[str, np.ndarray]:
    """Fresh float32 weights: OpenAI's initialisers (N(0, 0.02) matrices, N(0, 0.01) positions,
    zero biases, unit gains), with the GPT-2 paper's 1/sqrt(2 * n_layer) on residual projections."""
    rng = np.random.default_rng(seed)
    out = {}
    for name, shape in weight_shapes(hp).items():
        leaf = name.rsplit("/", 1)[-1]
        if leaf == "g":
            value = np.ones(shape)
        elif leaf == "b":
            value = np.zeros(shape)
        else:
            std = 0.01 if name == "model/wpe" else 0.02
            if name.endswith("c_proj/w"):
                std /= math.sqrt(2 * hp.n_layer)
            value = rng.normal(0.0, std, size=shape)
        out[name] = value.astype(np.float32)
    return out


class GPT2(tf.Module):
    """Owns the model's float32 `tf.Variable`s, named exactly as in OpenAI's checkpoints."""

    def __init__(self, hp: HParams, weights: dict[str, np.ndarray] | None = None, seed: int = 0):
        super().__init__(name="gpt2")
        self.hparams = hp
        values = weights if weights is not None else initial_weights(hp, seed)
        self.weights = {
            name: tf.Variable(values[name], name=name, dtype=tf.float32)
            for name in weight_shapes(hp)
        }

    def params(self) -> dict[str, tf.Tensor]:
        """The weights as a name -> tensor dict, the form the pure functions take."""
        return dict(self.weights)

    def assign(self, values: dict[str, np.ndarray]) -> None:
        for name, var in self.weights.items():
            var.assign(values[name])


class FrozenGPT2:
    """A model's weights as read-only float32 tensors, for sampling (`generate.Generator`): the
    tensors read from a checkpoint serve as they are, without the copy into variables that
    training needs (500 MB, about 0.1 s of a 124M launch). Same `hparams` and `weights` as GPT2."""

    def __init__(self, hp: HParams, weights: dict):
        self.hparams = hp
        self.weights = {name: tf.convert_to_tensor(weights[name], tf.float32)
                        for name in weight_shapes(hp)}


# --- the math --------------------------------------------------------------------------------


def gelu(x: tf.Tensor) -> tf.Tensor:
    """GPT-2's tanh approximation of GELU."""
    return 0.5 * x * (1.0 + tf.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * tf.pow(x, 3))))


def norm(x: tf.Tensor, g: tf.Tensor, b: tf.Tensor, eps: float = 1e-5) -> tf.Tensor:
    """Layer norm over the last axis, biased variance, in float32."""
    mean, var = tf.nn.moments(x, axes=[-1], keepdims=True)
    return (x - mean) * tf.math.rsqrt(var + eps) * g + b


def conv1d(x: tf.Tensor, w: tf.Tensor, b: tf.Tensor, dtype: tf.DType) -> tf.Tensor:
    """OpenAI's "conv1d": a dense layer with weight `[1, nx, nf]`; matmul in `dtype`, out float32.

    As OpenAI's, one 2-D matmul over all rows: a batched matmul against a broadcast weight would
    make the weight's gradient one product per batch row plus a sum (measured 2x slower)."""
    return _row_matmul(x, w[0], dtype) + b


def _row_matmul(x: tf.Tensor, w: tf.Tensor, dtype: tf.DType, transpose_w: bool = False,
                out_dtype: tf.DType = tf.float32) -> tf.Tensor:
    """x [..., in] times w ([in, out], or [out, in] with transpose_w) as one 2-D matmul over all
    rows in `dtype` -> `out_dtype` [..., out]."""
    rows = tf.reshape(tf.cast(x, dtype), [-1, x.shape[-1]])
    y = tf.matmul(rows, tf.cast(w, dtype), transpose_b=transpose_w)
    out = w.shape[0] if transpose_w else w.shape[-1]
    return tf.cast(tf.reshape(y, tf.concat([tf.shape(x)[:-1], [out]], 0)), out_dtype)


def attention_mask(nd: int | tf.Tensor, ns: int | tf.Tensor) -> tf.Tensor:
    """[nd, ns] booleans: query i sees key j iff j <= i + ns - nd (keys include the cached past)."""
    i = tf.range(nd)[:, None]
    j = tf.range(ns)[None, :]
    return j <= i + (ns - nd)


def split_heads(x: tf.Tensor, n_head: int) -> tf.Tensor:
    """[batch, seq, n_embd] -> [batch, head, seq, head_dim]."""
    b, t = tf.shape(x)[0], tf.shape(x)[1]
    x = tf.reshape(x, [b, t, n_head, x.shape[-1] // n_head])
    return tf.transpose(x, [0, 2, 1, 3])


def merge_heads(x: tf.Tensor) -> tf.Tensor:
    """[batch, head, seq, head_dim] -> [batch, seq, n_embd]."""
    x = tf.transpose(x, [0, 2, 1, 3])
    b, t = tf.shape(x)[0], tf.shape(x)[1]
    return tf.reshape(x, [b, t, x.shape[-2] * x.shape[-1]])


def attend(q: tf.Tensor, k: tf.Tensor, v: tf.Tensor, dtype: tf.DType) -> tf.Tensor:
    """Causal scaled dot-product attention, [batch, head, seq, head_dim] each; softmax in float32."""
    scores = tf.matmul(tf.cast(q, dtype), tf.cast(k, dtype), transpose_b=True)
    scores = tf.cast(scores, tf.float32) * (1.0 / math.sqrt(q.shape[-1]))
    mask = attention_mask(tf.shape(q)[2], tf.shape(k)[2])
    probs = tf.nn.softmax(tf.where(mask, scores, MASKED), axis=-1)
    return tf.cast(tf.matmul(tf.cast(probs, dtype), tf.cast(v, dtype)), tf.float32)


def block(x, w, hp: HParams, past=None, dtype=tf.float32):
    """One transformer block. `w` maps the names of `BLOCK_WEIGHTS` to tensors.

    `past` is this layer's cache `[batch, 2, head, past_seq, head_dim]` (keys, values) or None.
    Returns the new residual stream and `present`, the keys and values of the new positions only.
    """
    h = norm(x, w["ln_1/g"], w["ln_1/b"])
    qkv = conv1d(h, w["attn/c_attn/w"], w["attn/c_attn/b"], dtype)
    q, k, v = (split_heads(t, hp.n_head) for t in tf.split(qkv, 3, axis=-1))
    present = tf.stack([k, v], axis=1)
    if past is not None:
        k = tf.concat([past[:, 0], k], axis=-2)
        v = tf.concat([past[:, 1], v], axis=-2)
    a = merge_heads(attend(q, k, v, dtype))
    x = x + conv1d(a, w["attn/c_proj/w"], w["attn/c_proj/b"], dtype)
    h = norm(x, w["ln_2/g"], w["ln_2/b"])
    h = gelu(conv1d(h, w["mlp/c_fc/w"], w["mlp/c_fc/b"], dtype))
    x = x + conv1d(h, w["mlp/c_proj/w"], w["mlp/c_proj/b"], dtype)
    return x, present


def block_weights(params: dict, i: int) -> dict:
    return {k: params[f"model/h{i}/{k}"] for k in BLOCK_WEIGHTS}


def embed(params: dict, tokens: tf.Tensor, start: int | tf.Tensor = 0) -> tf.Tensor:
    """Token plus position embeddings for `tokens` [batch, seq] placed at positions start, ..."""
    positions = start + tf.range(tf.shape(tokens)[1])
    return tf.gather(params["model/wte"], tokens) + tf.gather(params["model/wpe"], positions)[None]


def head(params: dict, x: tf.Tensor, dtype=tf.float32, logits_dtype=tf.float32) -> tf.Tensor:
    """Final layer norm and the tied output projection: [batch, seq, n_embd] -> logits."""
    h = norm(x, params["model/ln_f/g"], params["model/ln_f/b"])
    return _row_matmul(h, params["model/wte"], dtype, transpose_w=True, out_dtype=logits_dtype)


def model(params: dict, tokens: tf.Tensor, hp: HParams, *, past=None, dtype=tf.float32,
          recompute: bool = False, logits_dtype=tf.float32, one_block: bool = True):
    """Full forward pass, OpenAI's contract.

    Args:
      params: name -> weight tensor (see `weight_shapes`).
      tokens: int32 [batch, seq].
      past: None or [batch, n_layer, 2, head, past_seq, head_dim]; positions continue after it.
      dtype: compute dtype of the matmuls (float32 or bfloat16).
      recompute: recompute each block's activations in the backward pass (memory-saving gradients).
      logits_dtype: the logits' dtype; bf16 logits (as the bf16 matmul makes them) go to `loss_fn`
        without a float32 copy of the largest tensor of a small model's step.
      one_block: inside a traced function, call one traced block for every layer (see
        `_traced_block`); False for a step XLA compiles.

    Returns:
      (logits [batch, seq, n_vocab] in logits_dtype, present [batch, n_layer, 2, head, seq, head_dim]).
    """
    start = 0 if past is None else tf.shape(past)[-2]
    x = embed(params, tokens, start)
    presents = []
    # Inside a traced function, one traced block for all layers (under a tf.distribute strategy
    # the replicas' gradients through its call came back None: there each layer is traced inline).
    traced = one_block and past is None and tf.inside_function() and not tf.distribute.has_strategy()
    for i in range(hp.n_layer):
        w = block_weights(params, i)
        layer_past = None if past is None else past[:, i]
        if recompute and past is None:
            x = _recomputed_block(x, w, hp, dtype)
        else:
            x, present = _traced_block(hp, dtype)(x, w) if traced else block(x, w, hp, layer_past, dtype)
            presents.append(present)
    present = tf.stack(presents, axis=1) if presents else None
    return head(params, x, dtype, logits_dtype), present


@functools.cache
def _traced_block(hp: HParams, dtype: tf.DType):
    """`block` without a past as one `tf.function` that every layer calls with its own weights:
    traced once instead of once per layer (tracing is most of a training launch's first step).

    Not in a step XLA compiles (`model(one_block=False)`): the gradient of a function call receives
    the forward pass's shapes as tensors, which XLA needs as compile-time constants, so TensorFlow
    evaluated the whole forward pass at compile time, with that step's tokens and weights, and
    compiled the step anew on every call (the demo's shape: 18.3 s per step instead of 0.58)."""
    return tf.function(functools.partial(block, hp=hp, past=None, dtype=dtype), autograph=False)


def _recomputed_block(x, w, hp, dtype):
    """A block whose activations are recomputed during backprop instead of stored."""
    names = list(w)

    @tf.recompute_grad
    def run(x, *weights):
        return block(x, dict(zip(names, weights, strict=True)), hp, None, dtype)[0]

    return run(x, *(w[n] for n in names))


def _token_losses(logits: tf.Tensor, targets: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """(cross-entropy of each target in nats, the row's log-sum-exp), both shaped like targets;
    computed in float32 whatever the logits' dtype."""
    logits = tf.cast(logits, tf.float32)
    top = tf.reduce_max(logits, axis=-1, keepdims=True)
    lse = tf.math.log(tf.reduce_sum(tf.exp(logits - top), axis=-1)) + top[..., 0]
    return lse - tf.gather(logits, targets, batch_dims=targets.shape.rank), lse


def _loss_grad(logits, targets, lse, scale):
    """d(scale * sum of token losses)/d logits = scale * (softmax - one_hot), in one pass, in the
    logits' dtype (bf16 logits: what the cast's gradient would round it to anyway)."""
    probs = tf.exp(tf.cast(logits, tf.float32) - lse[..., None])
    return tf.cast((probs - tf.one_hot(targets, logits.shape[-1])) * scale, logits.dtype)


# The 50257-way loss is most of a small model's step outside the matmuls: TensorFlow's CPU kernel
# took 59 ms for 512 rows (forward and gradient), these two compiled by XLA 15 ms.
_compiled_token_losses = tf.function(_token_losses, jit_compile=True, autograph=False)
_compiled_loss_grad = tf.function(_loss_grad, jit_compile=True, autograph=False)


def token_losses(logits: tf.Tensor, targets: tf.Tensor) -> tf.Tensor:
    """Next-token cross-entropy in nats of each target (logits [..., vocab] float32, targets
    int32 [...]), as `tf.nn.sparse_softmax_cross_entropy_with_logits` computes it; no gradient."""
    return _compiled_token_losses(logits, targets)[0]


def row_token_losses(params: dict, rows: tf.Tensor, hp: HParams, dtype=tf.float32) -> tf.Tensor:
    """Loss in nats of each next token of `rows` [batch, window + 1] (inputs rows[:, :-1], targets
    rows[:, 1:]), no gradient; with bf16 matmuls the logits stay bf16 into the loss. Validation and
    `evaluate` both score this way."""
    logits, _ = model(params, rows[:, :-1], hp, dtype=dtype, logits_dtype=dtype)
    return token_losses(logits, rows[:, 1:])


@tf.custom_gradient
def loss_fn(logits: tf.Tensor, targets: tf.Tensor) -> tf.Tensor:
    """Mean next-token cross-entropy in nats (logits [batch, seq, vocab] float32 or bfloat16,
    targets [batch, seq]).
    Its gradient recomputes the softmax from the saved log-sum-exp (nothing vocab-sized is kept
    besides the logits)."""
    losses, lse = _compiled_token_losses(logits, targets)
    count = tf.cast(tf.size(losses), tf.float32)

    def grad(upstream):
        return _compiled_loss_grad(logits, targets, lse, upstream / count), None

    return tf.reduce_mean(losses), grad
