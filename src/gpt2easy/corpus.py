"""Encode a text corpus into token chunks: streamed in blocks, encoded on every core.

The corpus is the classic tool's text stream: the files in a stable order, joined by the text
`<|endoftext|>`; a chunk ends after the first file that brings it to `combine` characters. Each
chunk is cut into pieces at *safe* places, where GPT-2's pre-tokenizer always splits whatever
comes after: just before whitespace (newline, space, tab, CR) that follows a printable ASCII
character. (A pre-token ending in `x` followed by whitespace ends there whether or not the text
goes on, and whitespace never joins the text before it.) So encoding piece by piece gives exactly
the ids of encoding the chunk whole, while only a few blocks of text are in memory at a time; the
pieces go to worker processes and come back in order. tiktoken holds the GIL while it encodes,
so the workers are processes (forked on Linux: they inherit the encoder), not threads.
"""

from __future__ import annotations

import codecs
import glob
import multiprocessing as mp
import os
import signal
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .encoder import ENDOFTEXT, Encoder
from .errors import UserError
from .machine import usable_cores
from .tables import header_mode, is_table, normalise_newlines, read_documents

BLOCK_BYTES = 1 << 20  # text read (and handed to a worker) at a time
_SAFE_BEFORE = frozenset(chr(c) for c in range(0x21, 0x7F))


def list_files(path: str | Path) -> list[Path]:
    """The files of a file, folder (recursive) or glob, in a stable sorted order.

    Hidden files and folders (names starting with '.') inside a folder are skipped.
    """
    path = str(Path(path).expanduser()) if not glob.has_magic(str(path)) else str(path)
    if os.path.isfile(path):
        return [Path(path)]
    if os.path.isdir(path):
        found = []
        for root, dirs, files in os.walk(path):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            found += [Path(root) / f for f in sorted(files) if not f.startswith(".")]
        if not found:
            raise UserError(f"folder {path} holds no files")
        return found
    if not glob.has_magic(path):
        raise UserError(f"{path} does not exist (give a text file, a folder or a glob)")
    found = []
    for match in sorted(glob.glob(os.path.expanduser(path), recursive=True)):
        found += list_files(match) if os.path.isdir(match) else [Path(match)]
    if not found:
        raise UserError(f"the glob {path!r} matches no files")
    return found


def safe_cut(text: str, lo: int = 0) -> int:
    """The last position i >= max(lo, 1) where `text` splits without changing its ids, else 0.

    Safe means: text[i] is a newline, space, tab or carriage return and text[i - 1] is printable
    ASCII (not space).
    """
    lo = max(lo, 1)
    for sep in ("\n", " ", "\r", "\t"):
        i = text.rfind(sep, lo)
        while i >= lo:
            if text[i - 1] in _SAFE_BEFORE:
                return i
            i = text.rfind(sep, lo, i)
    return 0


def read_text_blocks(
    path: Path, encoding: str, block_bytes: int = BLOCK_BYTES, *, keep_line_endings: bool = False
) -> Iterator[tuple[str, int]]:
    """Decode a file block by block: (text, bytes read) pairs.

    `\\r\\n` and a lone `\\r` become `\\n` (as the classic tool's text-mode read did), also when a
    `\\r\\n` is split between two blocks; `keep_line_endings` keeps the text exactly. Undecodable
    bytes or NUL characters raise a UserError naming the file and byte offset.
    """
    try:
        decoder = codecs.getincrementaldecoder(encoding)(errors="strict")
    except LookupError:
        raise UserError(f"unknown --encoding {encoding!r} (try utf-8 or latin-1)") from None
    hint = "if it is text, pass its encoding, e.g. --encoding latin-1"
    offset = 0
    held_cr = False  # a '\r' at the end of a block waits: the next block may start with '\n'
    try:
        with open(path, "rb") as f:
            while True:
                data = f.read(block_bytes)
                pending = len(decoder.getstate()[0])
                try:
                    text = decoder.decode(data, final=not data)
                except UnicodeDecodeError as e:
                    raise UserError(
                        f"{path}: cannot decode byte 0x{e.object[e.start]:02x} at byte offset "
                        f"{offset - pending + e.start} as {encoding} (binary file?); {hint}"
                    ) from None
                nul = text.find("\x00")
                if nul >= 0:
                    raise UserError(
                        f"{path}: NUL character near byte offset "
                        f"{offset - pending + len(text[:nul].encode(encoding, 'replace'))}: "
                        f"a binary file, or text in another encoding; {hint}"
                    )
                offset += len(data)
                if not keep_line_endings:
                    text = "\r" + text if held_cr else text
                    held_cr = bool(data) and text.endswith("\r")
                    text = normalise_newlines(text[:-1] if held_cr else text)
                if text or data:
                    yield text, len(data)
                if not data:
                    return
    except OSError as e:
        raise UserError(f"cannot read {path}: {e.strerror or e}") from None


@dataclass
class Stats:
    files: int = 0
    documents: int = 0
    characters: int = 0
    tokens: int = 0
    chunks: int = 0
    bytes: int = 0


@dataclass
class _Piece:
    text: str
    nbytes: int  # input bytes read while making this piece (for the progress bar)
    ends_chunk: bool


@dataclass(frozen=True)
class Reading:
    """How files become documents: text encoding, line endings, table columns (see tables.py)."""

    encoding: str = "utf-8"
    keep_line_endings: bool = False
    column: str | int | None = None
    header: str | bool | None = "auto"


