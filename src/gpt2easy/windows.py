"""The fair window sampler for training batches (see `Sampler`)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


class Sampler:
    """Random training windows, uniform over all windows that lie inside one chunk.

    Windows never cross a chunk boundary (chunks are separate texts or archives). Unlike the
    classic sampler (rejection sampling, with an off-by-one that never drew a chunk's last
    window) every window of every chunk long enough is equally likely. The random state is a
    `numpy.random.Generator`; `get_state()`/`set_state()` save and restore it exactly (plain
    JSON-able dict), so a resumed run draws the same windows as an uninterrupted one.
    """

    def __init__(self, chunks: Sequence[np.ndarray], seed: int | None = None):
        self.chunks = [np.asarray(c) for c in chunks]
        self.lengths = np.array([len(c) for c in self.chunks], dtype=np.int64)
        self.total_tokens = int(self.lengths.sum())
        self.rng = np.random.Generator(np.random.PCG64(seed))
        self._cumulative: dict[int, np.ndarray] = {}

    @property
    def max_length(self) -> int:
        """The longest window available: the length of the longest chunk (0 if none)."""
        return int(self.lengths.max()) if len(self.lengths) else 0

    def _windows(self, length: int) -> np.ndarray:
        if not 1 <= length <= self.max_length:
            raise ValueError(
                f"cannot sample {length}-token windows: the longest chunk has {self.max_length} "
                f"tokens (use shorter windows or more text per chunk, e.g. a larger --combine)"
            )
        if length not in self._cumulative:
            self._cumulative[length] = np.cumsum(np.maximum(self.lengths - length + 1, 0))
        return self._cumulative[length]

    def window_count(self, length: int) -> int:
        """How many distinct windows of `length` tokens there are."""
        return int(self._windows(length)[-1])

    def _window(self, cumulative: np.ndarray, k: int, length: int) -> np.ndarray:
        c = int(np.searchsorted(cumulative, k, side="right"))
        start = k - (int(cumulative[c - 1]) if c else 0)
        return self.chunks[c][start : start + length]

    def sample(self, length: int) -> np.ndarray:
        """One window of `length` consecutive tokens from one chunk."""
        cumulative = self._windows(length)
        return self._window(cumulative, int(self.rng.integers(cumulative[-1])), length)

    def sample_batch(self, batch_size: int, length: int) -> np.ndarray:
        """`batch_size` independent windows as an int32 array [batch_size, length]."""
        cumulative = self._windows(length)
        ks = self.rng.integers(cumulative[-1], size=batch_size)
        return np.stack([self._window(cumulative, int(k), length) for k in ks]).astype(np.int32)

    def get_state(self) -> dict:
        """The random state as a plain dict of ints and strings (json.dumps works on it)."""
        return json_copy(self.rng.bit_generator.state)

    def set_state(self, state: dict) -> None:
        self.rng.bit_generator.state = json_copy(state)


def json_copy(state: dict) -> dict:
    return {k: json_copy(v) if isinstance(v, dict) else v for k, v in state.items()}
