"""Token archives (`.npz` of `arr_N` chunks) and loading training data (`load_dataset`).

Archive format: a zip whose members `arr_0.npy`, `arr_1.npy`, ... are 1-D token arrays, one per
chunk (the classic tool's format). We write `uint16` members into an uncompressed zip, one chunk at
a time; we read ours and the classic `int64` files alike and check every id against the
vocabulary.
"""

from __future__ import annotations

import lzma
import re
import shutil
import tempfile
import zipfile
import zlib
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np

from .corpus import Stats, encode_stream, list_files, token_dtype
from .encoder import Encoder, get_encoder
from .errors import UserError
from .files import atomic_path

SPILL_BYTES = 64 << 20  # a chunk bigger than this is buffered in a temporary file, not in memory
_REENCODE = "re-create it with: python encode.py YOUR_TEXT {path}"


class NpzWriter:
    """Write chunks into an `.npz` one at a time; the file appears (atomically) on `close()`."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._atomic = atomic_path(self.path)
        tmp = self._atomic.__enter__()
        try:
            self._zip = zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED, allowZip64=True)
        except OSError as e:
            self._atomic.__exit__(type(e), e, None)
            raise UserError(f"cannot write {self.path}: {e.strerror or e}") from None
        self.count = 0

    def add(self, parts: Iterable[np.ndarray], dtype: np.dtype) -> int:
        """Write one chunk given as consecutive parts; returns its length in tokens."""
        buffered: list[np.ndarray] = []
        size = 0
        spill = None
        try:
            for part in parts:
                part = np.ascontiguousarray(part, dtype=dtype)
                size += len(part)
                if spill is None and size * dtype.itemsize > SPILL_BYTES:
                    spill = tempfile.TemporaryFile(dir=self.path.parent)
                    for b in buffered:
                        spill.write(b.data)
                    buffered = []
                if spill is None:
                    buffered.append(part)
                else:
                    spill.write(part.data)
            if size == 0:
                return 0
            header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False}
            header["shape"] = (size,)
            name = f"arr_{self.count}.npy"
            with self._zip.open(name, "w", force_zip64=size * dtype.itemsize > 1 << 30) as f:
                np.lib.format.write_array_header_1_0(f, header)
                if spill is None:
                    for b in buffered:
                        f.write(b.data)
                else:
                    spill.seek(0)
                    shutil.copyfileobj(spill, f, 16 << 20)
        except OSError as e:
            raise UserError(f"cannot write {self.path}: {e.strerror or e}") from None
        finally:
            if spill is not None:
                spill.close()
        self.count += 1
        return size

    def close(self, error: BaseException | None = None) -> None:
        """Finish the archive (or, given the error that stopped us, throw the partial file away)."""
        self._zip.close()
        if error is None:
            self._atomic.__exit__(None, None, None)
        else:
            self._atomic.__exit__(type(error), error, None)

    def __enter__(self) -> NpzWriter:
        return self

    def __exit__(self, typ, error, tb) -> None:
        self.close(error)


def save_npz(path: str | Path, chunks: Sequence[np.ndarray], n_vocab: int = 50257) -> None:
    """Write token chunks as `arr_0`, `arr_1`, ... (uint16 when the vocabulary fits)."""
    with NpzWriter(path) as w:
        for chunk in chunks:
            w.add([chunk], token_dtype(n_vocab))


def _member_order(names: list[str]) -> list[str]:
    numbered = [re.fullmatch(r"arr_(\d+)", n) for n in names]
    if all(numbered):
        return sorted(names, key=lambda n: int(n[4:]))
    return names


def load_npz(path: str | Path, n_vocab: int | None = None) -> list[np.ndarray]:
    """Chunks of a token archive (ours or the classic tool's), ids checked below `n_vocab`.

    Returns 1-D uint16 arrays (int32 when an id needs it).
    """
    path = Path(path)
    hint = _REENCODE.format(path=path)
    try:
        archive = np.load(path, allow_pickle=False)
    except OSError as e:
        raise UserError(f"cannot read {path}: {e.strerror or e}") from None
    except (ValueError, zipfile.BadZipFile, EOFError):
        raise UserError(f"{path} is not a token archive (.npz of token arrays); {hint}") from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise UserError(f"{path} is a single .npy array, not a token archive (.npz); {hint}")
    chunks = []
    with archive:
        names = _member_order(list(archive.files))
        if not names:
            raise UserError(f"{path} holds no token arrays; {hint}")
        for name in names:
            try:
                arr = archive[name]
            except (ValueError, zipfile.BadZipFile, EOFError, OSError, OverflowError, MemoryError,
                    NotImplementedError, RuntimeError, zlib.error, lzma.LZMAError):
                # Damaged or odd members: bad headers, shapes too big to allocate, unknown
                # compression, encryption (zipfile raises all of these, not only BadZipFile).
                raise UserError(f"{path}: member {name} is damaged or not an array; {hint}") from None
            if not isinstance(arr, np.ndarray):  # numpy hands back the raw bytes of non-.npy files
                raise UserError(f"{path}: member {name} is not a .npy array; {hint}")
            if arr.dtype.kind not in "iu" or arr.ndim != 1:
                raise UserError(
                    f"{path}: member {name} is {arr.dtype} with shape {arr.shape}, not a 1-D array "
                    f"of token ids; {hint}"
                )
            if arr.size:
                lo, hi = int(arr.min()), int(arr.max())
                if lo < 0 or (n_vocab is not None and hi >= n_vocab):
                    bad = lo if lo < 0 else hi
                    raise UserError(
                        f"{path}: token id {bad} in {name} is outside the vocabulary "
                        f"(0..{(n_vocab or 0) - 1}); it was encoded for another model; {hint}"
                    )
                dtype = np.uint16 if hi < 1 << 16 else np.int32
            else:
                dtype = np.uint16
            chunks.append(arr.astype(dtype, copy=False))
    return chunks


def _as_encoder(encoder: Encoder | str | Path | None) -> Encoder:
    if encoder is None:
        raise UserError("text data needs an encoder (a model folder with encoder.json, vocab.bpe)")
    if isinstance(encoder, str | Path):
        return get_encoder(encoder)
    return encoder


def iter_text_chunks(
    files: list[Path], encoder: Encoder, stats: Stats | None = None, **kwargs
) -> Iterator[np.ndarray]:
    """Encode text files like encode.py does and yield whole chunks (see corpus.encode_stream)."""
    parts: list[np.ndarray] = []
    for ids, ends_chunk in encode_stream(files, encoder, stats=stats, **kwargs):
        parts.append(ids)
        if ends_chunk:
            yield np.concatenate(parts) if len(parts) != 1 else parts[0]
            parts = []


def load_dataset(
    path: str | Path,
    encoder: Encoder | str | Path | None = None,
    combine: int = 50000,
    encoding: str = "utf-8",
    n_vocab: int | None = None,
    *,
    legacy_endoftext: bool = False,
    workers: int | None = None,
    on_bytes=None,
    keep_line_endings: bool = False,
    column: str | int | None = None,
    header: str | bool | None = "auto",
    start_token: int | None = None,
) -> list[np.ndarray]:
    """Training data as a list of 1-D token chunks (uint16, or int32 for big vocabularies).

    Args:
        path: an `.npz` token archive, a text file, a `.csv`/`.jsonl` table, a folder (recursive)
            or a glob; `.npz` files among them are loaded as they are, all other files are encoded
            exactly as encode.py does (joined into chunks of at least `combine` characters).
        encoder: an Encoder or a model folder; needed only when there is text to encode.
        combine: minimum characters per chunk of text.
        encoding: text encoding of the text files.
        n_vocab: vocabulary size every id must be below (default: the encoder's, if any).
        legacy_endoftext: encode the text `<|endoftext|>` as ordinary tokens, like the classic tool.
        workers: processes that encode text (default: one per core).
        on_bytes: called with the number of text bytes read as encoding goes on (progress bars).
        keep_line_endings: keep `\\r\\n` and `\\r` (default: they become `\\n`).
        column, header: which column of `.csv`/`.jsonl` files holds the text (see tables.py).
        start_token: when given (50256 for GPT-2), every chunk that does not begin with it gets it
            in front, so that the first document of every chunk is seen after the token documents
            follow, as the later ones are (chunks, ours and the classic tool's, start with a
            document).
    """
    files = list_files(path)
    npz = [f for f in files if f.suffix == ".npz"]
    text = [f for f in files if f.suffix != ".npz"]
    enc = _as_encoder(encoder) if text else None
    if n_vocab is None and enc is not None:
        n_vocab = enc.n_vocab
    chunks = [c for f in npz for c in load_npz(f, n_vocab)]
    if text:
        chunks += iter_text_chunks(
            text, enc, combine=combine, encoding=encoding, legacy_endoftext=legacy_endoftext,
            workers=workers, on_bytes=on_bytes, keep_line_endings=keep_line_endings,
            column=column, header=header,
        )
    chunks = [c for c in chunks if len(c)]
    if not chunks:
        raise UserError(f"no tokens in {path}: the data is empty")
    if start_token is not None:
        chunks = with_start_token(chunks, start_token)
    return chunks


def with_start_token(chunks: list[np.ndarray], token: int) -> list[np.ndarray]:
    """`chunks` with `token` in front of each one that does not already begin with it.

    A chunk of a single token stays as it is: it holds no pair to learn from by itself, and a corpus
    of nothing else is refused as too small rather than trained on the start token alone. Chunks are
    replaced one at a time, so memory grows by one chunk at most.
    """
    for i, c in enumerate(chunks):
        if len(c) > 1 and int(c[0]) != token:
            out = np.empty(len(c) + 1, np.result_type(c.dtype, np.min_scalar_type(token)))
            out[0], out[1:] = token, c
            chunks[i] = out
    return chunks


def encode_to_npz(
    in_text: str | Path,
    out_npz: str | Path,
    encoder: Encoder,
    *,
    combine: int = 50000,
    encoding: str = "utf-8",
    legacy_endoftext: bool = False,
    workers: int | None = None,
    on_bytes=None,
    keep_line_endings: bool = False,
    column: str | int | None = None,
    header: str | bool | None = "auto",
) -> Stats:
    """Encode a text file, table, folder or glob into the token archive `out_npz` (encode.py).

    Nothing appears at `out_npz` unless everything worked. Returns the counts for the summary.
    Line endings become `\\n` unless `keep_line_endings`; `column`/`header`: see tables.py.
    """
    files = list_files(in_text)
    archives = [f for f in files if f.suffix == ".npz"]
    if archives:
        raise UserError(f"{archives[0]} is already a token archive; train on it directly")
    stats = Stats()
    dtype = token_dtype(encoder.n_vocab)
    stream = encode_stream(
        files, encoder, combine=combine, encoding=encoding, legacy_endoftext=legacy_endoftext,
        workers=workers, stats=stats, on_bytes=on_bytes, keep_line_endings=keep_line_endings,
        column=column, header=header,
    )
    with NpzWriter(out_npz) as writer:
        for first in stream:

            def parts(first=first) -> Iterator[np.ndarray]:
                ids, ends_chunk = first
                yield ids
                while not ends_chunk:
                    ids, ends_chunk = next(stream)
                    yield ids

            writer.add(parts(), dtype)
        if stats.tokens == 0:
            raise UserError(f"no text in {in_text}: the corpus is empty")
    stats.chunks = writer.count
    return stats
