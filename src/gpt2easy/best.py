"""The best validation loss so far: what `--keep_best` keeps and `--early_stopping` waits on.

Which validations count: those at steps that are multiples of `--val_every` (the one a session
makes at its start step otherwise is only shown), each once. The state travels inside every
checkpoint (`train/best_loss`, `train/best_step`, `train/bad_validations`,
`train/last_validation`), so a resumed run decides exactly as an uninterrupted one would: a
checkpoint saved at step N before N's validation does not hold it, and the resumed run counts it
again (same weights, same fixed windows, same loss); one saved after it holds it, and the resumed
run does not count it twice. The run folder's `best.json` (locate.write_best) names the best
checkpoint for `--restore_from best` and `--checkpoint best`.

This module imports no TensorFlow.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np


@dataclasses.dataclass
class Best:
    loss: float = math.inf
    step: int = -1  # -1: no validation counted yet
    bad: int = 0  # counted validations since the last improvement
    last: int = -1  # step of the last counted validation

    @classmethod
    def from_state(cls, extra: dict) -> Best:
        """The state saved in a checkpoint's `train/` entries (a fresh one when absent)."""
        if "train/best_step" not in extra:
            return cls()
        return cls(float(extra["train/best_loss"]), int(extra["train/best_step"]),
                   int(extra["train/bad_validations"]), int(extra["train/last_validation"]))

    def state(self) -> dict[str, np.ndarray]:
        return {"train/best_loss": np.float64(self.loss), "train/best_step": np.int64(self.step),
                "train/bad_validations": np.int64(self.bad), "train/last_validation": np.int64(self.last)}

    def counts(self, step: int, val_every: int) -> bool:
        """Whether the validation at `step` counts (a multiple of val_every, not counted yet)."""
        return val_every > 0 and step % val_every == 0 and step != self.last

    def update(self, loss: float, step: int) -> bool:
        """Count the validation loss of `step`; True when it is a new best (strictly lower)."""
        self.last = step
        if loss < self.loss:
            self.loss, self.step, self.bad = float(loss), step, 0
            return True
        self.bad += 1
        return False

    def exhausted(self, patience: int) -> bool:
        """`patience` counted validations in a row without improvement (0: never)."""
        return patience > 0 and self.bad >= patience
