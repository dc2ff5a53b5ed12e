"""The Python API: the command lines' workflow as functions, for scripts and notebooks.

    import gpt2easy
    gpt2easy.download_model("124M")
    gpt2easy.encode("corpus.txt", "corpus.npz")
    result = gpt2easy.finetune("corpus.npz", model_name="124M", run_name="run1", steps=1000)
    model = gpt2easy.load(run_name="run1")
    texts = model.generate(["To be, or not", "Once upon a time"], length=100, top_k=40, seed=1)

Each function takes the options of its command line under the same names, with the same defaults
(read from the config dataclasses, never written twice) and the same checks: a problem the caller
can fix raises `UserError` with the one-line message the command line prints. Nothing here prints or
exits: logs go through `logging` (`logging.basicConfig(level=logging.INFO)` shows the step lines),
progress bars through `tqdm.auto` (a notebook gets a notebook bar), training samples to the
`on_sample` callback. Importing this module does not import TensorFlow; the first call that needs
it does.
"""

from __future__ import annotations

import dataclasses
import difflib
import numbers
import os
from collections.abc import Callable
from pathlib import Path

from .errors import UserError

# train.py's "-1 = none" flags: the API takes -1 as the command line does (None works too).
_MINUS_ONE_IS_NONE = ("steps", "sample_length", "lr_decay_steps")


def check_options(given: dict, known: dict[str, dataclasses.Field], what: str, hint: str = "") -> dict:
    """`given` with plain values (a Path as str, a NumPy integer as int), after refusing an unknown
    keyword (naming the closest known option) or a value of the wrong type."""
    out = {}
    for name, value in given.items():
        if name not in known:
            close = difflib.get_close_matches(name, list(known), n=1)
            maybe = f" (did you mean {close[0]}?)" if close else ""
            raise UserError(f"{what}: unknown option {name}{maybe}{hint}")
        out[name] = plain(name, value, known[name].type)
    return out


def plain(name: str, value, annotation):
    """`value` checked against a field annotation such as 'int | None' or 'float', as a plain
    Python value; annotations other than str, int, float, bool and None are left to the command's
    own checks."""
    text = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", str(annotation))
    kinds = {k.strip() for k in text.split("|")}
    if value is None and "None" in kinds:
        return None
    if not kinds & {"str", "int", "float", "bool"}:
        return value
    if "bool" in kinds and isinstance(value, bool):
        return value
    if "str" in kinds and isinstance(value, str | os.PathLike):
        return os.fspath(value)
    if not isinstance(value, bool):
        if "int" in kinds and isinstance(value, numbers.Integral):
            return int(value)
        if "float" in kinds and isinstance(value, numbers.Real):
            return float(value)
    raise UserError(f"--{name} must be {' or '.join(sorted(kinds))}, got {value!r}")


def _fields(cls) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(cls)}


def _command_config(cls, what: str, paths: dict, options: dict):
    """A command's config (`cls`) from the API's arguments: the path arguments as strings, the other
    options checked by name and type, then every field as the command line checks it, with the
    models folder resolved as the command line resolves it."""
    from .cli import resolve_folders
    from .options import check_config

    fields = {k: v for k, v in _fields(cls).items() if k not in paths}
    cfg = cls(**{k: plain(k, v, "str") for k, v in paths.items()}, **check_options(options, fields, what))
    check_config(cfg)
    return resolve_folders(cfg)


def _tensorflow() -> None:
    """Import TensorFlow as the command lines do (quiet, oneDNN on), but leave the caller's
    objects to the garbage collector (no `gc.freeze`)."""
    from .cli import quiet_tensorflow

    quiet_tensorflow(freeze=False)


# --- download and encode ----------------------------------------------------------------------


def encode(in_text: str | Path, out_npz: str | Path, *, progress: bool = True, **options):
    """Encode a text file, .csv/.jsonl table, folder or glob into the token archive `out_npz`, as
    encode.py does, with any of its options as keywords (the fields of
    `gpt2easy.commands.EncodeConfig`: model_name, models_dir, combine, encoding, workers,
    legacy_endoftext, keep_line_endings, column, header). Nothing is written at `out_npz` unless it
    all worked. Returns the counts (files, documents, characters, tokens, chunks, bytes).
    """
    from .commands import EncodeConfig, encode_corpus

    cfg = _command_config(EncodeConfig, "encode", {"in_text": in_text, "out_npz": out_npz}, options)
    return encode_corpus(cfg, progress)


