"""A persistent cache of XLA's compiled programs, so that a second launch starts in seconds.

Generation (and the `--xla` training step) compile with XLA on first use: for 124M that is most of
the time before the first token. TensorFlow can keep the compiled executables on disk
(`TF_XLA_FLAGS=--tf_xla_persistent_cache_directory=...`), keyed by a fingerprint of the program, so
the same model shapes and settings are not compiled again.

The folder is `$GPT2EASY_CACHE/xla/tf-VERSION-CPU` (default `~/.cache/gpt2easy`): a program compiled
for one TensorFlow or one CPU's instruction set (AVX-512 here, AVX2 there: a home folder may be shared
between machines) is never loaded by another. A different model shape, batch, cache length or dtype
changes the program and so its key. `GPT2EASY_XLA_CACHE=0` turns the cache off. It must be set up
before TensorFlow is imported: `cli.quiet_tensorflow` calls `enable()`.

TensorFlow never deletes a program, so `enable()` also keeps the folder under a size limit
(`GPT2EASY_XLA_CACHE_GB`, default 2): past it, the least recently used programs go until three
quarters of the limit are left, and the folders of other TensorFlow versions or CPUs go once
nothing in them was used for 30 days. "Used" is the file's access time where the file system keeps
it (Linux's default updates it at most daily), else its creation.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import logging
import os
import shutil
import time
from pathlib import Path

from .machine import cpu_flags, cpu_name

logger = logging.getLogger(__name__)

FLAG = "--tf_xla_persistent_cache_directory"


def tensorflow_version() -> str:
    """The installed TensorFlow distribution's version, without importing it."""
    for dist in ("tensorflow-cpu", "tensorflow", "tf-nightly", "tensorflow-macos"):
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return "unknown"


def cache_root() -> Path:
    """Where gpt2easy keeps caches: `$GPT2EASY_CACHE`, else `$XDG_CACHE_HOME/gpt2easy`, else
    `~/.cache/gpt2easy`."""
    if os.environ.get("GPT2EASY_CACHE"):
        return Path(os.environ["GPT2EASY_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "gpt2easy"


def cache_dir() -> Path:
    """This TensorFlow's and this CPU's folder of compiled programs."""
    machine = hashlib.sha256((cpu_name() + " " + " ".join(sorted(cpu_flags()))).encode()).hexdigest()
    return cache_root() / "xla" / f"tf-{tensorflow_version()}-{machine[:12]}"


def enable() -> Path | None:
    """Point XLA's persistent cache at `cache_dir()` (before TensorFlow is imported); None when off
    (GPT2EASY_XLA_CACHE=0, the user set the flag already, or the folder cannot be made)."""
    if os.environ.get("GPT2EASY_XLA_CACHE", "1") == "0":
        return None
    flags = os.environ.get("TF_XLA_FLAGS", "")
    if FLAG in flags:
        return None
    folder = cache_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:  # a read-only home: compile every time, as before
        logger.debug("no XLA compilation cache (%s)", e)
        return None
    os.environ["TF_XLA_FLAGS"] = f"{flags} {FLAG}={folder}".strip()
    try:
        prune(folder, limit_bytes())
    except OSError as e:  # another process pruning, a read-only file: never stop a command for it
        logger.debug("XLA cache not pruned (%s)", e)
    return folder


def limit_bytes() -> int:
    """`GPT2EASY_XLA_CACHE_GB` (default 2) in bytes."""
    try:
        gigabytes = float(os.environ.get("GPT2EASY_XLA_CACHE_GB", "2"))
    except ValueError:
        gigabytes = 2.0
    return int(max(gigabytes, 0.0) * 1024**3)


def _files(folder: Path) -> list[tuple[float, int, Path]]:
    """(last used, size, path) of the files in `folder`; "used": access time where the file
    system keeps it, else the last write."""
    with os.scandir(folder) as entries:
        stats = [(e.path, e.stat()) for e in entries if e.is_file()]
    return [(max(st.st_atime, st.st_mtime), st.st_size, Path(p)) for p, st in stats]


def prune(folder: Path, limit: int, stale_days: float = 30.0) -> int:
    """Delete the least recently used programs in `folder` while it holds more than `limit` bytes
    (down to three quarters of it), and sibling folders (other TensorFlow versions or CPUs) whose
    files were all last used over `stale_days` ago. Returns the number of files deleted."""
    entries = _files(folder)
    total, deleted = sum(size for _, size, _ in entries), 0
    if total > limit:
        for _, size, path in sorted(entries):
            if total <= limit * 3 // 4:
                break
            path.unlink(missing_ok=True)
            total, deleted = total - size, deleted + 1
        logger.debug("XLA cache %s: deleted %d least recently used programs", folder, deleted)
    old = time.time() - stale_days * 86400
    for sibling in folder.parent.iterdir():
        if sibling == folder or not sibling.is_dir() or not sibling.name.startswith("tf-"):
            continue
        files = _files(sibling)
        if all(used < old for used, _, _ in files):
            deleted += len(files)
            shutil.rmtree(sibling, ignore_errors=True)
    return deleted
