"""Optimizers and the learning-rate schedule, written over plain `tf.Variable`s.

Why our own and not Keras: the optimizer's slots are ordinary variables that we save by name in the
checkpoint (`optimizer/<weight name>/m`, `.../v`) beside the OpenAI-named weights, and restore exactly,
so a resumed run continues with the same Adam statistics (the classic script lost them on every resume).

- `adam`: TF1's `AdamOptimizer` (beta1 .9, beta2 .999, epsilon 1e-8 added after the square root, bias
  correction folded into the step size), the classic default. It runs as TF's fused
  `ResourceApplyAdam` kernel: one pass over each weight instead of a dozen element-wise ops.
- `adamw`: the same plus decoupled weight decay `w -= lr * weight_decay * w` on matrices only
  (2-D and up: embeddings and projections; not biases or layer-norm gains).
- `sgd`: `w -= lr * g` (the classic `GradientDescentOptimizer`; needs a much larger rate, ~6e-4).

The schedule is a pure function of the number of completed updates (nanoGPT's `get_lr`).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import tensorflow as tf

from .errors import UserError

OPTIMIZERS = ("adam", "adamw", "sgd")
LR_DECAYS = ("none", "cosine", "linear")


@dataclasses.dataclass(frozen=True)
class Schedule:
    """Linear warm-up over `warmup_steps`, then `decay` from `learning_rate` to `min_lr` at
    `decay_steps` (held there afterwards). `decay="none"` keeps the classic constant rate."""

    learning_rate: float = 2e-5
    warmup_steps: int = 0
    decay: str = "none"
    decay_steps: int = 0
    min_lr: float = 0.0

    def __post_init__(self) -> None:
        if not self.learning_rate > 0:
            raise UserError(f"--learning_rate must be > 0, got {self.learning_rate}")
        if self.warmup_steps < 0:
            raise UserError(f"--warmup_steps must be >= 0, got {self.warmup_steps}")
        if self.decay not in LR_DECAYS:
            raise UserError(f"--lr_decay must be one of {', '.join(LR_DECAYS)}, got {self.decay!r}")
        if not 0 <= self.min_lr <= self.learning_rate:
            raise UserError(f"--min_lr must be between 0 and --learning_rate, got {self.min_lr}")
        if self.decay != "none" and self.decay_steps <= self.warmup_steps:
            raise UserError(f"--lr_decay {self.decay} needs --lr_decay_steps (or --steps) greater "
                            f"than --warmup_steps ({self.warmup_steps})")

    def __call__(self, step: int) -> float:
        """The rate for the update that follows `step` completed updates."""
        if step < self.warmup_steps:
            return self.learning_rate * (step + 1) / (self.warmup_steps + 1)
        if self.decay == "none":
            return self.learning_rate
        progress = min(1.0, (step - self.warmup_steps) / (self.decay_steps - self.warmup_steps))
        if self.decay == "cosine":
            factor = 0.5 * (1.0 + math.cos(math.pi * progress))
        else:
            factor = 1.0 - progress
        return self.min_lr + factor * (self.learning_rate - self.min_lr)


class Optimizer(tf.Module):
    """Adam / AdamW / SGD over a dict of named variables, with slots as named variables.

    `apply(grads, lr, step)` is meant to run inside the compiled training step; `step` is the number
    of updates completed before this one (Adam's bias correction uses step + 1).
    """

    def __init__(self, name: str, weights: dict[str, tf.Variable], *, beta1: float = 0.9,
                 beta2: float = 0.999, epsilon: float = 1e-8, weight_decay: float = 0.0):
        super().__init__(name="optimizer")
        if name not in OPTIMIZERS:
            raise UserError(f"--optimizer must be one of {', '.join(OPTIMIZERS)}, got {name!r}")
        if weight_decay < 0:
            raise UserError(f"--weight_decay must be >= 0, got {weight_decay}")
        if weight_decay and name != "adamw":
            raise UserError(f"--weight_decay needs --optimizer adamw (got --optimizer {name})")
        self.kind = name
        self.weights = dict(weights)
        self.beta1, self.beta2, self.epsilon = beta1, beta2, epsilon
        self.weight_decay = weight_decay
        self.slots: dict[str, tf.Variable] = {}
        if name in ("adam", "adamw"):
            for wname, var in self.weights.items():
                for slot in ("m", "v"):
                    self.slots[f"optimizer/{wname}/{slot}"] = tf.Variable(
                        tf.zeros_like(var), trainable=False, name=f"{wname}/{slot}")

    def apply(self, grads: dict[str, tf.Tensor], lr: tf.Tensor, step: tf.Tensor) -> None:
        lr = tf.cast(lr, tf.float32)
        if self.kind == "sgd":
            for name, var in self.weights.items():
                var.assign_sub(lr * grads[name])
            return
        t = tf.cast(step, tf.float32) + 1.0
        b1_power, b2_power = tf.pow(self.beta1, t), tf.pow(self.beta2, t)
        for name, var in self.weights.items():
            if self.weight_decay and len(var.shape) >= 2:
                var.assign_sub(lr * self.weight_decay * var)
            tf.raw_ops.ResourceApplyAdam(
                var=var.handle, m=self.slots[f"optimizer/{name}/m"].handle,
                v=self.slots[f"optimizer/{name}/v"].handle, beta1_power=b1_power,
                beta2_power=b2_power, lr=lr, beta1=tf.constant(self.beta1),
                beta2=tf.constant(self.beta2), epsilon=tf.constant(self.epsilon), grad=grads[name])

    def state(self) -> dict[str, tf.Tensor]:
        """Slots by checkpoint name (`optimizer/<weight>/m` and `/v`), as tensors: a save writes
        them without two copies through NumPy (1 GB each for 124M's Adam slots)."""
        return {name: tf.convert_to_tensor(var) for name, var in self.slots.items()}

    def restore(self, tensors: dict[str, np.ndarray]) -> bool:
        """Load the slots from checkpoint tensors; False (slots left at zero) if any is missing."""
        if not self.slots:
            return True
        if not all(name in tensors and tuple(tensors[name].shape) == tuple(var.shape)
                   for name, var in self.slots.items()):
            return False
        for name, var in self.slots.items():
            var.assign(tensors[name])
        return True


def clip_by_global_norm(grads: dict[str, tf.Tensor], clip: float) -> tuple[dict, tf.Tensor]:
    """Scale all gradients down together when their global L2 norm exceeds `clip`.

    Returns the (clipped) gradients and the norm before clipping (0 when `clip` is 0: not computed)."""
    if not clip:  # skip the extra pass over every gradient
        return grads, tf.constant(0.0)
    names = list(grads)
    norm = tf.linalg.global_norm([grads[n] for n in names])
    scale = tf.minimum(1.0, clip / tf.maximum(norm, 1e-12))
    return {n: grads[n] * scale for n in names}, norm
