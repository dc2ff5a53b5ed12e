"""`Model`: a model loaded for generation, what `gpt2easy.load` returns.

It samples exactly as `interactive_conditional_samples.py` does (the same `sample` functions): the
same prompt, options and seed give the same text. With `batch_size` 1, several prompts (or samples)
go through side by side in batches of up to `BULK_ROWS` (`bulk`, prompts of different lengths
together), each row giving the text it gives alone; with `batch_size` > 1, prompt after prompt
(`generate_each`), as the script does.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator

from . import sample
from .api import check_options
from .errors import UserError
from .folders import ModelFlags
from .generate import Generator
from .locate import open_model
from .sample import SamplingFlags, Settings
from .tokens import ENDOFTEXT_ID

# generate()'s sampling options: the scripts' (SamplingFlags) but precision, which load() takes.
_OPTIONS = {f.name: f for f in dataclasses.fields(SamplingFlags) if f.name != "precision"}
_DEFAULTS = SamplingFlags()


class Model:
    """A GPT-2 ready to generate: `generate` for whole texts, `stream` for text as it comes.

    Sampling options (all keywords, defaults as the scripts'): seed, length (new tokens, default
    n_ctx // 2), temperature, top_k, top_p, repetition_penalty, stop (a string or a list of
    strings), stop_at_endoftext. Without a seed each call draws a random one.
    """

    def __init__(self, generator: Generator, encoder, hparams, checkpoint: str, precision: str):
        self.generator = generator
        self.encoder = encoder
        self.hparams = hparams
        self.checkpoint = checkpoint  # the checkpoint prefix the weights came from
        self.precision = precision

    @classmethod
    def open(cls, flags: ModelFlags, precision: str, checkpoint_dir: str = "checkpoint") -> Model:
        hp, folder, prefix = open_model(flags.models_dir, flags.model_name, flags.run_name,
                                        flags.checkpoint, checkpoint_dir)  # fmt: skip
        generator, encoder = sample.read_model((hp, folder, prefix), precision)
        return cls(generator, encoder, hp, prefix, precision)

    def __repr__(self) -> str:
        hp = self.hparams
        return (f"<gpt2easy Model {self.checkpoint}: {hp.n_layer} layers x {hp.n_embd}, "
                f"n_ctx {hp.n_ctx}, {self.precision}>")  # fmt: skip

    def generate(self, prompts: str | list[str], *, nsamples: int = 1, batch_size: int = 1,
                 **options) -> list[str]:  # fmt: skip
        """Continue each prompt; returns the texts (the continuations, without the prompt).

        One text per prompt, or with `nsamples` > 1 that many per prompt, prompt by prompt:
        `[p0 s1, p0 s2, ..., p1 s1, ...]`. With `batch_size` 1 (the default) several prompts (and
        samples) run side by side, up to 8 rows at once, each giving the text it gives alone, which
        is the script's text with `--batch_size 1`; with `batch_size` > 1, that many samples of a
        prompt are generated together as the script does (nsamples must be a multiple of it),
        prompt after prompt. A lone string is one prompt (the result is still a list). The
        empty prompt "" starts from <|endoftext|>: the same text as generate_unconditional_samples.py
        with the same options.
        """
        prompts = as_list(prompts)
        settings = self._settings(nsamples, batch_size, options)
        rows = len(prompts) * int(nsamples)
        if int(batch_size) == 1 and rows > 1:
            # Several samples with --batch_size 1's noise rule: `bulk` runs them side by side
            # (prompts of any lengths together; it encodes them) and gives each its text alone.
            from .bulk import generate_texts

            size = min(BULK_ROWS, 1 << (rows - 1).bit_length())
            done = generate_texts(self.generator, self.encoder, prompts, settings, size, int(nsamples))
            return [s.text for s in done]
        ids = [self._prompt_ids(p, settings) for p in prompts]
        texts = generate_each(self, ids, int(nsamples), int(batch_size), settings)
        return [t for per_prompt in texts for t in per_prompt]

    def stream(self, prompt: str, **options) -> Iterator[str]:
        """Yield the continuation of `prompt` piece by piece as it is generated (one sample; the
        pieces joined equal `generate(prompt, ...)[0]` with the same options and seed)."""
        (prompt,) = as_list(prompt)
        settings = self._settings(1, 1, options)
        ids = self._prompt_ids(prompt, settings)  # checked now, not at the first next()
        return (piece for _, piece, _ in sample.sample_batch(
            self.generator, self.encoder, ids, 1, settings, 0) if piece)  # fmt: skip

    def _settings(self, nsamples, batch_size, options: dict) -> Settings:
        hint = " (precision is an option of load)" if "precision" in options else ""
        options = check_options(options, _OPTIONS, "generate", hint)
        o = {name: options.get(name, getattr(_DEFAULTS, name)) for name in _OPTIONS}
        sample.check_flags(nsamples=nsamples, batch_size=batch_size, length=o["length"],
                           temperature=o["temperature"], top_k=o["top_k"], top_p=o["top_p"],
                           repetition_penalty=o["repetition_penalty"], precision=self.precision,
                           seed=o["seed"])  # fmt: skip
        stops = sample.parse_stops(o["stop"])
        n_ctx = self.hparams.n_ctx
        return sample.settings_from_flags(
            n_ctx, n_ctx // 2, length=o["length"], temperature=o["temperature"], top_k=o["top_k"],
            top_p=o["top_p"], repetition_penalty=o["repetition_penalty"], stops=stops,
            stop_at_endoftext=o["stop_at_endoftext"], seed=o["seed"])  # fmt: skip

    def _prompt_ids(self, prompt: str, settings: Settings) -> list[int]:
        ids = self.encoder.encode(prompt) if prompt else [ENDOFTEXT_ID]
        return sample.fit_prompt(ids, settings.length, self.hparams.n_ctx)


BULK_ROWS = 8  # rows side by side for a list of prompts (124M, 2 cores: 8 rows take 1.5x (fp32) to
#                2.9x (bf16) one row's time per token, bench/generate.py --batches)


def generate_each(model: Model, prompts: list[list[int]], nsamples: int, batch_size: int,
                  settings: Settings) -> list[list[str]]:  # fmt: skip
    """`nsamples` texts for each prompt, one prompt at a time, batch b of a prompt drawing from
    stream b (as interactive_conditional_samples.py does)."""
    out = []
    for ids in prompts:
        texts: list[str] = []
        for b in range(nsamples // batch_size):
            rows = [""] * batch_size
            for row, piece, _ in sample.sample_batch(model.generator, model.encoder, ids, batch_size,
                                                     settings, b):  # fmt: skip
                rows[row] += piece
            texts += rows
        out.append(texts)
    return out


def as_list(prompts: str | Iterable[str]) -> list[str]:
    """One prompt or several, as a list (a lone string is one prompt, not its characters)."""
    if isinstance(prompts, str):
        return [prompts]
    prompts = list(prompts)
    bad = [p for p in prompts if not isinstance(p, str)]
    if bad:
        raise UserError(f"prompts must be strings, got {bad[0]!r}")
    return prompts
