"""Shared test fixtures: where the read-only shared data lives, and the repository root."""

from __future__ import annotations

import os
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
