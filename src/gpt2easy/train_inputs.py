"""What a training reads before TensorFlow starts: its model folder, hparams and token chunks.

train.py reads them first, so that a wrong model folder, a broken hparams.json or a bad dataset (a
truncated archive, ids outside the vocabulary, malformed CSV, an empty text) is one error line within
a second instead of after TensorFlow's import (2-5 s), and the trainer gets the text already encoded.
Imports no TensorFlow.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from . import hf
from .corpus import list_files
from .dataset import load_dataset
from .errors import UserError
from .folders import VOCAB_FILES, is_model_folder, model_dir
from .hparams import HParams
from .locate import BEST, best_checkpoint, candidates, find_checkpoint
from .tokens import ENDOFTEXT_ID
from .train_config import TrainConfig

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class TrainInputs:
    """The model folder a run uses, and its data as token chunks."""

    src: Path  # the folder whose hparams.json and vocabulary the run uses
    hp: HParams
    base: Path | None  # the base model folder (None: a continued run whose base is gone)
    chunks: list[np.ndarray]  # training data
    window: int  # input tokens per training row
    val_chunks: list[np.ndarray] | None  # --val_dataset's chunks (None: validate on `chunks`)


def read_inputs(cfg: TrainConfig) -> TrainInputs:
    """Resolve the model folder and read hparams and datasets: every check that needs no TensorFlow."""
    run_dir = Path(cfg.checkpoint_dir).expanduser() / cfg.run_name
    src = source_folder(run_dir, cfg.restore_from, cfg.models_dir, cfg.model_name)
    hp = hf.read_hparams(src)
    sample_length = cfg.sample_length or hp.n_ctx - 1
    if sample_length > hp.n_ctx:
        raise UserError(f"--sample_length {sample_length} is too long: the model has {hp.n_ctx} "
                        f"positions, use at most {hp.n_ctx}")
    base = _base_folder(cfg)
    if cfg.restore_from == BEST:
        best_checkpoint(run_dir)  # named in best.json and complete (read later, with TensorFlow)
    elif cfg.restore_from not in ("latest", "fresh"):
        find_checkpoint(cfg.restore_from)
    chunks = training_chunks(cfg.dataset, cfg, src, hp)
    window = _window(max(len(c) for c in chunks), hp.n_ctx)
    val_chunks = None
    if cfg.val_every and cfg.val_dataset is not None:
        val_chunks = training_chunks(cfg.val_dataset, cfg, src, hp)
        if max(len(c) for c in val_chunks) < 2:
            raise UserError(f"{cfg.val_dataset}: no chunk of 2 tokens or more to validate on")
    return TrainInputs(src, hp, base, chunks, window, val_chunks)


def source_folder(run_dir: Path, restore_from: str, models_dir: str, model_name: str) -> Path:
    """The folder whose hparams.json and vocabulary the run uses.

    The run's own copies when continuing it (so a run trains on after the base model is deleted),
    the folder of a restore PATH when it has them, else the base model folder.
    """
    def complete(folder: Path) -> bool:
        return all((folder / f).is_file() for f in ("hparams.json", *VOCAB_FILES))

    if restore_from == "latest" and complete(run_dir) and candidates(run_dir):
        return run_dir
    if restore_from == BEST:
        return run_dir if complete(run_dir) else model_dir(models_dir, model_name)
    if restore_from not in ("latest", "fresh"):
        path = Path(restore_from).expanduser()
        own = path if path.is_dir() else path.parent
        if complete(own) or is_model_folder(own):  # ours, or a Hugging Face folder
            return own
    return model_dir(models_dir, model_name)


def _base_folder(cfg: TrainConfig) -> Path | None:
    """The base model folder if it exists (a continued run may have lost it: that's fine)."""
    try:
        return model_dir(cfg.models_dir, cfg.model_name)
    except UserError:
        if cfg.restore_from == "fresh":
            raise
        return None


def training_chunks(data: str, cfg: TrainConfig, src: Path, hp: HParams) -> list[np.ndarray]:
    """The token chunks of `data` as training sees them: text encoded like encode.py (with a
    progress bar over its bytes), and every chunk preceded by <|endoftext|> (50256), so that a
    document's start is always learned after the token that separates documents (and that
    unconditional sampling starts from), also when it opens a chunk; a vocabulary without id 50256
    (a tiny test model) gets no start token."""
    text_bytes = sum(f.stat().st_size for f in list_files(data) if f.suffix != ".npz")
    with tqdm(total=text_bytes, unit="B", unit_scale=True, desc="encoding", disable=not text_bytes,
              leave=False) as bar:
        return load_dataset(data, src, cfg.combine, cfg.encoding, n_vocab=hp.n_vocab,
                            start_token=ENDOFTEXT_ID if hp.n_vocab > ENDOFTEXT_ID else None,
                            on_bytes=bar.update, **cfg.reading_kwargs())


def _window(longest_chunk: int, n_ctx: int) -> int:
    """Input tokens per row: n_ctx, or less for a corpus whose chunks are all shorter."""
    if longest_chunk < 2:
        raise UserError("the dataset has no chunk of 2 tokens or more: nothing to learn from")
    window = min(n_ctx, longest_chunk - 1)
    if window < n_ctx:
        logger.warning("warning: the longest chunk of the dataset has %d tokens: training on "
                       "%d-token windows instead of %d", longest_chunk, window, n_ctx)
    return window
