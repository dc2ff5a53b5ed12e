"""The sampling scripts as commands: `sample` (interactive_conditional_samples.py, `gpt2easy
sample`) and `generate` (generate_unconditional_samples.py, `gpt2easy generate`), each a config
dataclass (its flags) and a function, run through `cli`. Samples go to stdout, messages to stderr.
TensorFlow is imported only once the flags and the model folder are checked; on a terminal the
interactive command asks for its first prompt before that (`ahead`), and with `--keep_warm` both run
in a resident process (`warm`).
"""

from __future__ import annotations

import dataclasses
import sys

from . import cli
from .folders import ModelFlags
from .options import opt
from .sample import SamplingFlags


@dataclasses.dataclass(frozen=True, kw_only=True)
class WarmFlags:
    """The sampling scripts' `--keep_warm` (see `warm`)."""

    keep_warm: float = opt(0.0, "keep the model loaded in a background process for this many minutes "
                                "after the script ends: a later launch with the same flag starts at "
                                "once; 0 = off", minimum=0.0)


def _relayed(command: str, cfg) -> bool:
    """With --keep_warm, run the command in the warm process (`warm.relay`): True when it ran
    there (a non-zero exit code is raised as SystemExit), False to run it here."""
    from . import warm

    if not cfg.keep_warm or warm.INSIDE:
        return False
    code = warm.relay(command, cfg, cli.PROG)
    if code:
        raise SystemExit(code)
    return code is not None


@dataclasses.dataclass(frozen=True, kw_only=True)
class SampleConfig(SamplingFlags, ModelFlags, WarmFlags):
    """Ask for a prompt, print NSAMPLES continuations under `==== SAMPLE n ====` banners, repeat.

    The flags of interactive_conditional_samples.py and `gpt2easy sample`."""

    nsamples: int = opt(1, "samples per prompt; a multiple of batch_size", minimum=1)
    batch_size: int = opt(1, "samples generated together (faster per sample, uses more memory); with "
                             "--prompts_file, prompts side by side", minimum=1)
    prompts_file: str | None = opt(None, "answer the prompts of this file (one per line, or .jsonl "
                                         "with a \"prompt\" field) in batches of --batch_size, then exit")
    output: str | None = opt(None, "with --prompts_file: write one JSON line per sample (prompt, index, "
                                   "text, tokens, seed) to this file; a rerun skips prompts already in it")


PROMPT = "Model prompt >>> "


def read_prompt(err=None) -> str | None:
    """The next prompt: `Model prompt >>> ` (on `err`, default stderr, where Python's own
    `input(prompt)` puts it on a terminal) when the input is a terminal, one line per prompt from a
    pipe. None at end of input."""
    try:
        if sys.stdin.isatty():
            print(PROMPT, end="", file=err or sys.stderr, flush=True)
            if sys.stdout.isatty():
                return input()
        line = sys.stdin.readline()
        return line.rstrip("\n") if line else None
    except EOFError:
        return None


def _checked(cfg, forever_ok: bool = False) -> tuple[str, ...]:
    """Check the sampling flags together (before the model loads); the stop strings."""
    from .sample import check_flags, parse_stops

    check_flags(nsamples=cfg.nsamples, batch_size=cfg.batch_size, length=cfg.length,
                temperature=cfg.temperature, top_k=cfg.top_k, top_p=cfg.top_p,
                repetition_penalty=cfg.repetition_penalty, precision=cfg.precision, seed=cfg.seed,
                forever_ok=forever_ok)  # fmt: skip
    return parse_stops(cfg.stop)


def _settings(cfg, hp, default_length: int, stops):
    from .sample import settings_from_flags

    return settings_from_flags(
        hp.n_ctx, default_length, length=cfg.length, temperature=cfg.temperature, top_k=cfg.top_k,
        top_p=cfg.top_p, repetition_penalty=cfg.repetition_penalty, stops=stops,
        stop_at_endoftext=cfg.stop_at_endoftext, seed=cfg.seed)  # fmt: skip


