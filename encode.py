#!/usr/bin/env python3
"""Pre-encode text into a token archive for train.py (no TensorFlow: starts fast).

    python encode.py corpus.txt corpus.npz
    python encode.py 'texts/**/*.txt' corpus.npz --model_name 124M --combine 50000
"""

import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "src"))

import fire  # noqa: E402

from gpt2easy import cli  # noqa: E402
from gpt2easy.folders import DEFAULT_MODELS_DIR  # noqa: E402


@fire.decorators.SetParseFn(str, "in_text", "out_npz", "model_name", "models_dir", "encoding")
def encode(
    in_text: str,
    out_npz: str,
    model_name: str = "124M",
    models_dir: str = DEFAULT_MODELS_DIR,
    combine: int = 50000,
    encoding: str = "utf-8",
    workers: int = 0,
    legacy_endoftext: bool = False,
    verbose: bool = False,
) -> None:
    """Encode a text file, a folder (recursive, sorted) or a glob into OUT_NPZ.

    Every file and every `<|endoftext|>`-separated part of a file is a document; documents are
    joined with the end-of-text token 50256. Chunks of at least `combine` characters become the
    archive's members arr_0, arr_1, ... (uint16 token arrays), as in the classic tool.

    Args:
        in_text: a text file, a folder (read recursively, in sorted order) or a quoted glob.
        out_npz: the archive to write (written under a temporary name, then renamed).
        model_name: model whose vocabulary (encoder.json, vocab.bpe) encodes the text.
        models_dir: folder holding one folder per model.
        combine: small files are concatenated into chunks of at least this many characters.
        encoding: text encoding of the input files, e.g. utf-8 or latin-1.
        workers: encoding processes; 0 means one per CPU core.
        legacy_endoftext: encode the text `<|endoftext|>` as ordinary tokens, as the classic
            tools did, instead of the single end-of-text token.
        verbose: more logging.
    """
    del verbose  # read by cli.run to set the log level
    from gpt2easy.api import encode as encode_text

    start = time.perf_counter()
    stats = encode_text(in_text, out_npz, model_name=model_name, models_dir=models_dir,
                        combine=combine, encoding=encoding, workers=workers,
                        legacy_endoftext=legacy_endoftext)  # fmt: skip
    seconds = time.perf_counter() - start
    print(
        f"encoded {stats.files} files, {stats.documents} documents, {stats.characters} characters"
        f" -> {stats.tokens} tokens in {stats.chunks} chunks, {stats.bytes / 1e6 / seconds:.1f}"
        f" MB/s: wrote {out_npz}",
        file=sys.stderr,
    )


if __name__ == "__main__":
    cli.run(encode)