def export(source: str | Path, out: str | Path, **options) -> dict:
    """Write a model as a Hugging Face folder or in OpenAI's release layout, as export.py does:
    `source` a run folder, model folder, checkpoint prefix or model name; `out` a new folder;
    options `format` ("hf" or "openai"), `dtype` ("float32", "bfloat16", "float16"; hf only),
    `models_dir`. Returns {"out", "format", "checkpoint", "files"}."""
    from .commands import ExportConfig

    cfg = _command_config(ExportConfig, "export", {"source": source, "out": out}, options)
    _tensorflow()
    from .exporter import run_export

    return run_export(cfg)


# --- training ---------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class FinetuneResult:
    """What `finetune` did: updates in this call, the run's step count after it, the last loss,
    the checkpoint saved (`checkpoint/RUN/model-N`), the samples folder, and the seed used."""

    steps: int
    step: int
    loss: float
    checkpoint: str
    samples: str
    seed: int


def finetune(dataset: str | Path, *, on_sample: Callable[[str], None] | None = None,
             **options) -> FinetuneResult:  # fmt: skip
    """Train on `dataset` as train.py does, with any of its options as keywords: the fields of
    `gpt2easy.trainer.TrainConfig`, with the defaults `python train.py --help` shows.

    Ctrl+C (SIGINT) or SIGTERM stops after the current step and saves, as in a terminal; the
    signal handlers in place before the call are back when it returns. Calling it again continues
    the run (`restore_from="latest"`). Training samples are written to `samples/RUN/` and passed
    to `on_sample` (e.g. `print`) when given. Without `steps`, it trains until interrupted.
    """
    from .cli import resolve_folders
    from .train_config import TrainConfig

    fields = _fields(TrainConfig)
    options = check_options(options, {k: v for k, v in fields.items() if k != "dataset"}, "finetune")
    for name in _MINUS_ONE_IS_NONE:
        if options.get(name) == -1:
            options[name] = None
    cfg = resolve_folders(TrainConfig(dataset=plain("dataset", dataset, "str"), **options))
    cfg.check_flags()  # a bad option costs a second, not a TensorFlow import
    from .train_inputs import read_inputs

    inputs = read_inputs(cfg)  # so does a wrong model folder or a bad dataset
    _tensorflow()
    from .trainer import train

    summary = train(cfg, on_sample=on_sample, inputs=inputs)
    return FinetuneResult(**{f.name: summary[f.name] for f in dataclasses.fields(FinetuneResult)})


# --- sampling ---------------------------------------------------------------------------------


def load(*, model_name: str | None = None, models_dir: str | Path | None = None,
         run_name: str | None = None, checkpoint: str | Path | None = None,
         precision: str | None = None, checkpoint_dir: str | Path = "checkpoint"):  # fmt: skip
    """Load a model to sample from, chosen as the sampling scripts choose it: `checkpoint` (a
    folder or `model-N` prefix) wins over `run_name` (the newest checkpoint of
    `checkpoint_dir/RUN_NAME`), which wins over `models_dir/model_name`. Defaults are the scripts'
    (124M in src/models, precision auto). `precision`: auto (bf16 where the CPU has native bf16 or
    on a GPU, else fp32), fp32 (the exact reference) or bf16. Returns a `Model`.
    """
    from .folders import ModelFlags
    from .sample import SamplingFlags, check_flags

    given = {"model_name": model_name, "models_dir": models_dir, "run_name": run_name,
             "checkpoint": checkpoint}  # fmt: skip
    given = check_options({k: v for k, v in given.items() if v is not None}, _fields(ModelFlags), "load")
    from .cli import resolve_folders

    flags = resolve_folders(ModelFlags(**given))
    precision = SamplingFlags().precision if precision is None else precision
    check_flags(nsamples=1, batch_size=1, length=None, temperature=1.0, top_k=0, top_p=1.0,
                repetition_penalty=1.0, precision=precision)  # fmt: skip
    _tensorflow()
    from .loaded_model import Model

    return Model.open(flags, precision, os.fspath(checkpoint_dir))


def __getattr__(name: str):
    """`download_model` (download_model.py's own function) and `Model` (the class `load`
    returns), imported on first use: the first needs urllib, the second TensorFlow."""
    if name == "download_model":
        from .hub import fetch_model

        return fetch_model
    if name == "Model":
        from .loaded_model import Model

        return Model
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
