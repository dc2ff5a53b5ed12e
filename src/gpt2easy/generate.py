"""Compiled generation: the prompt in one pass, then one compiled step per token.

`Generator(model, precision)` prepares the weights once for decoding: every matrix transposed to
`[out, in]` (XLA's CPU code runs a one-row matrix-vector product at memory speed in that layout,
about 1.3x slower in the other) and cast to the compute dtype, so bf16 reads half the bytes per token.

Batches of more than one row run "wide", on `[in, out]` float32 matrices: measured here, XLA's CPU
code multiplies 8 rows by a `[in, out]` matrix about 1.4x faster than by the transposed layout (and
1.6x for the 50257-way output layer), and a bf16 matrix times more than one vector is worse still
(XLA first converts the whole matrix to float32: a new 500 MB array per token for 124M). So a
generator makes, on the first batch > 1, float32 `[in, out]` copies: for fp32 the model's own
variables serve (only the output embedding is copied, transposed); for bf16 they hold the
bf16-rounded values, the cache holds bf16-rounded float32 values and activations are rounded to
bf16 where the narrow path casts them: the same numbers as batch 1, up to the order of the sums.
Where `rows_kernel` is available (a CPU with AVX-512 BF16 and a C++ compiler), a bf16 batch's
step instead multiplies the narrow bf16 matrices by all its rows in a native kernel called from
the compiled step, and attends over a bf16 cache in another (each row reading only its own
positions): 124M, 8 rows, 256 tokens, 2.1x the tokens/s of the float32 copies; the prompt pass
still uses the copies (many rows: XLA's float32 matrix products do well there).

bf16 caches are `uint16` variables holding the bf16 bit patterns: XLA's CPU code updates a bf16
variable as float32, converting the whole cache to float32 and back around every in-place update
(8 rows x 384 positions, 12 layers: 13 ms of a step), an integer one in place.

Per (batch, cache_len) it makes, once, the key/value cache as `tf.Variable`s (per layer one for
the keys and one for the values, each `[batch, head, cache_len, head_dim]`: measured here, attending
over a slice of one stacked `[2, ...]` variable costs twice the time, XLA copying the slice) and two
XLA-compiled functions:
- `prefill(tokens [batch, P], last, seen, done, rows, controls)`: the whole prompt (padded to a
  bucket P; retraced per bucket only) in one pass; writes its keys/values at positions 0..P-1 and
  draws every row's first token from the logits after position `last`: the first token exists as
  soon as the prompt pass has run, before the step is even traced (a second launch of 124M prints
  it about 0.6 s sooner, a first one about 5 s sooner: the step is traced and compiled after it).
- `step(state, controls)`: feed the state's token (writing its keys/values into the cache in
  place) and draw the next one; returns the new state.
  Controls (seed, temperature, top_k, top_p, penalty, eos) are tensors: changing them never retraces.
  Its attention reads only the cache's first W positions, W the smallest of 64, 128, 256, 512 (or
  the cache length) past the current position, chosen per step by a `tf.switch_case` over static
  slices: the time follows the positions used, not the cache length (a 16-token prompt plus 128 new
  tokens has a 256-position cache; back-to-back bench runs: bf16 batch 1 from 57 to 69 tokens/s,
  batch 8 from 212 to 234). With more than one row, only slices of at most a quarter of the cache:
  XLA copies a slice before its batched dot, and measured here (12 layers, float32 cache of 8 rows
  x 384 positions) the first 256 positions cost 11.5-12.7 ms against 5.8-6.0 ms for all 384, the
  first 64 about 4 ms (of 1024 positions: 256 took 11.8 ms, 512 27.8, all 23.5).

Prompts of different lengths share a batch by left-padding: row r's prompt of n_r tokens sits at
cache positions `offset_r = n - n_r ... n - 1` (n the longest), so every row writes its next token
at the same cache position and the cache update stays one in-place slice. Row r's position ids are
`cache position - offset_r` and its attention never sees positions below offset_r, so a row computes
what its prompt computes alone (up to float rounding: the sums run in another order).

Noise: the token at position t (the row's own position) of row r draws its Gumbel noise from the
stateless seed `(seed + seed_r, (stream + stream_r) * 2**20 + t)`, elements `lane_r * n ...` (see
`draw.row_noise`), where `(seed, stream)` are the controls' and `seed_r`, `stream_r`, `lane_r`
the row's (default 0, 0 and r). So row r of batch b of one prompt (stream b) draws as it always
did, a row of a many-prompt batch given the (stream, lane) of its prompt's run alone draws exactly
that, and rows of different requests (the server) each draw with their own seed.

Why a step per call rather than a compiled loop over many tokens: measured here, XLA updates a
variable in place (0.3 ms for a 75 MB cache) but copies a loop-carried or passed-in cache on every
call (about 50 ms for 75 MB), while a call costs well under a millisecond. One step per call also
lets the host stream each token and check stop strings as soon as it exists.

The math is OpenAI's (checked against `model.model` and a NumPy reference in the tests). In bf16 the
cached keys and values are stored as bf16 (bit patterns), which `model.attend` casts them to anyway.
"""