def sample(cfg: SampleConfig) -> None:
    """Ask for a prompt, print NSAMPLES continuations under `==== SAMPLE n ====` banners, repeat.

    With --prompts_file: answer every prompt of the file, in batches of --batch_size, then exit.
    On a terminal the first prompt is asked at once, the model loading meanwhile (`ahead`)."""
    from . import warm
    from .bulk import check_bulk_flags
    from .locate import open_model

    check_bulk_flags(cfg.prompts_file, cfg.output, cfg.batch_size)
    stops = _checked(dataclasses.replace(cfg, batch_size=1) if cfg.prompts_file else cfg)
    if _relayed("sample", cfg):
        return
    opened = open_model(cfg.models_dir, cfg.model_name, cfg.run_name, cfg.checkpoint)
    cli.require_tensorflow()
    hp = opened[0]
    settings = _settings(cfg, hp, hp.n_ctx // 2, stops)
    if cfg.prompts_file is not None:
        generator, encoder = _loaded(cfg, opened)
        from .bulk import run_prompts_file

        run_prompts_file(generator, encoder, cfg.prompts_file, cfg.output, settings, cfg.batch_size,
                         cfg.nsamples, cfg.seed is not None, sys.stdout)  # fmt: skip
        return
    if sys.stdin.isatty() and not warm.INSIDE:  # typed: stdout may be a file (`> out.txt`)
        from .ahead import Ahead

        with Ahead(lambda: _loaded(cfg, opened, settings), cli.TF_NOISE) as loading:
            text = _next_prompt(loading.stderr)
            if text is None:
                return
            generator, encoder = loading.result()
    else:
        generator, encoder = _loaded(cfg, opened)
        text = _next_prompt(sys.stderr)
    from .sample import fit_prompt, stream_samples

    while text is not None:
        ids = fit_prompt(encoder.encode(text), settings.length, hp.n_ctx)
        for b in range(cfg.nsamples // cfg.batch_size):
            stream_samples(generator, encoder, ids, cfg.batch_size, settings, b,
                           b * cfg.batch_size + 1, sys.stdout)  # fmt: skip
        print("=" * 80, flush=True)
        text = _next_prompt(sys.stderr)


def _loaded(cfg, opened, warm_settings=None):
    """(generator, encoder) for the model `opened` names; with `warm_settings`, in the background
    while the first prompt is typed (`ahead` holds stderr), also compiled for a short prompt."""
    cli.quiet_tensorflow(capture=warm_settings is None)
    from .sample import load_opened, warm_up

    generator, encoder, _ = load_opened(opened, cfg.precision)
    if warm_settings is not None:
        warm_up(generator, cfg.batch_size, warm_settings)
    return generator, encoder


def _next_prompt(err) -> str | None:
    """The next non-empty prompt (asking again after an empty one), None at end of input."""
    while True:
        text = read_prompt(err)
        if text is None:
            if sys.stdin.isatty():
                print(file=err)
            return None
        if text.strip():
            return text
        if sys.stdin.isatty():
            print("Prompt should not be empty!", file=err)


@dataclasses.dataclass(frozen=True, kw_only=True)
class GenerateConfig(SamplingFlags, ModelFlags, WarmFlags):
    """Print samples from nothing under `==== SAMPLE n ====` banners: NSAMPLES of them, or forever.

    The flags of generate_unconditional_samples.py and `gpt2easy generate`."""

    length: int | None = opt(None, "tokens per sample (default n_ctx, 1024 for GPT-2)", minimum=1)
    nsamples: int = opt(0, "number of samples, a multiple of batch_size; 0 = forever (until Ctrl+C)",
                        minimum=0)
    batch_size: int = opt(1, "samples generated together (faster per sample, uses more memory)",
                          minimum=1)
    output: str | None = opt(None, "also write the samples (complete ones only, with their banners) "
                                   "to this file")


class InterruptAtWrites:
    """Ctrl+C as KeyboardInterrupt at the next write to `out` (every sampled piece is one),
    not wherever the signal lands: raised inside TensorFlow's C code it surfaces as a SystemError
    with a traceback (seen in CI, once). Used as `with InterruptAtWrites(sys.stdout) as out:`;
    the previous SIGINT handler is back afterwards. Outside the main thread it does nothing. A
    second Ctrl+C before the next write (say, during a long compilation) interrupts at once."""

    def __init__(self, out):
        self.out, self.requested, self._set, self._old = out, False, False, None

    def _handle(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def write(self, text: str) -> int:
        if self.requested:
            raise KeyboardInterrupt
        return self.out.write(text)

    def flush(self) -> None:
        self.out.flush()

    def __enter__(self) -> InterruptAtWrites:
        import signal
        import threading

        if threading.current_thread() is threading.main_thread():
            self._old, self._set = signal.signal(signal.SIGINT, self._handle), True
        return self

    def __exit__(self, *exc) -> None:
        if self._set:
            import signal

            signal.signal(signal.SIGINT, self._old if self._old is not None else signal.SIG_DFL)


def generate(cfg: GenerateConfig) -> None:
    """Print samples under `==== SAMPLE n ====` banners: NSAMPLES of them, or forever."""
    stops = _checked(cfg, forever_ok=True)
    if _relayed("generate", cfg):
        return
    from .locate import open_model

    opened = open_model(cfg.models_dir, cfg.model_name, cfg.run_name, cfg.checkpoint)
    settings = _settings(cfg, opened[0], opened[0].n_ctx, stops)  # before TensorFlow's import
    cli.require_tensorflow()
    cli.quiet_tensorflow()
    from .files import atomic_write_text
    from .sample import banner, load_opened, stream_samples
    from .tokens import ENDOFTEXT_ID

    generator, encoder, _ = load_opened(opened, cfg.precision)
    done: list[str] = []
    try:
        b = 0
        with InterruptAtWrites(sys.stdout) as out:
            while cfg.nsamples == 0 or len(done) < cfg.nsamples:
                texts = stream_samples(generator, encoder, [ENDOFTEXT_ID], cfg.batch_size, settings,
                                       b, len(done) + 1, out)  # fmt: skip
                done += texts
                b += 1
    except KeyboardInterrupt:
        print(file=sys.stderr)
    finally:
        if cfg.output is not None and done:
            lines = [f"{banner(i + 1)}\n{text}\n" for i, text in enumerate(done)]
            atomic_write_text(cfg.output, "".join(lines))
    where = f" to {cfg.output}" if cfg.output is not None else ""
    print(f"wrote {len(done)} sample{'s' * (len(done) != 1)}{where}", file=sys.stderr)
