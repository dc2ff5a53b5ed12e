"""Samples as text: flag checks, the n_ctx rule, seeds, stop strings and streaming, for the scripts.

The compiled part is `generate.Generator` (token ids); this module turns ids into text row by row:
- A row finishes at `<|endoftext|>` (when `stop_at_endoftext`, the token itself is not shown) or at
  the first of the user's `stop` strings (the text is cut just before it; the stop string is not
  shown). Rows of a batch finish independently; the batch ends when every row has.
- Streaming: the first row of each batch is shown as it is generated; the other rows of the batch
  come out whole once the batch is done. Text that could still turn out to be the start of a stop
  string is held back until it cannot.
- The n_ctx rule: the last new token is never fed back, so a prompt of P tokens leaves room for
  `n_ctx + 1 - P` new ones. A longer prompt keeps its last `n_ctx + 1 - length` tokens, with a
  warning; `--length` above n_ctx is an error.
- Seeds: no seed means a random one (logged at debug level). The token at position t of batch b
  of a prompt draws its noise from the stateless seed (seed, b * 2**20 + t), so the same seed and
  flags give the same text every time, in any process, whatever ran before.
"""

from __future__ import annotations

import dataclasses
import logging
import random
from collections.abc import Iterator
from pathlib import Path

from .errors import UserError
from .machine import PRECISION_CHOICES
from .options import check_value, opt, options_of
from .tokens import ENDOFTEXT_ID

logger = logging.getLogger(__name__)
# In a `--keep_warm` process (`warm`), the last model `load` made, by its files: later launches
# with the same flags reuse it. None (no reuse) everywhere else.
RESIDENT: dict | None = None



@dataclasses.dataclass(frozen=True)
class Settings:
    """What to sample: the sampling controls of the command line, checked."""

    length: int
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    repetition_penalty: float = 1.0
    stop: tuple[str, ...] = ()
    stop_at_endoftext: bool = True
    seed: int = 0

    def controls(self, stream: int, eos: int = ENDOFTEXT_ID):
        from .generate import Controls

        return Controls.make(
            seed=(self.seed, stream),
            temperature=self.temperature,
            top_k=self.top_k,
            top_p=self.top_p,
            penalty=self.repetition_penalty,
            eos=eos if self.stop_at_endoftext else -1,
        )


@dataclasses.dataclass(frozen=True, kw_only=True)
class SamplingFlags:
    """The sampling options every sampling command shares (the two classic scripts, the Python API's
    `generate`, the server's defaults). Defaults are the interactive script's; the unconditional
    script overrides `length`'s meaning (None = n_ctx there, n_ctx // 2 here)."""

    seed: int | None = opt(None, "seed of the random draws; the same seed and flags give the same text "
                                 "(default: random, shown with --verbose)")
    length: int | None = opt(None, "new tokens per sample (default n_ctx // 2); a prompt too long to "
                                   "leave room keeps its last tokens, with a warning", minimum=1)
    temperature: float = opt(1.0, "divides the logits; below 1 is more predictable, 0 is greedy",
                             minimum=0.0)
    top_k: int = opt(0, "sample among the k most likely tokens only; 0 = no limit", minimum=0)
    top_p: float = opt(1.0, "sample among the most likely tokens whose mass reaches p (after top_k); "
                            "0 or 1 = off", minimum=0.0, maximum=1.0)
    repetition_penalty: float = opt(1.0, "CTRL's penalty on tokens already in the prompt or sample "
                                         "(1.2 is common); 1 = off", above=0.0)
    stop: tuple[str, ...] = opt((), "a string, or a list like '[\"\\n\\n\", \"THE END\"]': a sample "
                                    "ends just before it")
    stop_at_endoftext: bool = opt(True, "end a sample at <|endoftext|> (not shown); off: keep going "
                                        "and show it, as the classic script did")
    precision: str = opt("auto", "auto (bf16 where the CPU has native bf16 or on a GPU, else fp32), "
                                 "fp32 (exactly the reference model), or bf16",
                       choices=PRECISION_CHOICES)


def _number(name: str, value, kind: type):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise UserError(f"--{name} must be a number, got {value!r}")
    if kind is int and value != int(value):
        raise UserError(f"--{name} must be a whole number, got {value!r}")
    return kind(value)