from __future__ import annotations

import functools
import logging
import math
import weakref
from collections.abc import Iterator
from typing import NamedTuple

import numpy as np
import tensorflow as tf
from tensorflow.compiler.tf2xla.python import xla

from . import draw, rows_kernel
from .model import COMPUTE_DTYPES, MASKED, FrozenGPT2
from .quick_ops import gelu, layer_norm, softmax

logger = logging.getLogger(__name__)
ATTEND_WIDTHS = (64, 128, 256, 512)  # the decode step attends over the first W cache positions
MATRICES = ("attn/c_attn/w", "attn/c_proj/w", "mlp/c_fc/w", "mlp/c_proj/w")


def cache_bucket(positions: int, n_ctx: int) -> int:
    """Cache length for `positions` used positions: a multiple of 128, at most n_ctx."""
    return min(n_ctx, 128 * math.ceil(positions / 128))


def prompt_bucket(n: int, cache_len: int) -> int:
    """Padded prompt length: a multiple of 16 up to 64, then of 64; never above the cache."""
    step = 16 if n <= 64 else 64
    return min(cache_len, step * math.ceil(n / step))


class Rows(NamedTuple):
    """Per-row constants of one generation."""

    offset: tf.Tensor  # int32 [batch]: left padding; the row's position = cache position - offset
    stream: tf.Tensor  # int64 [batch]: added to the controls' stream for this row's noise
    lane: tf.Tensor  # int32 [batch]: which block of the noise stream the row draws (default r)
    seed: tf.Tensor  # int64 [batch]: added to the controls' seed (rows of different requests)


class State(NamedTuple):
    """What one step hands to the next (small tensors; the cache lives in variables)."""

    token: tf.Tensor  # int32 [batch]: the token drawn last, which the next step feeds
    logits: tf.Tensor  # [batch, n_vocab] float32: what `token` was drawn from
    seen: tf.Tensor  # [batch, n_vocab] bool: tokens in the prompt or generated so far
    done: tf.Tensor  # [batch] bool: row finished (end of text, a stop string, or by the caller)
    pos: tf.Tensor  # int32 scalar: the cache position `token` is fed at
    rows: Rows  # per-row constants: left padding and noise stream


class Controls(NamedTuple):
    """Sampling controls, as tensors so that changing them never retraces."""

    seed: tf.Tensor  # int64 [2]: (user seed, stream); a step draws with (seed, stream * 2**20 + pos)
    temperature: tf.Tensor  # float32: 0 = greedy
    top_k: tf.Tensor  # int32: 0 = off
    top_p: tf.Tensor  # float32: 0 or 1 = off
    penalty: tf.Tensor  # float32: repetition penalty, 1 = off
    eos: tf.Tensor  # int32: the token that finishes a row, -1 = none

    @classmethod
    def make(cls, seed=(0, 0), temperature=1.0, top_k=0, top_p=1.0, penalty=1.0, eos=-1):
        return cls(
            tf.constant(seed, tf.int64), tf.constant(temperature, tf.float32),
            tf.constant(top_k, tf.int32), tf.constant(top_p, tf.float32),
            tf.constant(penalty, tf.float32), tf.constant(eos, tf.int32),
        )  # fmt: skip


