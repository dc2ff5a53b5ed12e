"""The compiled training step: forward, loss, gradients (accumulated), clip, optimizer update.

One `tf.function` with a fixed input signature `[accumulate, batch, window + 1]` int32, so it traces
once for a whole run. Each row gives `window` input tokens and their `window` next tokens as targets
(the classic script fed 1024 tokens and scored 1023 predictions; we score all of them).

Randomness inside the step (the classic `--noise`: each input token replaced by a uniformly random id
with probability p, targets kept clean) is stateless, seeded by (seed, step), so a resumed run draws
exactly what an uninterrupted one would.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow as tf

from . import distribute
from .errors import UserError
from .model import COMPUTE_DTYPES, GPT2, loss_fn, model, row_token_losses
from .optim import Optimizer, clip_by_global_norm


@dataclasses.dataclass(frozen=True)
class StepConfig:
    """What the compiled step needs to know, fixed for a run."""

    batch_size: int = 1
    window: int = 1024  # input tokens per row; rows hold window + 1 tokens
    accumulate: int = 1  # micro-batches per update; their gradients are averaged
    noise: float = 0.0
    precision: str = "fp32"
    recompute: bool = False  # memory-saving gradients: recompute each block in the backward pass
    grad_clip: float = 0.0  # global-norm clip; 0 = off
    seed: int = 0
    jit: bool = False  # XLA; measured slower than the plain graph on CPU (see bench/train.py)

    def __post_init__(self) -> None:
        if self.batch_size <= 0:
            raise UserError(f"--batch_size must be > 0, got {self.batch_size}")
        if self.accumulate <= 0:
            raise UserError(f"--accumulate_gradients must be > 0, got {self.accumulate}")
        if not 0.0 <= self.noise < 1.0:
            raise UserError(f"--noise must be in [0, 1), got {self.noise}")
        if self.precision not in COMPUTE_DTYPES:
            raise UserError(f"--precision must be fp32 or bf16, got {self.precision!r}")
        if self.grad_clip < 0:
            raise UserError(f"--grad_clip must be >= 0 (0 = off), got {self.grad_clip}")


def add_noise(tokens: tf.Tensor, p: float, n_vocab: int, seed: tf.Tensor, replica=0,
              replicas: int = 1) -> tf.Tensor:
    """Replace each token by a uniform random id in [0, n_vocab) with probability `p` (stateless).

    With several replicas the draws cover the global batch and each replica keeps its own rows,
    so the noise is what one process with the global batch would draw."""
    seed2 = tf.stack([seed[0] + 1, seed[1]])
    b = tf.shape(tokens)[0]
    shape = tf.concat([[b * replicas], tf.shape(tokens)[1:]], 0)
    rows = tf.range(b) + tf.cast(replica, tf.int32) * b
    hit = tf.gather(tf.random.stateless_uniform(shape, seed) < p, rows)
    ids = tf.gather(tf.random.stateless_uniform(shape, seed2, minval=0, maxval=n_vocab,
                                                dtype=tf.int32), rows)
    return tf.where(hit, ids, tokens)


class TrainStep:
    """`step(tokens, lr, step) -> (loss, grad_norm)`: one update of `optimizer.weights`.

    `tokens` is int32 `[accumulate, batch * replicas, window + 1]`, the global batch (the same on
    every worker); `lr` the rate of this update; `step` the number of updates completed before it
    (for Adam's bias correction and the noise seed). Under a `tf.distribute` strategy (weights and
    optimizer created in its scope) each replica takes its `batch` rows, the strategy's all-reduce
    averages the gradients, and every replica applies the same update (see distribute.py).
    """

    def __init__(self, gpt: GPT2, optimizer: Optimizer, cfg: StepConfig,
                 strategy: tf.distribute.Strategy | None = None):
        self.gpt, self.optimizer, self.cfg = gpt, optimizer, cfg
        self.hp = gpt.hparams
        self.dtype = COMPUTE_DTYPES[cfg.precision]
        self.names = list(optimizer.weights)
        strategy = strategy or tf.distribute.get_strategy()
        self.replicas = distribute.num_replicas(strategy)
        with strategy.scope():  # a value the step reads, not a constant in it: the compiled
            # program (and its key in the XLA cache) is then the same whatever the seed; as a
            # constant every `--xla` run with a new (random) seed compiled and cached it anew
            self.seed0 = tf.Variable(np.int64(cfg.seed) * 2, trainable=False, name="noise_seed")
        grads = self.grads
        if cfg.jit and self.replicas > 1:  # XLA per replica; the all-reduce stays outside it
            grads = tf.function(self.grads, jit_compile=True, autograph=False)
        self.dist = distribute.TrainStep(
            strategy, optimizer.weights, grads, optimizer.apply, batch_size=cfg.batch_size,
            accumulate=cfg.accumulate, window=cfg.window, clip=self.clip,
            jit=cfg.jit and self.replicas == 1)

    def __call__(self, tokens: np.ndarray, lr: float, step: int) -> tuple[float, float]:
        return self.update(tokens, lr, step)[:2]

    def update(self, tokens: np.ndarray, lr: float, step: int,
               stop: bool = False) -> tuple[float, float, bool]:
        """One update that also tells every worker whether this one was asked to stop; returns
        (loss, grad_norm, whether any worker was), so that all stop after the same step."""
        return self.dist(tokens, lr, step, stop)

    def tracing_count(self) -> int:
        return self.dist.tracing_count()

    def _loss_and_grads(self, rows: tf.Tensor, seed: tf.Tensor):
        inputs, targets = rows[:, :-1], rows[:, 1:]
        if self.cfg.noise > 0:
            replica = tf.distribute.get_replica_context().replica_id_in_sync_group
            inputs = add_noise(inputs, self.cfg.noise, self.hp.n_vocab, seed, replica,
                               self.replicas)
        with tf.GradientTape() as tape:
            logits, _ = model(self.gpt.params(), inputs, self.hp, dtype=self.dtype,
                              recompute=self.cfg.recompute, logits_dtype=self.dtype,
                              one_block=not self.cfg.jit)
            loss = loss_fn(logits, targets)
        grads = tape.gradient(loss, [self.optimizer.weights[n] for n in self.names])
        # The embedding's gradient arrives as a sum of a dense part (output projection) and
        # IndexedSlices (the lookup); make every gradient a plain dense tensor.
        return loss, [tf.convert_to_tensor(g) for g in grads]

    def grads(self, tokens: tf.Tensor, step: tf.Tensor):
        """Mean loss and gradients (one per trained weight, in `self.names` order) over the
        `accumulate` micro-batches of `tokens` [accumulate, batch, window + 1]."""
        n = self.cfg.accumulate
        seed0 = self.seed0.read_value()
        if n == 1:
            return self._loss_and_grads(tokens[0], tf.stack([seed0, step]))

        def body(i, loss_sum, grad_sums):
            seed = tf.stack([seed0, step * n + tf.cast(i, tf.int64)])
            loss, grads = self._loss_and_grads(tokens[i], seed)
            return i + 1, loss_sum + loss, [s + g for s, g in zip(grad_sums, grads, strict=True)]

        zeros = [tf.zeros_like(self.optimizer.weights[name]) for name in self.names]
        _, loss, grads = tf.while_loop(lambda i, *_: i < n, body, (0, tf.constant(0.0), zeros))
        return loss / n, [g / n for g in grads]

    def clip(self, grads: dict) -> tuple[dict, tf.Tensor]:
        return clip_by_global_norm(grads, self.cfg.grad_clip)


class EvalLoss:
    """Compiled mean loss over rows `[n, window + 1]`, no gradients (for validation): `batch_size`
    rows per replica at a time, under `strategy` (every worker passes the same rows)."""

    def __init__(self, gpt: GPT2, batch_size: int, window: int, precision: str = "fp32",
                 strategy: tf.distribute.Strategy | None = None):
        self.gpt, self.dtype = gpt, COMPUTE_DTYPES[precision]
        self.fn = distribute.EvalLoss(strategy or tf.distribute.get_strategy(), self._row_losses,
                                      batch_size=batch_size, window=window)

    def _row_losses(self, rows):
        losses = row_token_losses(self.gpt.params(), rows, self.gpt.hparams, self.dtype)
        return tf.reduce_mean(losses, axis=1)

    def __call__(self, rows: np.ndarray, on_rows=None) -> float:
        """Mean loss of `rows`; `on_rows(n)` is called as batches of n rows are done (progress)."""
        return self.fn(rows, on_rows)
