"""Many prompts at once: batches of prompts of any lengths, and the resumable `--prompts_file` run.

`generate_texts(generator, encoder, prompts, settings, batch_size)` is the library entry point (the
Python API's `generate(list_of_prompts)`, the server and the `--prompts_file` option call it): the
(prompt, sample number) rows go through the compiled generator `batch_size` at a time, prompts of
different lengths side by side (left-padded, see `generate`).

The seed rule: sample j of a prompt draws the noise of stream j, lane 0, which is what sample j + 1
of `interactive_conditional_samples.py --batch_size 1` draws for that prompt with the same seed. So
a sample's text depends on (prompt, j, seed, settings) only, never on the batch size or on which
other prompts shared its batch (up to float rounding, which can flip a near-tie very rarely).

`run_prompts_file(...)` reads a prompts file and writes one JSON line per sample to `--output`,
rewritten atomically after every batch, so Ctrl+C or a kill leaves the samples of the finished
batches; a second run with the same output skips the prompts already answered.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

from .errors import UserError
from .files import atomic_write_text
from .sample import Settings, _Row, banner, fit_prompt
from .tokens import ENDOFTEXT_ID

logger = logging.getLogger(__name__)


def check_bulk_flags(prompts_file, output, batch_size) -> None:
    """One-line UserErrors for the many-prompts flags (before the model loads)."""
    for name, value in (("prompts_file", prompts_file), ("output", output)):
        if value is not None and not isinstance(value, str):
            raise UserError(f"--{name} must be a file name, got {value!r}")
    if output is not None and prompts_file is None:
        raise UserError("--output needs --prompts_file (the prompts to answer)")
    if prompts_file is not None and not Path(prompts_file).is_file():
        raise UserError(f"--prompts_file {prompts_file} does not exist")
    if prompts_file is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int)
                                     or batch_size < 1):  # otherwise sample.check_flags checks it
        raise UserError(f"--batch_size must be a whole number of at least 1, got {batch_size!r}")


@dataclasses.dataclass(frozen=True)
class Sample:
    """One generated sample. `tokens`: new tokens up to the one that ended it (the end-of-text
    token not counted; a stop string's tokens counted, though its text is cut)."""

    prompt: str
    index: int  # sample number of this prompt, from 0
    text: str
    tokens: int
    seed: int
    line: int = 0  # the prompt's number: its line in a prompts file, else its place in the list

    def record(self) -> dict:
        return {"line": self.line, "prompt": self.prompt, "index": self.index, "text": self.text,
                "tokens": self.tokens, "seed": self.seed}  # fmt: skip


def prompt_ids(encoder, prompt: str, settings: Settings, n_ctx: int) -> list[int]:
    """A prompt's ids as its run alone sees them: an empty prompt starts after <|endoftext|>
    (an unconditional sample); a long one keeps its last tokens (see `sample.fit_prompt`)."""
    ids = encoder.encode(prompt) if prompt else [ENDOFTEXT_ID]
    return fit_prompt(ids or [ENDOFTEXT_ID], settings.length, n_ctx)


def generate_texts(generator, encoder, prompts: list[str], settings: Settings, batch_size: int = 8,
                   nsamples: int = 1, *, lines: list[int] | None = None,
                   skip: Iterable[tuple[int, int]] = (),
                   on_batch: Callable[[list[Sample]], None] | None = None) -> list[Sample]:  # fmt: skip
    """Generate `nsamples` samples for each prompt; return them as `Sample`s in (prompt, index)
    order (prompt order as given).

    Contract:
    - Sample j of a prompt is what that prompt gives alone with the same `settings` (seed
      included) as its sample j (stream j, lane 0; see the module docstring), whatever
      `batch_size` and whatever prompts share its batch. Float rounding differs between batch
      shapes, so a near-tie can very rarely go the other way.
    - Each sample ends at `settings.length` new tokens, at <|endoftext|> (when
      `settings.stop_at_endoftext`; not shown) or just before the first stop string.
    - An empty prompt gives an unconditional sample (it starts after <|endoftext|>); a prompt
      longer than the context allows keeps its last tokens, with a warning.
    - The compiled shapes are (batch_size, cache bucket): a short last batch is padded with idle
      rows, so nothing is compiled again for it.
    - `lines` names the prompts in the Samples (default 0, 1, ...); (line, index) pairs in `skip`
      are not generated (resuming); `on_batch` is called with each finished batch's Samples.
    """
    if batch_size < 1 or nsamples < 1:
        raise ValueError("batch_size and nsamples must be at least 1")
    lines = list(range(len(prompts))) if lines is None else list(lines)
    skip = set(skip)
    n_ctx = generator.hp.n_ctx
    ids = [prompt_ids(encoder, p, settings, n_ctx) for p in prompts]
    todo = [(i, j) for i in range(len(prompts)) for j in range(nsamples) if (lines[i], j) not in skip]
    out: list[Sample] = []
    for start in range(0, len(todo), batch_size):
        chunk = todo[start : start + batch_size]
        texts, counts = _run_batch(generator, encoder, [ids[i] for i, _ in chunk],
                                   [j for _, j in chunk], settings, batch_size)  # fmt: skip
        done = [Sample(prompts[i], j, text, count, settings.seed, lines[i])
                for (i, j), text, count in zip(chunk, texts, counts, strict=True)]  # fmt: skip
        out.extend(done)
        if on_batch is not None:
            on_batch(done)
    return out


def _run_batch(generator, encoder, ids: list[list[int]], streams: list[int], settings: Settings,
               batch_size: int) -> tuple[list[str], list[int]]:  # fmt: skip
    """One batch: rows `ids` with noise streams `streams` (lane 0), padded with idle rows to
    `batch_size`. Returns the rows' texts and token counts."""
    n = len(ids)
    idle = batch_size - n
    prompts = ids + [ids[0]] * idle
    rows = [_Row(encoder, settings.stop) for _ in range(n)]
    counts = [0] * n
    finished = np.zeros(batch_size, bool)
    finished[n:] = True
    eos = ENDOFTEXT_ID if settings.stop_at_endoftext else -1
    steps = generator.generate(prompts, settings.length, settings.controls(0), finished,
                               streams=list(streams) + [0] * idle, lanes=[0] * batch_size)  # fmt: skip
    for tokens, done in steps:
        for r, row in enumerate(rows):
            if row.finished:
                continue
            if tokens[r] == eos:
                row.close()
            else:
                counts[r] += 1
                row.add([int(tokens[r])])
                if done[r]:
                    row.close()
            finished[r] = row.finished
    texts = []
    for row in rows:
        row.close()
        texts.append(row.text)
    return texts, counts


# --- prompts files and the resumable output -------------------------------------------------


def read_prompts(path: str) -> tuple[list[str], list[int]]:
    """The prompts of a file and their line numbers (from 1): `.jsonl` objects with a "prompt"
    string (blank lines skipped; "" is an unconditional sample), or one prompt per line of text
    (blank lines skipped; `\\r\\n` endings read as `\\n`)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"--prompts_file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"cannot read --prompts_file {path}: {e}") from None
    prompts, lines = [], []
    jsonl = path.endswith(".jsonl")
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        if jsonl:
            try:
                value = json.loads(line)
            except json.JSONDecodeError as e:
                raise UserError(f"{path} line {number}: not JSON ({e.msg})") from None
            if not isinstance(value, dict) or not isinstance(value.get("prompt"), str):
                raise UserError(f'{path} line {number}: needs a "prompt" string field')
            line = value["prompt"]
        prompts.append(line)
        lines.append(number)
    if not prompts:
        raise UserError(f"--prompts_file {path} has no prompts")
    return prompts, lines


def read_output(path: str, prompts: list[str], lines: list[int]) -> list[dict]:
    """The records already in `--output` (none if it does not exist), checked against the
    prompts: a file written for other prompts is an error, not something to append to."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"cannot read --output {path}: {e}") from None
    by_line = dict(zip(lines, prompts, strict=True))
    records = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            key, prompt = (record["line"], record["index"]), record["prompt"]
        except (json.JSONDecodeError, TypeError, KeyError):
            raise UserError(f"--output {path} line {number} is not a sample record; "
                            "use another --output or remove it") from None  # fmt: skip
        if by_line.get(key[0]) != prompt:
            raise UserError(f"--output {path} holds samples of other prompts (line {key[0]}); "
                            "use another --output or remove it")  # fmt: skip
        records.append(record)
    return records


def run_prompts_file(generator, encoder, prompts_file: str, output: str | None, settings: Settings,
                     batch_size: int, nsamples: int, seed_given: bool, out) -> int:  # fmt: skip
    """Answer every prompt of `prompts_file`; return the number of samples generated now.

    With `output`, records already there are kept and their prompts skipped (a rerun after Ctrl+C
    continues; with no --seed it reuses the recorded seed). Without, the samples go to `out` under
    the classic banners, each prompt's samples followed by a line of `=`.
    """
    from tqdm.auto import tqdm

    prompts, lines = read_prompts(prompts_file)
    records = read_output(output, prompts, lines) if output else []
    if records and not seed_given:
        settings = dataclasses.replace(settings, seed=int(records[-1]["seed"]))
    have = {(r["line"], r["index"]) for r in records}
    answered = sum(all((ln, j) in have for j in range(nsamples)) for ln in lines)
    if records:
        logger.info("%s: %d of %d prompts already answered; continuing", output, answered, len(lines))
    bar = tqdm(total=len(lines), initial=answered, unit="prompt", desc="prompts")
    pending: dict[int, list[Sample]] = {}

    def on_batch(samples: list[Sample]) -> None:
        for s in samples:
            pending.setdefault(s.line, []).append(s)
            have.add((s.line, s.index))
        if output:
            records.extend(s.record() for s in samples)
            atomic_write_text(output, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
        for ln in [ln for ln in pending if all((ln, j) in have for j in range(nsamples))]:
            if not output:
                for s in sorted(pending[ln], key=lambda s: s.index):
                    out.write(banner(s.index + 1) + "\n" + s.text + "\n")
                out.write("=" * 80 + "\n")
                out.flush()
            del pending[ln]
            bar.update(1)

    try:
        made = generate_texts(generator, encoder, prompts, settings, batch_size, nsamples,
                              lines=lines, skip=have, on_batch=on_batch)  # fmt: skip
    finally:
        bar.close()
    return len(made)
