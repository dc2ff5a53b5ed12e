"""A training run's folder `checkpoint/RUN`: lock, model files, what to start from, what to save.

The run folder is a complete model folder: `hparams.json`, `encoder.json`, `vocab.bpe` are copied in
at the start (converted from a Hugging Face base folder), and checkpoints `model-N` (N = completed
updates) hold the weights under OpenAI's names and nothing else. Beside each, `model-N.train` holds the
loop state (`train/step`, `train/seed`, `train/sampler`, `train/avg_loss`, `train/optimizer`) and
`model-N.optimizer` the optimizer slots (`optimizer/<weight>/m`, `/v`), by default for the newest
checkpoint only (`--save_optimizer`): together they make a resume exact. Old run folders, with these
entries inside `model-N`, resume the same way.

Where training starts (`--restore_from`):
- `latest`: the newest readable checkpoint of the run folder (falling back past corrupt ones), else
  the base model's weights, else a random initialisation (said in the log).
- `fresh`: the base model's weights (or a random initialisation), ignoring the run folder.
- `best`: the run's checkpoint with the lowest validation loss (`best.json`, see `--keep_best`).
- a folder or a `model-N` prefix: those weights, and its optimizer/loop state when it has them.
The counter continues from the checkpoint started from: `train/step` (or N of its name), 0 for base
model weights and random init. So `fresh` restarts the numbering at 0 (as gpt-2-simple does; the
classic script continued the run's old numbers, which made model-N lie about its updates).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
from pathlib import Path

import numpy as np
from filelock import FileLock, Timeout

from .checkpoint import (
    SAVE_OPTIMIZER,
    list_tensors,
    load_weights,
    newest_readable,
    read_tensors,
    weight_tensors,
    write_checkpoint,
)
from .errors import UserError
from .files import atomic_write_bytes, atomic_write_text
from .folders import HF_TORCH_WEIGHTS, VOCAB_FILES, torch_only_message
from .hf_vocab import vocab_texts
from .hparams import HParams
from .locate import BEST, best_checkpoint, candidates

logger = logging.getLogger(__name__)

LOCK_FILE = ".lock"


class RunLock:
    """An exclusive, non-blocking lock on `RUN/.lock`, held for the whole training.

    `filelock` takes an OS lock on the open file (`flock` on Linux and macOS, `msvcrt.locking` on
    Windows): the OS drops it when the process ends however it ends, so a crashed run never leaves
    a stale lock behind (the file itself stays; it is the lock that matters).
    """

    def __init__(self, run_dir: Path):
        self.path = run_dir / LOCK_FILE
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UserError(f"cannot create {run_dir}: {e.strerror or e}") from None
        self._lock = FileLock(str(self.path), timeout=0)
        try:
            self._lock.acquire()
        except Timeout:
            raise UserError(f"{run_dir} is in use by another training (lock on {self.path}); "
                            f"wait for it to finish or use another --run_name") from None
        except OSError as e:
            raise UserError(f"cannot create {self.path}: {e.strerror or e}") from None

    def release(self) -> None:
        if self._lock.is_locked:
            self._lock.release(force=True)


def copy_model_files(src: Path, run_dir: Path, hp: HParams) -> None:
    """Make `run_dir` a complete model folder: hparams.json and the vocabulary, atomically (in our
    layout, also when `src` is a Hugging Face folder)."""
    if src.resolve() == run_dir.resolve():
        return
    hp.to_json(run_dir / "hparams.json")
    for name, text in zip(VOCAB_FILES, vocab_texts(src), strict=True):
        data = text.encode("utf-8")
        target = run_dir / name
        if not target.is_file() or target.read_bytes() != data:
            atomic_write_bytes(target, data)


@dataclasses.dataclass
class Start:
    """What training starts from."""

    weights: dict | None  # name -> float32 array or tensor; None: random initialisation
    step: int = 0
    prefix: str | None = None
    extra: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)  # optimizer/, train/

    def describe(self) -> str:
        return f"{self.prefix} (step {self.step})" if self.prefix else "random initialisation"


def _load(path: str | Path, hp: HParams) -> Start:
    prefix, weights = load_weights(path, hp, weight_tensors)
    names = [k for k in list_tensors(prefix) if k.startswith(("optimizer/", "train/"))]
    extra = read_tensors(prefix, names) if names else {}
    if "train/step" in extra:
        step = int(extra["train/step"])
    else:
        m = re.search(r"model-(\d+)$", prefix)
        step = int(m.group(1)) if m else 0
    return Start(weights, step, prefix, extra)


def find_start(restore_from: str, run_dir: Path, base_dir: Path | None, hp: HParams) -> Start:
    """Resolve `--restore_from` to weights and state (see the module docstring)."""
    if restore_from == "latest" and candidates(run_dir):
        # The newest checkpoint whose weights *and* optimizer/loop state read back (load_weights
        # alone checks only the weights, stored first).
        return newest_readable(run_dir, lambda prefix: _load(prefix, hp))
    if restore_from in ("latest", "fresh"):
        if base_dir is not None and (base_dir / HF_TORCH_WEIGHTS).is_file() and not candidates(base_dir):
            raise UserError(torch_only_message(base_dir))
        if base_dir is not None and candidates(base_dir):
            start = _load(base_dir, hp)
            return Start(start.weights, 0, start.prefix)  # base weights: a new run, step 0
        where = base_dir if base_dir is not None else run_dir
        logger.info("no checkpoint in %s: training from scratch (random init)", where)
        return Start(None)
    if restore_from == BEST:
        return _load(best_checkpoint(run_dir), hp)
    return _load(restore_from, hp)


def state_text(tensors: dict[str, np.ndarray], name: str) -> str | None:
    value = tensors.get(name)
    if value is None:
        return None
    value = value.item() if isinstance(value, np.ndarray) else value
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def save(run_dir: Path, step: int, weights: dict, slots: dict, *, seed: int, sampler_state: dict,
         avg_loss: tuple[float, float], optimizer: str, max_to_keep: int | None,
         extra: dict | None = None, protect: tuple[str, ...] = (),
         save_optimizer: str = "newest") -> str:
    """Write checkpoint `model-<step>` with everything a resume needs, then the counter file.

    `extra`: more `train/` state (best.Best); `protect`: checkpoints max_to_keep never removes;
    `save_optimizer`: which checkpoints keep their optimizer slots (`model-N.optimizer`): the
    newest only (older ones keep weights and loop state), all, or none (a resume then restarts the
    optimizer from zero)."""
    if save_optimizer not in SAVE_OPTIMIZER:
        raise UserError(f"--save_optimizer must be one of {', '.join(SAVE_OPTIMIZER)}")
    tensors = dict(weights)
    if save_optimizer != "none":
        tensors.update(slots)
    tensors.update(extra or {})
    tensors["train/step"] = np.int64(step)
    tensors["train/seed"] = np.int64(seed)
    tensors["train/sampler"] = np.array(json.dumps(sampler_state).encode("utf-8"), dtype=object)
    tensors["train/avg_loss"] = np.array(avg_loss, np.float64)
    tensors["train/optimizer"] = np.array(optimizer.encode("utf-8"), dtype=object)
    prefix = write_checkpoint(run_dir, step, tensors, max_to_keep=max_to_keep or None, protect=protect,
                              save_optimizer=save_optimizer)
    atomic_write_text(run_dir / "counter", f"{step}\n")
    return prefix


def relpath(path: str | Path) -> str:
    """`path` relative to the working directory when it lies below it (for log lines)."""
    try:
        return os.path.relpath(path) if not os.path.relpath(path).startswith("..") else str(path)
    except ValueError:
        return str(path)