def check_flags(*, nsamples, batch_size, length, temperature, top_k, top_p, repetition_penalty,
                precision, seed=None, forever_ok=False) -> None:  # fmt: skip
    """Raise a one-line UserError for the first bad sampling flag (before any model is loaded); the
    limits of the `SamplingFlags` options are those of their `opt` declarations."""
    batch_size = _number("batch_size", batch_size, int)
    nsamples = _number("nsamples", nsamples, int)
    if batch_size < 1:
        raise UserError(f"--batch_size must be at least 1, got {batch_size}")
    if nsamples < 0 or (nsamples == 0 and not forever_ok):
        least = 0 if forever_ok else 1
        raise UserError(f"--nsamples must be at least {least}, got {nsamples}")
    if nsamples % batch_size:
        raise UserError(
            f"--nsamples ({nsamples}) must be a multiple of --batch_size ({batch_size})"
        )
    given = dict(length=length, temperature=temperature, top_k=top_k, top_p=top_p,
                 repetition_penalty=repetition_penalty, precision=precision, seed=seed)
    for o in options_of(SamplingFlags):
        if o.name in given:
            value = given[o.name]
            if o.kind in (int, float) and value is not None:
                value = _number(o.name, value, o.kind)
            check_value(o, value)


def pick_seed(seed: int | None) -> int:
    """The user's seed, or a random one (logged at debug level so a run can be repeated)."""
    if seed is None:
        seed = random.SystemRandom().randrange(2**31)
        logger.debug("seed: %d (pass --seed %d to repeat)", seed, seed)
    return int(seed) % 2**63


def settings_from_flags(n_ctx: int, default_length: int, *, length, temperature, top_k, top_p,
                        repetition_penalty, stops, stop_at_endoftext, seed) -> Settings:
    """The sampling scripts' flags (already through `check_flags` and `parse_stops`, which run
    before the model loads) as `Settings` for a model of context `n_ctx`; `--length` defaults to
    `default_length`, the seed to a random one."""
    return Settings(
        length=resolve_length(length, default_length, n_ctx),
        temperature=float(temperature),
        top_k=int(top_k),
        top_p=float(top_p),
        repetition_penalty=float(repetition_penalty),
        stop=tuple(stops),
        stop_at_endoftext=bool(stop_at_endoftext),
        seed=pick_seed(seed),
    )


def resolve_length(length: int | None, default: int, n_ctx: int) -> int:
    """`--length`, or the script's default; never above n_ctx."""
    length = default if length is None else int(length)
    if length > n_ctx:
        raise UserError(f"--length must be at most n_ctx ({n_ctx}) for this model, got {length}")
    return length


def fit_prompt(ids: list[int], length: int, n_ctx: int) -> list[int]:
    """Keep the last tokens of a prompt too long for `length` new tokens (with a warning)."""
    room = n_ctx + 1 - length
    if len(ids) > room:
        logger.warning(
            "warning: the prompt has %d tokens; with --length %d only the last %d fit in the "
            "model's context of %d, so the start of the prompt is left out",
            len(ids), length, room, n_ctx,
        )  # fmt: skip
        ids = ids[-room:]
    return ids


class _Row:
    """One row's text: incremental decoding, the stop strings, and what is safe to show."""

    def __init__(self, encoder, stop: tuple[str, ...]):
        self.decoder = encoder.stream_decoder()
        self.stop = stop
        self.hold = max((len(s) for s in stop), default=1) - 1
        self.text = ""
        self.shown = 0
        self.finished = False

    def add(self, ids: list[int]) -> None:
        if self.finished:
            return
        start = max(0, len(self.text) - self.hold)
        self.text += self.decoder.feed(ids)
        self._cut(start)

    def close(self) -> None:
        if not self.finished:
            start = max(0, len(self.text) - self.hold)
            self.text += self.decoder.flush()
            self._cut(start)
        self.finished = True

    def _cut(self, start: int) -> None:
        hits = [i for i in (self.text.find(s, start) for s in self.stop) if i >= 0]
        if hits:
            self.text = self.text[: min(hits)]
            self.finished = True

    def take(self) -> str:
        """The text not shown yet that no stop string can still claim."""
        end = len(self.text) if self.finished else max(self.shown, len(self.text) - self.hold)
        piece, self.shown = self.text[self.shown : end], end
        return piece


def load(models_dir: str, model_name: str, run_name, checkpoint, precision: str):
    """(Generator, encoder, hparams) for the weights the flags name (see locate.open_model)."""
    from .locate import open_model

    return load_opened(open_model(models_dir, model_name, run_name, checkpoint), precision)


def read_model(opened: tuple, precision: str):
    """(Generator, encoder) for what `locate.open_model` found: (hparams, vocabulary folder,
    checkpoint prefix). The weights are read (and the decoder's copies made) in a second thread
    while this one builds the vocabulary: reading runs in TensorFlow's C++ code, building in
    Python, so on 2 cores the vocabulary's 0.13-0.2 s come off a launch. Nothing here traces a
    function meanwhile: TensorFlow numbers traced functions and every new tensor from one counter,
    and the compiled programs' names (part of their key in the XLA cache) must not depend on which
    thread got there first. An error in the vocabulary is raised first, as when they were read one
    after the other."""
    from concurrent.futures import ThreadPoolExecutor

    from .checkpoint import load_model
    from .encoder import get_encoder
    from .generate import Generator

    hp, folder, prefix = opened
    logger.debug("weights: %s; vocabulary: %s", prefix, folder)
    with ThreadPoolExecutor(1, thread_name_prefix="gpt2easy-weights") as pool:
        weights = pool.submit(lambda: Generator(load_model(prefix, hp, frozen=True), precision))
        encoder = get_encoder(folder)
        return weights.result(), encoder