def _draw(n_vocab: int, logits, seen, done, pos, rows: Rows, c: Controls) -> State:
    """Every row's token for cache position `pos` from `logits` [batch, n_vocab], drawn with the
    noise of the row's own position (see the module docstring). Rows already done get
    `max(eos, 0)` as padding."""
    position = tf.cast(pos - rows.offset, tf.int64)
    seeds = tf.stack([c.seed[0] + rows.seed, (c.seed[1] + rows.stream) * 2**20 + position], axis=1)
    token = draw.sample_tokens(
        logits, seeds, temperature=c.temperature, top_k=c.top_k, top_p=c.top_p,
        penalty=c.penalty, seen=seen, lanes=rows.lane,
    )  # fmt: skip
    token = tf.where(done, tf.maximum(c.eos, 0), token)
    done = done | (token == c.eos)
    seen = seen | tf.cast(tf.one_hot(token, n_vocab, dtype=tf.int8), tf.bool)
    return State(token, logits, seen, done, pos, rows)


@functools.cache
def draw_function(n_vocab: int):
    """`_draw` as one `tf.function` that every prompt pass and step of every generator in the
    process calls (it holds no variables): traced once per batch size (0.15-0.3 s on 124M, mostly
    the filters' loops and conditions), not once in each compiled function or generator."""
    return tf.function(functools.partial(_draw, n_vocab), autograph=False)


class Compiled(NamedTuple):
    """The cache variables of one (batch, cache_len) and the functions compiled for them."""

    cache: list  # n_layer x (keys, values), tf.Variable [batch, head, cache_len, head_dim] each
    prefill: tf.types.experimental.PolymorphicFunction
    step: tf.types.experimental.PolymorphicFunction


