"""Which checkpoint and model folder a command's flags name, found without TensorFlow.

`open_model` turns `--models_dir/--model_name`, `--run_name` and `--checkpoint` (a folder, a prefix,
or `best`) into (hparams, the folder with the vocabulary, the checkpoint prefix); `find_checkpoint`
picks a folder's newest complete checkpoint (its `checkpoint` state file first, then by step). The
file layout is `checkpoint`'s (see its docstring); this module only looks at names and existence, so
a command checks its flags and its model before TensorFlow is imported (the interactive script shows
its prompt at once and loads meanwhile).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from . import hf
from .errors import UserError
from .files import atomic_write_text
from .folders import (
    DEFAULT_MODELS_DIR,
    HF_TORCH_WEIGHTS,
    HF_WEIGHTS,
    is_model_folder,
    model_dir,
    torch_only_message,
    vocab_paths,
)
from .hparams import HParams

STATE_FILE = "checkpoint"
BEST_FILE = "best.json"  # names a run's checkpoint with the lowest validation loss (--keep_best)
BEST = "best"  # the checkpoint reference that means it: --restore_from best, --checkpoint best
DATA_SUFFIX = ".data-00000-of-00001"
_STEP = re.compile(r"-(\d+)$")
# Sibling bundles of a training checkpoint, by the name prefix of the entries they hold.
SIBLINGS = {"train/": ".train", "optimizer/": ".optimizer"}


def is_hf(prefix: str | Path) -> bool:
    return str(prefix).endswith(".safetensors")


def is_complete(prefix: str | Path) -> bool:
    if is_hf(prefix):
        return Path(prefix).is_file()
    return Path(f"{prefix}.index").is_file() and Path(f"{prefix}{DATA_SUFFIX}").is_file()


def _is_sibling(prefix: str | Path) -> bool:
    return str(prefix).endswith(tuple(SIBLINGS.values()))


def state_paths(folder: Path) -> list[str]:
    """Prefixes named in a folder's `checkpoint` state file, newest first, as paths in `folder`."""
    try:
        text = (folder / STATE_FILE).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return []
    latest = re.findall(r'^model_checkpoint_path:\s*"(.*)"\s*$', text, re.M)
    every = re.findall(r'^all_model_checkpoint_paths:\s*"(.*)"\s*$', text, re.M)
    # Classic TF1 savers store paths as given (often relative to the working directory): the file
    # name alone, looked up in this folder, is what survives moving the folder.
    names = [os.path.basename(p) for p in latest + every[::-1]]
    return [str(folder / n) for n in dict.fromkeys(names)]


def candidates(folder: str | Path) -> list[str]:
    """Complete checkpoints in `folder`, best first: the state file's choice, then by step."""
    folder = Path(folder)
    listed = state_paths(folder)
    found = [str(p)[: -len(".index")] for p in folder.glob("*.index")
             if not p.name.startswith(".") and not _is_sibling(p.name[: -len(".index")])]

    def step(prefix: str) -> int:
        m = _STEP.search(prefix)
        return int(m.group(1)) if m else -1

    ordered = listed + sorted((p for p in found if p not in listed), key=step, reverse=True)
    complete = [p for p in ordered if is_complete(p) and not _is_sibling(p)]
    if not complete and (folder / HF_WEIGHTS).is_file():
        complete = [str(folder / HF_WEIGHTS)]  # a Hugging Face folder
    return complete


def find_checkpoint(path: str | Path) -> str:
    """The checkpoint prefix that `path` means: a folder's newest complete one, or `path` itself."""
    path = Path(path).expanduser()
    if path.is_dir():
        found = candidates(path)
        if not found and (path / HF_TORCH_WEIGHTS).is_file():
            raise UserError(torch_only_message(path))
        if not found:
            raise UserError(f"{path}: no checkpoint found (expected a `checkpoint` file and "
                            f"model files such as model-1000.index)")
        return found[0]
    if is_complete(path):
        return str(path)
    if path.suffix == ".index" or path.name.endswith(DATA_SUFFIX):
        stem = str(path)[: -len(".index")] if path.suffix == ".index" else str(path)[: -len(DATA_SUFFIX)]
        if is_complete(stem):
            return stem
    raise UserError(f"{path}: not a checkpoint (give a folder with a `checkpoint` file, or a prefix "
                    f"such as checkpoint/run1/model-1000 whose .index and .data files exist)")


def open_model(models_dir: str = DEFAULT_MODELS_DIR, model_name: str = "124M",
               run_name: str | None = None, checkpoint: str | None = None,
               checkpoint_dir: str = "checkpoint") -> tuple[HParams, Path, str]:
    """Decide which model to sample from: (hparams, folder with the vocabulary, checkpoint prefix).

    `checkpoint` (a folder or a prefix) wins, then `run_name` (the run folder checkpoint/RUN, which
    training makes a complete model folder), then `models_dir/model_name`. hparams.json and the
    vocabulary come from the checkpoint's own folder when it has them, else from the model folder.
    """
    if checkpoint == BEST:
        if run_name is None:
            raise UserError("--checkpoint best needs --run_name RUN (the run whose best checkpoint "
                            "to use)")
        run_dir = Path(checkpoint_dir).expanduser() / str(run_name)
        if not run_dir.is_dir():
            raise UserError(f"run {run_name!r} not found: {run_dir} does not exist")
        checkpoint = best_checkpoint(run_dir)
    if checkpoint is not None:
        path = Path(checkpoint).expanduser()
        own = path if path.is_dir() else path.parent
    elif run_name is not None:
        own = Path(checkpoint_dir).expanduser() / str(run_name)
        if not own.is_dir():
            raise UserError(f"run {run_name!r} not found: {own} does not exist "
                            f"(train one with: python train.py --run_name {run_name} ...)")
        path = own
    else:
        own = path = model_dir(models_dir, model_name)
    own_or_model = own if is_model_folder(own) else model_dir(models_dir, model_name)
    hp = hf.read_hparams(own_or_model)
    vocab_paths(own_or_model)
    return hp, own_or_model, find_checkpoint(path)


def read_best(folder: str | Path) -> dict | None:
    """The run folder's `best.json` ({"checkpoint": "model-N", "step": N, "val_loss": x}), or None."""
    try:
        best = json.loads((Path(folder) / BEST_FILE).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise UserError(f"{Path(folder) / BEST_FILE} is unreadable ({e}); delete it") from None
    if not isinstance(best, dict) or not isinstance(best.get("checkpoint"), str):
        raise UserError(f"{Path(folder) / BEST_FILE} does not name a checkpoint; delete it")
    return best


def write_best(folder: str | Path, name: str, step: int, val_loss: float) -> None:
    """Name checkpoint `name` the run's best (atomically)."""
    text = json.dumps({"checkpoint": name, "step": int(step), "val_loss": float(val_loss)})
    atomic_write_text(Path(folder) / BEST_FILE, text + "\n")


def best_checkpoint(run_dir: str | Path) -> str:
    """The prefix of the best checkpoint of a run folder (`best`), checked to be complete."""
    run_dir = Path(run_dir)
    best = read_best(run_dir)
    if best is None:
        raise UserError(f"{run_dir} has no best checkpoint ({BEST_FILE}): train it with --keep_best "
                        f"and --val_every N")
    prefix = run_dir / os.path.basename(best["checkpoint"])
    if not is_complete(prefix):
        raise UserError(f"{run_dir}: the best checkpoint {prefix.name} named in {BEST_FILE} is "
                        f"missing; use --checkpoint {run_dir}/model-N")
    return str(prefix)