def load_opened(opened: tuple, precision: str):
    """`load` for what `locate.open_model` found: (hparams, vocabulary folder, checkpoint prefix)."""
    hp, folder, prefix = opened
    key = None if RESIDENT is None else _stamp(prefix, folder, precision)
    if key is not None and key in RESIDENT:
        logger.debug("weights: %s, loaded already", prefix)
        return RESIDENT[key]
    loaded = *read_model(opened, precision), hp
    if key is not None:  # keep only the newest: one model's memory
        RESIDENT.clear()
        RESIDENT[key] = loaded
    return loaded


def warm_up(generator, batch_size: int, settings: Settings) -> None:
    """Compile what a short prompt needs with these settings (the prompt pass for up to 16 tokens
    and the step for its cache length) for a 10-token prompt: done while the user types the first
    prompt (`ahead`). Generation draws its noise by position, so this changes no later text."""
    n = max(1, min(10, generator.hp.n_ctx + 1 - settings.length))
    generator.warm_up(batch_size, n, settings.length)


def _stamp(prefix: str, folder, precision: str) -> tuple:
    """What a load depends on: the precision and the path, size and modification time of the
    files it reads (the checkpoint's, the model folder's): a changed file means a new load."""
    files = {*Path(prefix).parent.glob(Path(prefix).name + "*"), *Path(folder).glob("*")}
    stats = ((str(f.resolve()), f.stat()) for f in files if f.is_file())
    return precision, tuple(sorted((name, st.st_size, st.st_mtime_ns) for name, st in stats))


def parse_stops(stop) -> tuple[str, ...]:
    """`--stop` as given by fire (a string, a number, or a list): a tuple of non-empty strings,
    with the escapes \\n, \\t and \\\\ written on a command line turned into the characters."""
    if stop is None:
        return ()
    items = stop if isinstance(stop, (list, tuple)) else [stop]
    out = []
    for item in items:
        text = str(item)
        text = text.replace("\\\\", "\0").replace("\\n", "\n").replace("\\t", "\t")
        text = text.replace("\0", "\\")
        if not text:
            raise UserError("--stop strings must not be empty")
        out.append(text)
    return tuple(out)


def sample_batch(generator, encoder, prompt: list[int], batch_size: int,
                 settings: Settings, stream: int) -> Iterator[tuple[int, str, bool]]:  # fmt: skip
    """Generate one batch from `prompt` (the same ids in every row) and yield text for display:
    (row, piece, row_finished) — row 0 piece by piece as it is generated, the other rows whole
    after it, each row ending with a (row, "", True)."""
    import numpy as np  # here, so that the command lines' flag checks start without NumPy

    rows = [_Row(encoder, settings.stop) for _ in range(batch_size)]
    finished = np.zeros(batch_size, bool)
    eos = ENDOFTEXT_ID if settings.stop_at_endoftext else -1
    prompts = np.array([prompt] * batch_size, dtype=np.int32)
    steps = generator.generate(prompts, settings.length, settings.controls(stream), finished)
    yield 0, "", False
    for tokens, done in steps:
        for r, row in enumerate(rows):
            if not row.finished:
                if tokens[r] == eos:
                    row.close()
                else:
                    row.add([int(tokens[r])])
                if done[r]:
                    row.close()
            finished[r] = row.finished
        piece = rows[0].take()
        if piece:
            yield 0, piece, False
    for r, row in enumerate(rows):
        row.close()
        piece = row.take()
        if piece or r > 0:
            yield r, piece, False
        yield r, "", True


def banner(number: int) -> str:
    """The classic interactive script's separator before sample `number` (1-based) on the console
    (training's `samples-N` files use train.py's shorter one, `sample_writer.file_entry`)."""
    return "=" * 40 + f" SAMPLE {number} " + "=" * 40


def stream_samples(generator, encoder, prompt: list[int], batch_size: int, settings: Settings,
                   stream: int, first_number: int, out) -> list[str]:  # fmt: skip
    """Write one batch to `out` under classic banners (numbered from `first_number`), streaming
    the first row; return the rows' texts."""
    texts: dict[int, str] = {}
    for row, piece, end in sample_batch(generator, encoder, prompt, batch_size, settings, stream):
        if row not in texts:
            texts[row] = ""
            out.write(banner(first_number + row) + "\n")
        texts[row] += piece
        out.write(piece + ("\n" if end else ""))
        out.flush()
    return [texts[r] for r in range(batch_size)]