def _document_blocks(path: Path, how: Reading, block_bytes: int) -> Iterator[tuple[str | None, int]]:
    """A file's text as (text, bytes read) blocks, with (None, 0) after each document's last block.

    A text file is one document; a `.csv` or `.jsonl` file holds one document per non-empty row.
    """
    if is_table(path):
        for text, nbytes in read_documents(path, how.encoding, column=how.column, header=how.header,
                                           keep_line_endings=how.keep_line_endings):
            yield text, nbytes
            if text:
                yield None, 0
        return
    yield from read_text_blocks(path, how.encoding, block_bytes,
                                keep_line_endings=how.keep_line_endings)
    yield None, 0


def _pieces(files, how: Reading, combine, legacy, stats, block_bytes) -> Iterator[_Piece]:
    """Text pieces of the corpus stream in order, each ending at a safe cut or a chunk end.

    The separator after a document is added when the next one begins (none after the last).
    Without `legacy`, the place just before a separator is a safe cut too (the encoder splits the
    text at `<|endoftext|>`), so rows of a table are handed out in pieces of about a block.
    """
    carry, chunk_chars, pending_bytes = "", 0, 0
    keep, closed, separate = len(ENDOFTEXT), False, False
    last = ""  # the document's last characters: separators found across blocks, its ending
    for path in files:
        stats.files += 1
        for block, nbytes in _document_blocks(path, how, block_bytes):
            stats.bytes += nbytes
            pending_bytes += nbytes
            if separate and (block or block is None):
                carry += ENDOFTEXT
                chunk_chars += keep
                separate = False
            if block is None:  # the document ends
                closed = not legacy and last == ENDOFTEXT  # it ends with its own separator
                stats.documents += 1 - closed
                last = ""
                if chunk_chars >= combine:
                    yield _Piece(carry, pending_bytes, True)
                    carry, chunk_chars, pending_bytes = "", 0, 0
                    continue
                separate = not closed
                if not legacy and len(carry) >= block_bytes // 4:
                    yield _Piece(carry, pending_bytes, False)
                    carry, pending_bytes = "", 0
                continue
            stats.characters += len(block)
            chunk_chars += len(block)
            if not legacy:
                stats.documents += (last[1:] + block).count(ENDOFTEXT)
            last = (last + block)[-keep:]
            carry += block  # in place (CPython): many small rows do not copy the carry each time
            cut = safe_cut(carry, len(carry) - len(block)) if len(carry) >= block_bytes // 4 else 0
            if cut:
                yield _Piece(carry[:cut], pending_bytes, False)
                carry, pending_bytes = carry[cut:], 0
    if chunk_chars or pending_bytes:
        if legacy and separate:
            carry += ENDOFTEXT  # the classic tool leaves one after the last file
        yield _Piece(carry, pending_bytes, True)


_WORKER_ENCODER: Encoder | None = None


def _init_worker(folder: str) -> None:
    global _WORKER_ENCODER
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl+C is the parent's to handle
    if _WORKER_ENCODER is None:  # spawned, not forked: build it here
        from .encoder import get_encoder

        _WORKER_ENCODER = get_encoder(folder)


def _encode_piece(text: str, legacy: bool, encoder: Encoder | None = None) -> np.ndarray:
    encoder = encoder or _WORKER_ENCODER
    ids = encoder.encode_to_numpy(text, legacy_endoftext=legacy)
    return ids.astype(token_dtype(encoder.n_vocab))


def token_dtype(n_vocab: int) -> np.dtype:
    """uint16 when every id fits (GPT-2's 50257 do), else int32."""
    return np.dtype(np.uint16 if n_vocab <= 1 << 16 else np.int32)


def default_workers() -> int:
    return usable_cores()


def encode_stream(
    files: list[Path],
    encoder: Encoder,
    *,
    combine: int = 50000,
    encoding: str = "utf-8",
    legacy_endoftext: bool = False,
    workers: int | None = None,
    stats: Stats | None = None,
    on_bytes=None,
    block_bytes: int = BLOCK_BYTES,
    keep_line_endings: bool = False,
    column: str | int | None = None,
    header: str | bool | None = "auto",
) -> Iterator[tuple[np.ndarray, bool]]:
    """Encode `files` as one corpus; yields (ids, ends_chunk) parts in order.

    The parts of one chunk, concatenated, are the ids of the chunk's text encoded whole. At most
    about 2 x workers pieces of text are in flight. `stats` is filled in as parts are produced;
    `on_bytes(n)` is called with the bytes read for each part (progress bars). Line endings become
    `\\n` unless `keep_line_endings`; `column` and `header` choose the text of `.csv`/`.jsonl` files
    (see tables.py).
    """
    stats = stats if stats is not None else Stats()
    workers = default_workers() if workers is None else max(1, int(workers))
    how = Reading(encoding, keep_line_endings, column, header_mode(header))
    pieces = _pieces(files, how, combine, legacy_endoftext, stats, block_bytes)

    def done(ids: np.ndarray, nbytes: int, ends_chunk: bool):
        stats.tokens += len(ids)
        stats.chunks += ends_chunk
        if on_bytes:
            on_bytes(nbytes)
        return ids, ends_chunk

    if workers == 1:
        for p in pieces:
            yield done(_encode_piece(p.text, legacy_endoftext, encoder), p.nbytes, p.ends_chunk)
        return
    global _WORKER_ENCODER
    _WORKER_ENCODER = encoder  # inherited by forked workers
    method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
    pool = ProcessPoolExecutor(
        workers, mp.get_context(method), initializer=_init_worker, initargs=(encoder.folder,)
    )
    try:
        queue: deque[tuple[Future, int, bool]] = deque()
        for p in pieces:
            queue.append((pool.submit(_encode_piece, p.text, legacy_endoftext), p.nbytes, p.ends_chunk))
            del p
            while len(queue) > 2 * workers:
                f, nbytes, ends = queue.popleft()
                yield done(f.result(), nbytes, ends)
        while queue:
            f, nbytes, ends = queue.popleft()
            yield done(f.result(), nbytes, ends)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
