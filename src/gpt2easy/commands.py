"""The classic commands: each a config dataclass (its flags) and a function that does the work.

`gpt2easy download|encode|train|export` and the top-level scripts (download_model.py, encode.py,
train.py, export.py) run these through `cli` (see its `COMMANDS`); the sampling scripts' commands
are in `sample_commands`, evaluate.py's config is here, its function in `evaluate`. Summaries and
messages go to stderr. This module imports TensorFlow only inside the commands that need it, after
their flags are checked.
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
    from .train_inputs import read_inputs

    cfg.check_flags()  # before TensorFlow's import: a bad flag costs a second, not a training
    inputs = read_inputs(cfg)  # the model folder and the data too
    cli.quiet_tensorflow()
    from .trainer import train as run_training

    def show(text: str) -> None:
        print(text, flush=True)

    s = run_training(cfg, on_sample=show, inputs=inputs)
    print(f"trained {s['steps']} steps (now at step {s['step']}), final loss {s['loss']:.4f}: "
          f"checkpoint {s['checkpoint']}, samples in {s['samples']}/, seed {s['seed']}",
          file=sys.stderr)


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
    from .exporter import run_export

    result = run_export(cfg, before_tensorflow=cli.quiet_tensorflow)
    print(f"exported {result['checkpoint']} to {result['out']} ({result['format']}: "
          f"{', '.join(result['files'])})", file=sys.stderr)
