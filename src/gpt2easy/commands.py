"""The classic commands: each a config dataclass (its flags) and a function that does the work.

`gpt2easy download|encode|train|sample|generate` and the top-level scripts (download_model.py,
encode.py, train.py, interactive_conditional_samples.py, generate_unconditional_samples.py) run
these through `cli` (see its `COMMANDS`). Summaries and messages go to stderr, samples to stdout.
This module imports TensorFlow only inside the commands that need it, after their flags are checked.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time

from . import cli
from .folders import MODELS_DIR_HELP, ModelFlags
from .machine import PRECISION_CHOICES
from .options import opt
from .sample import SamplingFlags
from .tables import CorpusFlags
from .train_config import TrainConfig


@dataclasses.dataclass(frozen=True)
class DownloadConfig:
    """Fetch a GPT-2 model into MODELS_DIR/NAME: OpenAI's seven files, or a Hugging Face folder.

    The flags of download_model.py and `gpt2easy download` (the first line above is their --help's)."""

    model_name: str | None = opt(None, "124M, 355M, 774M or 1558M (117M and 345M are the old names of 124M "
                                       "and 355M); with --repo: the folder name (default: the "
                                       "repository's name)", positional=True)
    models_dir: str | None = opt(None, MODELS_DIR_HELP + "; the files go into MODELS_DIR/NAME")
    base_url: str | None = opt(None, "server folder holding NAME/FILE, for a mirror (default: OpenAI's "
                                     "public storage); with it any model name is accepted")
    timeout: float = opt(30.0, "seconds to wait for a connection or for data before a request counts "
                               "as failed", above=0.0)
    retries: int = opt(3, "retries of a file after a transient failure (timeout, dropped connection, "
                          "HTTP 5xx) before giving up", minimum=0)
    source: str = opt("auto", "openai (OpenAI's storage), hf (the Hugging Face hub: 124M/355M/774M/1558M "
                              "are openai-community/gpt2, gpt2-medium, gpt2-large, gpt2-xl), or auto "
                              "(OpenAI's storage, then the hub)", choices=("auto", "openai", "hf"))
    repo: str | None = opt(None, "ORG/NAME of any GPT-2-architecture repository of the hub (e.g. "
                                 "distilbert/distilgpt2)")


def download(cfg: DownloadConfig) -> None:
    """Fetch a GPT-2 model: OpenAI's seven files, or a Hugging Face folder from the hub."""
    from . import hub

    result = hub.fetch_model(cfg.model_name, cfg.models_dir, source=cfg.source, repo=cfg.repo,
                             base_url=cfg.base_url, timeout=cfg.timeout, retries=cfg.retries)
    print(result.summary(), file=sys.stderr)


@dataclasses.dataclass(frozen=True)
class EncodeConfig(CorpusFlags):
    """Encode a text file, a .csv/.jsonl table, a folder or a glob into the token archive OUT_NPZ.

    The flags of encode.py and `gpt2easy encode`; how text and tables are read comes from
    `tables.CorpusFlags`."""

    in_text: str = opt(help="a text file, a .csv/.jsonl table, a folder (read recursively, in sorted "
                            "order) or a quoted glob",
                       positional=True)
    out_npz: str = opt(help="the archive to write (written under a temporary name, then renamed)",
                       positional=True)
    model_name: str = opt("124M", "model whose vocabulary (encoder.json, vocab.bpe) encodes the text")
    models_dir: str | None = opt(None, MODELS_DIR_HELP)
    combine: int = opt(50000, "small files are concatenated into chunks of at least this many "
                              "characters", minimum=0)
    encoding: str = opt("utf-8", "text encoding of the input files, e.g. utf-8 or latin-1")
    workers: int = opt(0, "encoding processes; 0 means one per CPU core", minimum=0)
    legacy_endoftext: bool = opt(False, "encode the text <|endoftext|> as ordinary tokens, as the "
                                        "classic tools did, instead of the single end-of-text token")


def encode_corpus(cfg: EncodeConfig, progress: bool = True):
    """Encode a text file, a .csv/.jsonl table, a folder (recursive, sorted) or a glob into OUT_NPZ;
    returns the counts (files, documents, characters, tokens, chunks, bytes). Nothing is written at
    OUT_NPZ unless it all worked.

    Every text file, every row of a .csv or .jsonl file, and every `<|endoftext|>`-separated part of
    them is a document; documents are joined with the end-of-text token 50256. Chunks of at least
    `combine` characters become the archive's members arr_0, arr_1, ... (uint16 token arrays), as in
    the classic tool. Line endings \\r\\n and \\r become \\n, as the classic tool's text-mode read
    made them (--keep_line_endings keeps them).
    """
    from tqdm.auto import tqdm

    from .corpus import list_files
    from .dataset import encode_to_npz
    from .encoder import get_encoder
    from .folders import model_dir

    encoder = get_encoder(model_dir(cfg.models_dir, cfg.model_name))
    total = sum(os.path.getsize(f) for f in list_files(cfg.in_text))
    with tqdm(total=total, unit="B", unit_scale=True, desc="encoding", file=sys.stderr,
              disable=not progress) as bar:  # fmt: skip
        return encode_to_npz(cfg.in_text, cfg.out_npz, encoder, combine=cfg.combine,
                             encoding=cfg.encoding, legacy_endoftext=cfg.legacy_endoftext,
                             workers=cfg.workers or None, on_bytes=bar.update,
                             **cfg.reading_kwargs())  # fmt: skip


def encode(cfg: EncodeConfig) -> None:
    """Encode a text file, a .csv/.jsonl table, a folder (recursive, sorted) or a glob into OUT_NPZ."""
    start = time.perf_counter()
    stats = encode_corpus(cfg)
    seconds = time.perf_counter() - start
    print(f"encoded {stats.files} files, {stats.documents} documents, {stats.characters} characters"
          f" -> {stats.tokens} tokens in {stats.chunks} chunks, {stats.bytes / 1e6 / seconds:.1f}"
          f" MB/s: wrote {cfg.out_npz}", file=sys.stderr)


def train(cfg: TrainConfig) -> None:
    """Train on DATASET and save checkpoints to CHECKPOINT_DIR/RUN_NAME."""
    cfg.check_flags()  # before TensorFlow's import: a bad flag costs a second, not a training
    cli.quiet_tensorflow()
    from .trainer import train as run_training

    def show(text: str) -> None:
        print(text, flush=True)

    s = run_training(cfg, on_sample=show)
    print(f"trained {s['steps']} steps (now at step {s['step']}), final loss {s['loss']:.4f}: "
          f"checkpoint {s['checkpoint']}, samples in {s['samples']}/, seed {s['seed']}",
          file=sys.stderr)


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


@dataclasses.dataclass(frozen=True, kw_only=True)
class EvaluateConfig(ModelFlags):
    """The options of `evaluate.py` / `gpt2easy evaluate`."""

    data: str = opt(help="text file, folder (recursive), quoted glob or .npz to score", positional=True)
    stride: int = opt(0, "window step in tokens: each prediction after the first window sees at least "
                         "n_ctx + 1 - stride tokens; 0 = n_ctx (no overlap, fastest)", minimum=0)
    batch_size: int = opt(4, "windows per forward pass (124M: about 0.2 GB of logits per window)", minimum=1)
    precision: str = opt("fp32", "fp32 (exactly the reference model), bf16 matmuls, or auto (bf16 "
                                 "where native)", choices=PRECISION_CHOICES)
    json: bool = opt(False, "print the result as one JSON line on stdout")
    combine: int = opt(50000, "text files are joined into chunks of at least this many characters "
                              "(as encode.py)", minimum=0)
    encoding: str = opt("utf-8", "text encoding of the text files")
    checkpoint_dir: str = opt("checkpoint", "where run folders are (for --run_name)")


@dataclasses.dataclass(frozen=True, kw_only=True)
class ExportConfig:
    """Write SOURCE's weights, hparams and vocabulary into the new folder OUT (hf or openai format).

    The flags of export.py and `gpt2easy export`."""

    source: str = opt(help="run folder, model folder (ours or Hugging Face), checkpoint prefix, or a "
                           "model name under models_dir", positional=True)
    out: str = opt(help="folder to create with the exported model", positional=True)
    format: str = opt("hf", "hf (transformers / the hub) or openai (OpenAI's release layout)",
                      choices=("hf", "openai"))
    dtype: str = opt("float32", "number format of the exported weights (hf only)",
                     choices=("float32", "bfloat16", "float16"))
    models_dir: str | None = opt(None, MODELS_DIR_HELP)


def export(cfg: ExportConfig) -> None:
    """Write SOURCE's weights, hparams and vocabulary into the new folder OUT (hf or openai format)."""
    cli.quiet_tensorflow()
    from .exporter import run_export

    result = run_export(cfg)
    print(f"exported {result['checkpoint']} to {result['out']} ({result['format']}: "
          f"{', '.join(result['files'])})", file=sys.stderr)


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
    if sys.stdin.isatty() and sys.stdout.isatty() and not warm.INSIDE:
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
    cli.quiet_tensorflow()
    from .files import atomic_write_text
    from .sample import banner, load, stream_samples
    from .tokens import ENDOFTEXT_ID

    generator, encoder, hp = load(cfg.models_dir, cfg.model_name, cfg.run_name, cfg.checkpoint,
                                  cfg.precision)
    settings = _settings(cfg, hp, hp.n_ctx, stops)
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