class Generator:
    """Generates token ids from a `GPT2` model; see the module docstring."""

    def __init__(self, model, precision: str = "fp32", use_kernel: bool = True):
        from .machine import resolve_precision

        if precision == "auto":  # stated at debug level: a user error must stay the only line
            precision = resolve_precision(precision, log=False)
            logger.debug("generation in %s (precision auto)", precision)
        if precision not in COMPUTE_DTYPES:
            raise ValueError(f"precision must be fp32 or bf16, not {precision!r}")
        self.hp = model.hparams
        self.precision = precision
        self.dtype = COMPUTE_DTYPES[precision]
        self.use_kernel = use_kernel  # False: bf16 batches on float32 copies even with rows_kernel
        self._model = weakref.ref(model)  # for refresh(); the copies don't keep it alive
        self._frozen = isinstance(model, FrozenGPT2)  # its weights never change: see _held
        self.w = {}
        for name, var in model.weights.items():
            if name.endswith(MATRICES):
                self.w[name] = self._held(self._prepared(var))
            else:
                self.w[name] = var  # biases, gains, positions, the embedding lookup: float32
        wte = model.weights["model/wte"]
        self.w["wte_out"] = wte if self.dtype == tf.float32 else self._held(tf.cast(wte, self.dtype))
        self.w_wide = {}  # float32 [in, out] matrices for batches > 1, made on first use
        self._fp32_source = {  # fp32: the model's own [1, in, out] matrices serve as those
            name: var for name, var in model.weights.items() if name.endswith(MATRICES)
        } if self.dtype == tf.float32 else {}
        self.compiled = {}  # (batch, cache_len) -> Compiled
        self._blocks = {}  # (kind, wide, kernel) -> tf.function of one block (_block_fn)

    def _held(self, value: tf.Tensor):
        """A prepared copy as the generator keeps it: a variable that refresh() updates in place
        for a model of variables (training's samples), the tensor itself for a FrozenGPT2 (a
        variable would copy it once more)."""
        return value if self._frozen else tf.Variable(value, trainable=False)

    def _prepared(self, var: tf.Variable | tf.Tensor) -> tf.Tensor:
        """A `[1, in, out]` matrix as the decoder reads it: `[out, in]` in the compute dtype (cast
        before the transposition: bf16 moves half the bytes)."""
        return tf.transpose(tf.cast(tf.reshape(var, var.shape[1:]), self.dtype))

    def refresh(self) -> None:
        """Copy the model's current weights into the prepared copies (after training steps), in
        place, so the compiled functions stay valid."""
        model = self._model()
        if model is None:
            raise RuntimeError("the model this generator was made from no longer exists")
        if self._frozen:
            return  # its weights never change
        for name, var in self.w.items():
            if name.endswith(MATRICES):
                var.assign(self._prepared(model.weights[name]))
        if self.w["wte_out"] is not model.weights["model/wte"]:
            self.w["wte_out"].assign(tf.cast(model.weights["model/wte"], self.dtype))
        for name, var in self.w_wide.items():
            if name not in self._fp32_source:
                var.assign(self._wide_value(name))

    def _wide(self, batch: int) -> bool:
        """Whether this batch size runs on the `[in, out]` float32 matrices (batch > 1)."""
        return batch > 1

    def _kernel(self, wide: bool) -> bool:
        """Whether the step's matrices are multiplied by `rows_kernel` (bf16 batches where it is
        available): the narrow bf16 matrices read once for all rows, not float32 copies."""
        return wide and self.use_kernel and self.dtype == tf.bfloat16 and rows_kernel.available()

    def _weight(self, name: str, wide: bool) -> tf.Tensor:
        """The matrix as the decoder multiplies it: `[out, in]` in the compute dtype (narrow), or
        float32 `[in, out]` (wide; made on first use, see the module docstring)."""
        if not wide:
            return self.w[name]
        if name not in self.w_wide:
            self.w_wide[name] = self._wide_copy(name)
        return self.w_wide[name]

    def _wide_copy(self, name: str):
        """The `[in, out]` float32 form of a prepared matrix: the model's variable itself where it
        already is that (fp32 block matrices), else a new variable (see `refresh`)."""
        if name in self._fp32_source:
            return self._fp32_source[name]
        return tf.Variable(self._wide_value(name), trainable=False)

    def _wide_value(self, name: str) -> tf.Tensor:
        """float32 `[in, out]` values of a prepared matrix (`[1, in, out]` for block matrices,
        as the model stores them)."""
        value = tf.transpose(tf.cast(self.w[name], tf.float32))
        return value if name == "wte_out" else value[None]

    def _to(self, t, wide: bool):
        """Into the matmul type: the compute dtype, or float32 holding its values when wide."""
        t = tf.cast(t, self.dtype)
        return tf.cast(t, tf.float32) if wide else t

    def _stored(self, t, cache, wide):
        """Keys or values as the `cache` variable holds them: float32 (holding compute-dtype
        values when wide), or bf16 values as their uint16 bit patterns. A bf16 cache variable
        would be updated by XLA's CPU code as float32: it converts the whole cache to float32
        and back around every in-place update (measured: 8 rows x 384 positions, 12 layers, 13 ms
        a step); integers are updated in place."""
        if cache.dtype == tf.float32:
            return self._to(t, wide)
        return tf.bitcast(tf.cast(t, tf.bfloat16), tf.uint16)

    def _cached(self, value) -> tf.Tensor:
        """Cached keys or values (read from the cache variable, sliced first: a bitcast of the
        whole cache would be a copy of it) in the compute dtype."""
        return tf.bitcast(value, tf.bfloat16) if value.dtype == tf.uint16 else value

    def _from(self, t):
        """A matmul result as float32, rounded to the compute dtype as the narrow path does."""
        return tf.cast(tf.cast(t, self.dtype), tf.float32)

    def compiled_for(self, batch: int, cache_len: int) -> Compiled:
        """The cache variables and compiled functions for this shape, made on first use. The
        functions are plain TensorFlow (explicit `tf.cond`/`tf.while_loop`, Python loops over the
        layers), so autograph is off: converting them took 2.2 s of a launch's 8 s before the
        first token. Each calls one traced block per layer (`_block_fn`): tracing the step took
        1.05-1.1 s with the 12 blocks traced one by one, 0.3-0.45 s with one traced block."""
        key = (batch, cache_len)
        if key not in self.compiled:
            hp = self.hp
            wide = self._wide(batch)
            shape = [batch, hp.n_head, cache_len, hp.head_dim]
            dtype = tf.float32 if wide and not self._kernel(wide) else self.dtype
            dtype = tf.uint16 if dtype == tf.bfloat16 else dtype  # bf16 bit patterns: _stored
            cache = [tuple(tf.Variable(tf.zeros(shape, dtype), trainable=False) for _ in "kv")
                     for _ in range(hp.n_layer)]  # fmt: skip
            for name in self.w:
                if name.endswith(MATRICES) or name == "wte_out":
                    self._weight(name, wide)  # made here, outside the compiled functions
            self.compiled[key] = Compiled(
                cache,
                tf.function(functools.partial(self._prefill, cache, wide), jit_compile=True,
                            autograph=False),
                tf.function(functools.partial(self._sample_step, cache, wide), jit_compile=True,
                            autograph=False),
            )
        return self.compiled[key]

    # --- the forward pass ---------------------------------------------------------------------

    def _matmul(self, x, w, wide, kernel):
        """x [rows, in] float32 times a prepared matrix (`_weight`) -> float32 [rows, out]:
        narrow `[out, in]` in the compute dtype, wide float32 `[in, out]` (`[1, in, out]` for
        block matrices), or with `kernel` the narrow bf16 matrix by `rows_kernel`."""
        if kernel:
            return rows_kernel.matmul(tf.cast(x, tf.bfloat16), w)
        x = self._to(x, wide)
        if not wide:
            return tf.matmul(x, w, transpose_b=True)
        return tf.matmul(x, w[0] if w.shape.rank == 3 else w)

    def _dense(self, x, ws, name, wide, kernel=False):
        """x [rows, in] float32 times the layer's matrix, plus bias -> float32."""
        return self._from(self._matmul(x, ws[f"{name}/w"], wide, kernel)) + ws[f"{name}/b"]

    def _logits(self, x, wide, kernel=False):
        h = layer_norm(x, self.w["model/ln_f/g"], self.w["model/ln_f/b"])
        return self._from(self._matmul(h, self._weight("wte_out", wide and not kernel), wide, kernel))

    def _layer_weights(self, i: int, wide: bool) -> dict:
        """Block i's variables by their names inside the block (`ln_1/g`, `attn/c_attn/w`, ...)."""
        head = f"model/h{i}/"
        return {name[len(head):]: self._weight(name, wide) if name.endswith(MATRICES) else var
                for name, var in self.w.items() if name.startswith(head)}  # fmt: skip

    def _layer(self, x, ws, attend_fn, wide, kernel=False):
        """One block on x [rows, n_embd] with its weights `ws` (`_layer_weights`);
        attend_fn(q, k, v [rows, n_embd]) -> [rows, n_embd]."""
        dense = functools.partial(self._dense, ws=ws, wide=wide, kernel=kernel)
        h = layer_norm(x, ws["ln_1/g"], ws["ln_1/b"])
        q, k, v = tf.split(dense(h, name="attn/c_attn"), 3, axis=-1)
        x = x + dense(attend_fn(q, k, v), name="attn/c_proj")
        h = layer_norm(x, ws["ln_2/g"], ws["ln_2/b"])
        return x + dense(gelu(dense(h, name="mlp/c_fc")), name="mlp/c_proj")

    def _heads(self, t, batch):
        """[batch * seq, n_embd] -> [batch, head, seq, head_dim]."""
        hp = self.hp
        t = tf.reshape(t, [batch, -1, hp.n_head, hp.head_dim])
        return tf.transpose(t, [0, 2, 1, 3])

    def _attend(self, q, k, v, mask, wide):
        """q [b, h, nq, d], k/v [b, h, nk, d] in the cache dtype, mask [b, 1, nq, nk] -> [b*nq, e]."""
        scores = tf.matmul(self._to(q, wide), k, transpose_b=True)
        scores = self._from(scores) * (1.0 / math.sqrt(self.hp.head_dim))
        probs = softmax(tf.where(mask, scores, MASKED))
        out = self._from(tf.matmul(self._to(probs, wide), v))
        return tf.reshape(tf.transpose(out, [0, 2, 1, 3]), [-1, self.hp.n_embd])

    def _attend_used(self, q, kv, pos, mask, wide):
        """One query per row [b, h, 1, d] over the cache's first W positions only, W the
        smallest of 64, 128, 256, ... (up to the cache length) above `pos`: the time follows the
        positions used, not the cache length. -> [b, e]."""
        cache_len = kv[0].shape[2]
        most = cache_len // 4 if q.shape[0] > 1 else cache_len - 1  # see the module docstring
        widths = [w for w in ATTEND_WIDTHS if w <= most] + [cache_len]
        keys, values = (var.read_value() for var in kv)

        def branch(w):
            def attend():
                k, v = self._cached(keys[:, :, :w]), self._cached(values[:, :, :w])
                return self._attend(q, k, v, mask[..., :w], wide)

            return attend

        if len(widths) == 1:
            return branch(cache_len)()
        index = tf.add_n([tf.cast(pos >= w, tf.int32) for w in widths[:-1]])
        return tf.switch_case(index, [branch(w) for w in widths])

    def _positions(self, cache_pos, offset):
        """Each row's position ids [batch, ...] for cache positions (padding clamped to 0)."""
        return tf.maximum(cache_pos - offset[:, None], 0)

    def _block_fn(self, kind: str, wide: bool, kernel: bool = False):
        """The `tf.function` of one block of the prompt pass or of the step, made once: every layer
        calls it with its own variables, so it is traced once, not once per layer (tracing is most
        of a second launch's time before the first token; XLA inlines the calls)."""
        key = (kind, wide, kernel)
        if key not in self._blocks:
            if kind == "prefill":
                body = functools.partial(self._prefill_block, wide)
            else:
                body = functools.partial(self._step_block, wide, kernel)
            self._blocks[key] = tf.function(body, autograph=False)
        return self._blocks[key]

    def _prefill_block(self, wide, x, ws, kv, mask):
        """A block of the prompt pass: writes the keys/values of positions 0..P-1 into `kv`."""
        batch = mask.shape[0]

        def attend(q, k, v):
            k, v = (self._heads(t, batch) for t in (k, v))
            for var, t in zip(kv, (k, v), strict=True):
                var.assign(xla.dynamic_update_slice(var, self._stored(t, var, wide), [0] * 4))
            k, v = (self._to(t, wide) for t in (k, v))
            return self._attend(self._heads(q, batch), k, v, mask, wide)

        return self._layer(x, ws, attend, wide)

    def _step_block(self, wide, kernel, x, ws, kv, mask, pos, offset):
        """A block of the step: writes the token's keys/values at `pos` into `kv` in place."""
        batch = mask.shape[0]

        def attend(q, k, v):
            for var, t in zip(kv, (k, v), strict=True):
                t = self._stored(self._heads(t, batch), var, wide)
                var.assign(xla.dynamic_update_slice(var, t, tf.stack([0, 0, pos, 0])))
            if kernel:  # the bf16 cache as it is (bit patterns), positions offset..pos of each row
                keys, values = (var.read_value() for var in kv)
                scale = float(np.float32(1.0 / math.sqrt(self.hp.head_dim)))
                return rows_kernel.attend(q, keys, values, pos, offset, scale)
            return self._attend_used(self._heads(q, batch), kv, pos, mask, wide)

        return self._layer(x, ws, attend, wide, kernel)

    def _prefill(self, cache, wide, tokens, last, seen, done, rows: Rows, c: Controls):
        """tokens int32 [batch, P], row r's prompt at rows.offset[r] .. last: fills the cache
        variables from 0 and draws the first token from the logits after position `last`."""
        batch, p = tokens.shape
        offset = rows.offset
        positions = self._positions(tf.range(p)[None, :], offset)
        x = tf.gather(self.w["model/wte"], tf.reshape(tokens, [-1])) + tf.gather(
            self.w["model/wpe"], tf.reshape(positions, [-1])
        )
        keys = tf.range(p)[None, None, None, :]
        mask = (keys <= tf.range(p)[None, None, :, None]) & (keys >= offset[:, None, None, None])
        block = self._block_fn("prefill", wide)
        for i in range(self.hp.n_layer):
            x = block(x, self._layer_weights(i, wide), cache[i], mask)
        x = tf.gather(tf.reshape(x, [batch, p, -1]), last, axis=1)
        return draw_function(self.hp.n_vocab)(self._logits(x, wide), seen, done, last + 1, rows, c)

    def _step(self, cache, wide, token, pos, offset):
        """One token per row at position `pos`: writes its keys/values into the cache variables
        in place (a variable update is aliased by XLA; a tensor passed in and out is copied)."""
        cache_len = cache[0][0].shape[2]
        x = tf.gather(self.w["model/wte"], token) + tf.gather(self.w["model/wpe"], pos - offset)
        keys = tf.range(cache_len)[None, None, None, :]
        mask = (keys <= pos) & (keys >= offset[:, None, None, None])
        kernel = self._kernel(wide)  # the narrow bf16 matrices, by rows_kernel
        block = self._block_fn("step", wide, kernel)
        for i in range(self.hp.n_layer):
            x = block(x, self._layer_weights(i, wide and not kernel), cache[i], mask, pos, offset)
        return self._logits(x, wide, kernel)

    def _sample_step(self, cache, wide, state: State, c: Controls) -> State:
        """Feed every row's token at `state.pos`, then draw the next one from the new logits."""
        logits = self._step(cache, wide, state.token, state.pos, state.rows.offset)
        return draw_function(self.hp.n_vocab)(logits, state.seen, state.done, state.pos + 1, state.rows, c)

    # --- host side ----------------------------------------------------------------------------

    def start(self, prompts, length: int, controls: Controls, done=None, streams=None, lanes=None,
              seeds=None) -> tuple[Compiled, State]:  # fmt: skip
        """Run the prompt rows through the model and draw their first tokens (`state.token`):
        `prompts` is int [batch, n] or a list of token lists of any lengths (>= 1), left-padded
        here; `done` (bool [batch]) marks rows that only pad; `streams`/`lanes`/`seeds` (int
        [batch]) choose each row's noise (default 0, the row index and 0; see the module
        docstring)."""
        cache_len, args = self.prompt_inputs(prompts, length, controls, done, streams, lanes, seeds)
        compiled = self.compiled_for(len(args[0]), cache_len)
        return compiled, compiled.prefill(*args)

    def prompt_inputs(self, prompts, length: int, controls: Controls, done=None, streams=None,
                      lanes=None, seeds=None) -> tuple[int, tuple]:  # fmt: skip
        """(cache length, the prompt pass's arguments) for `start`'s arguments."""
        rows = [np.asarray(p, dtype=np.int32).reshape(-1) for p in prompts]
        batch, n = len(rows), max((len(r) for r in rows), default=0)
        if batch < 1 or min(len(r) for r in rows) < 1:
            raise ValueError("every prompt needs at least one token")
        if n + length - 1 > self.hp.n_ctx:
            raise ValueError(f"prompt of {n} tokens + {length} new is over n_ctx {self.hp.n_ctx}")
        cache_len = cache_bucket(n + length - 1, self.hp.n_ctx)
        p = prompt_bucket(n, cache_len)
        padded = np.zeros([batch, p], np.int32)
        offset = np.array([n - len(r) for r in rows], np.int32)
        seen = np.zeros([batch, self.hp.n_vocab], bool)
        for r, ids in enumerate(rows):
            padded[r, offset[r] : n] = ids
            seen[r, ids] = True
        done = np.zeros(batch, bool) if done is None else np.asarray(done, bool)
        streams = np.zeros(batch, np.int64) if streams is None else np.asarray(streams, np.int64)
        lanes = np.arange(batch, dtype=np.int32) if lanes is None else np.asarray(lanes, np.int32)
        seeds = np.zeros(batch, np.int64) if seeds is None else np.asarray(seeds, np.int64)
        if any(a.shape != (batch,) for a in (done, streams, lanes, seeds)):
            raise ValueError(f"done, streams, lanes and seeds need one entry per row ({batch})")
        rows_state = Rows(tf.constant(offset), tf.constant(streams), tf.constant(lanes),
                          tf.constant(seeds))  # fmt: skip
        return cache_len, (tf.constant(padded), tf.constant(n - 1), tf.constant(seen),
                           tf.constant(done), rows_state, controls)

    def warm_up(self, batch: int, n: int, length: int) -> None:
        """Compile the prompt pass and the step for `batch` prompts of `n` tokens and `length`
        new ones, by running both once on zeros (what they leave in the cache is overwritten
        by the next prompt's pass)."""
        controls = Controls.make(temperature=0.0)
        compiled, state = self.start(np.zeros([batch, n], np.int32), length, controls)
        if length > 1:
            compiled.step(state, controls)

    def generate(
        self, prompts, length: int, controls: Controls, finished: np.ndarray | None = None,
        streams=None, lanes=None, seeds=None,
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield (tokens int32 [batch], done bool [batch]) once per new token, `length` times at
        most; stops early once every row is done. `prompts`, `streams`, `lanes`, `seeds`: see
        `start`.

        A row is done after it produced `controls.eos` (that token is yielded with done set) or
        when the caller sets its entry in `finished` (bool [batch], read before every token).
        """
        done = np.zeros(len(prompts), bool)
        compiled = state = None
        for _ in range(length):
            if finished is not None and (finished & ~done).any():
                done = done | finished
                if state is not None:
                    state = state._replace(done=tf.constant(done))
            if done.all():
                return
            if state is None:
                compiled, state = self.start(prompts, length, controls, done, streams, lanes, seeds)
            else:
                state = compiled.step(state, controls)
            done = state.done.numpy()
            yield state.token.numpy(), done
