"""Where things live: model folders (`src/models/NAME`) and run folders (`checkpoint/RUN`)."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from .errors import UserError
from .options import opt

DEFAULT_MODELS_DIR = "src/models"  # in a clone; see resolve_models_dir
MODELS_DIR_ENV = "GPT2EASY_MODELS_DIR"
MODELS_DIR_HELP = (f"folder holding one folder per model (if not given: ${MODELS_DIR_ENV}, else ./src/models "
                   f"if it exists, else ./models)")
VOCAB_FILES = ("encoder.json", "vocab.bpe")
# A Hugging Face folder (see hf.py) is a model folder too: config.json instead of hparams.json,
# vocab.json + merges.txt (the same two files under other names) or tokenizer.json.
HF_CONFIG = "config.json"
HF_WEIGHTS = "model.safetensors"
HF_TORCH_WEIGHTS = "pytorch_model.bin"
HF_VOCAB_FILES = ("vocab.json", "merges.txt")
HF_TOKENIZER = "tokenizer.json"
# Old names of OpenAI's releases (renamed in August 2019 when the parameter counts were corrected).
MODEL_ALIASES = {"117M": "124M", "345M": "355M"}


@dataclasses.dataclass(frozen=True, kw_only=True)
class ModelFlags:
    """Which model to use: the flags every command that loads a model shares (sampling, evaluate,
    export, serve). `checkpoint` wins over `run_name`, which wins over `model_name`."""

    model_name: str = opt("124M", "model folder under models_dir (124M, 355M, 774M, 1558M or your own)")
    models_dir: str | None = opt(None, MODELS_DIR_HELP)
    run_name: str | None = opt(None, "use the newest checkpoint of the training run checkpoint/RUN_NAME")
    checkpoint: str | None = opt(None, "use this checkpoint folder or model-N prefix")


def resolve_models_dir(models_dir: str | Path | None) -> Path:
    """Where models live: `models_dir` when given, else $GPT2EASY_MODELS_DIR, else `./src/models`
    when it exists (a clone), else `./models` (an installed command run anywhere)."""
    if models_dir is not None:
        return Path(models_dir).expanduser()
    if os.environ.get(MODELS_DIR_ENV):
        return Path(os.environ[MODELS_DIR_ENV]).expanduser()
    return Path(DEFAULT_MODELS_DIR) if Path(DEFAULT_MODELS_DIR).is_dir() else Path("models")


def available_models(models_dir: str | Path | None) -> list[str]:
    """Names of the folders under `models_dir` that hold an `hparams.json` (or a HF config.json)."""
    root = resolve_models_dir(models_dir)
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir()
                  if (p / "hparams.json").is_file() or (p / HF_CONFIG).is_file())


def is_model_folder(folder: str | Path) -> bool:
    """Does `folder` hold hparams (hparams.json or config.json) and a vocabulary of its own?"""
    folder = Path(folder)
    has_vocab = any(all((folder / n).is_file() for n in names)
                    for names in (VOCAB_FILES, HF_VOCAB_FILES, (HF_TOKENIZER,)))
    return has_vocab and ((folder / "hparams.json").is_file() or (folder / HF_CONFIG).is_file())


def torch_only_message(folder: str | Path) -> str:
    return (f"{folder}: only {HF_TORCH_WEIGHTS} (PyTorch pickle, needs torch to read); convert it "
            f"once with transformers: GPT2LMHeadModel.from_pretrained(FOLDER).save_pretrained(FOLDER) "
            f"writes {HF_WEIGHTS}, which gpt2easy reads")


def model_dir(models_dir: str | Path | None, model_name: str) -> Path:
    """The folder of model `model_name`, checked to exist; the error lists what is there."""
    root = resolve_models_dir(models_dir)
    candidates = [root / str(model_name)]
    if "/" in str(model_name) or str(model_name).startswith("~"):  # a folder given by its path
        candidates.append(Path(str(model_name)).expanduser())
    if str(model_name) in MODEL_ALIASES:
        candidates.append(root / MODEL_ALIASES[str(model_name)])
    for folder in candidates:
        if folder.is_dir():
            return folder
    have = available_models(root)
    listing = f"available: {', '.join(have)}" if have else f"no models in {root}"
    raise UserError(
        f"model {model_name!r} not found in {root} ({listing}); "
        f"get it with: python download_model.py {model_name}"
    )


def vocab_paths(folder: str | Path) -> tuple[Path, Path]:
    """`encoder.json` and `vocab.bpe` of a model folder, checked to exist. In a Hugging Face folder:
    `vocab.json` and `merges.txt`, else `tokenizer.json` twice (read them with hf_vocab.vocab_texts)."""
    folder = Path(folder)
    for names in (HF_VOCAB_FILES, (HF_TOKENIZER, HF_TOKENIZER)):
        if not (folder / VOCAB_FILES[0]).is_file() and all((folder / n).is_file() for n in names):
            return folder / names[0], folder / names[1]
    paths = tuple(folder / name for name in VOCAB_FILES)
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        raise UserError(
            f"{folder}: missing {' and '.join(missing)}; "
            f"get the vocabulary with: python download_model.py 124M (same files for every size)"
        )
    return paths  # type: ignore[return-value]
