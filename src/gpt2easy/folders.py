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
    """Names of the folders under `models_dir` that hold an `hparams.json`."""
    root = resolve_models_dir(models_dir)
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if (p / "hparams.json").is_file())


def model_dir(models_dir: str | Path | None, model_name: str) -> Path:
    """The folder of model `model_name`, checked to exist; the error lists what is there."""
    root = resolve_models_dir(models_dir)
    candidates = [root / str(model_name)]
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
    """`encoder.json` and `vocab.bpe` of a model folder, checked to exist."""
    folder = Path(folder)
    paths = tuple(folder / name for name in VOCAB_FILES)
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        raise UserError(
            f"{folder}: missing {' and '.join(missing)}; "
            f"get the vocabulary with: python download_model.py 124M (same files for every size)"
        )
    return paths  # type: ignore[return-value]
