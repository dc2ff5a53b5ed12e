"""Shared test fixtures: where the read-only shared data lives, and the repository root."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("GPT2EASY_SHARED", ROOT.parent / "shared")) / "data"

sys.path.insert(0, str(ROOT / "src"))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@pytest.fixture(scope="session")
def root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def vocab_dir() -> Path:
    """The exact GPT-2 vocabulary (`encoder.json`, `vocab.bpe`) from ../shared/data/gpt2-vocab."""
    path = SHARED / "gpt2-vocab"
    if not (path / "encoder.json").is_file():
        pytest.skip(f"GPT-2 vocabulary not found at {path} (../shared is absent in a user's clone)")
    return path


@pytest.fixture(scope="session")
def shakespeare_dir() -> Path:
    path = SHARED / "shakespeare"
    if not path.is_dir():
        pytest.skip(f"Shakespeare corpus not found at {path} (../shared is absent in a user's clone)")
    return path


@pytest.fixture(scope="session")
def fast(vocab_dir):
    """The GPT-2 encoder as the scripts use it (tiktoken engine)."""
    from gpt2easy.encoder import get_encoder

    return get_encoder(vocab_dir)


@pytest.fixture(scope="session")
def ref(vocab_dir):
    """The plain-Python reference encoder (OpenAI's algorithm), the oracle for `fast`."""
    from gpt2easy.encoder import get_encoder

    return get_encoder(vocab_dir, engine="reference")


@pytest.fixture(scope="session")
def make_model(vocab_dir):
    """`make_model(folder, hp, weights=None) -> folder`: a model folder as the scripts expect it:
    `hparams.json`, the real vocabulary and, given weights, an OpenAI-format checkpoint."""

    def make(folder: Path, hp, weights: dict | None = None) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        hp.to_json(folder / "hparams.json")
        for name in ("encoder.json", "vocab.bpe"):
            shutil.copyfile(vocab_dir / name, folder / name)
        if weights is not None:
            from gpt2easy.checkpoint import write_openai_checkpoint

            write_openai_checkpoint(folder, weights)
        return folder

    return make
