"""The periodic samples of a training run: `samples/RUN/samples-N`, classic banners.

As in the classic script: the prompt is one random token of the training data, shared by the
`batch_size` rows of each generation; temperature 1; `--top_k` (default 40), or only `--top_p` when it
is above 0; each text is the prompt token and its continuation under `======== SAMPLE i ========`.
The file is written atomically in `--encoding`. Prompt and generation are seeded by (seed, N), not by
the training sampler, so sampling never changes the batches a run trains on.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np

from .encoder import get_encoder
from .files import atomic_write_bytes
from .generate import Controls, Generator
from .model import GPT2

logger = logging.getLogger(__name__)


def file_entry(index: int, text: str) -> str:
    """One sample of a `samples-N` file, under the classic train.py's banner (8 `=` each side; the
    sampling scripts' console banner, `sample.banner`, is the classic interactive script's 40)."""
    return f"======== SAMPLE {index} ========\n{text}\n"


class SampleWriter:
    """Writes `samples-N` files from the current weights of a training model."""

    def __init__(self, gpt: GPT2, vocab_dir: Path, folder: Path, *, seed: int, length: int, num: int,
                 batch_size: int, top_k: int, top_p: float, precision: str, encoding: str,
                 on_sample: Callable[[str], None] | None = None):
        self.gpt, self.folder, self.seed = gpt, folder, seed
        self.length, self.num, self.batch_size = length, num, batch_size
        # The classic rule: top_p above 0 replaces top_k.
        self.top_k, self.top_p = (0, top_p) if top_p > 0 else (top_k, 1.0)
        self.precision, self.encoding, self.on_sample = precision, encoding, on_sample
        self.vocab_dir = vocab_dir
        self._encoder = None
        self._generator: Generator | None = None

    def generate(self, prompt: int, seed: tuple[int, int]) -> np.ndarray:
        """[batch_size, 1 + length] token ids: the prompt token and its continuation."""
        gen = self._fresh_generator()
        prompts = np.full([self.batch_size, 1], prompt, np.int32)
        controls = Controls.make(seed=seed, temperature=1.0, top_k=self.top_k, top_p=self.top_p)
        tokens = [t for t, _ in gen.generate(prompts, self.length, controls)]
        return np.concatenate([prompts, np.stack(tokens, axis=1)], axis=1)

    def _fresh_generator(self) -> Generator:
        """A generator reading the current weights (its bf16/transposed copies are refreshed)."""
        if self._generator is None:
            self._generator = Generator(self.gpt, self.precision)
        else:
            self._generator.refresh()
        return self._generator

    def write(self, step: int, sampler) -> Path:
        """Generate `num` samples at step `step`; write them; hand them to `on_sample`."""
        if self._encoder is None:
            self._encoder = get_encoder(self.vocab_dir)
        rng = np.random.default_rng([self.seed, 7, step])
        chunk_ends = np.cumsum(sampler.lengths)
        k = int(rng.integers(chunk_ends[-1]))
        c = int(np.searchsorted(chunk_ends, k, side="right"))
        prompt = int(sampler.chunks[c][k - (int(chunk_ends[c - 1]) if c else 0)])
        texts, call = [], 0
        while len(texts) < self.num:
            rows = self.generate(prompt, (self.seed, step * 1000 + call))
            call += 1
            for row in rows[: self.num - len(texts)]:
                texts.append(file_entry(len(texts) + 1, self._encoder.decode(row.tolist())))
        text = "\n".join(texts)
        path = self.folder / f"samples-{step}"
        atomic_write_bytes(path, text.encode(self.encoding, errors="replace"))
        logger.info("wrote %s", path)
        if self.on_sample is not None:
            self.on_sample(text)
        return path
