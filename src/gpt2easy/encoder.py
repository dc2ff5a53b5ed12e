"""GPT-2's byte-level BPE, built from a model folder's own `encoder.json` and `vocab.bpe`.

Two engines give the same ids (proven in tests/test_encoder.py):

* `ReferenceEncoder`: the original algorithm in plain Python (byte-to-unicode table, the
  pre-tokenizer regex with `\\p{L}`/`\\p{N}`, rank-ordered merges). Slow; it is the test oracle.
* `Encoder`: the same vocabulary loaded into tiktoken's Rust BPE (never downloads anything). Its
  pre-tokenizer pattern is an equivalent rewrite that runs about twice as fast in tiktoken's regex
  engine, with the letter/number classes taken from the `regex` module so that both engines agree
  on every code point even where the two Unicode databases differ.

The literal text `<|endoftext|>` becomes the single id 50256 (the real document boundary GPT-2
was trained with); `legacy_endoftext=True` BPE-encodes it as ordinary text like the classic tools.
Lone surrogates in the input become U+FFFD (they are not encodable text) instead of crashing.
"""

from __future__ import annotations

import codecs
import functools
import json
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import regex

from .errors import UserError
from .folders import vocab_paths
from .tokens import ENDOFTEXT

# The pre-tokenizer of OpenAI's encoder.py, verbatim.
GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""


@functools.lru_cache(maxsize=1)
def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> printable character table (space -> 'Ġ', newline -> 'Ċ')."""
    bs = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), 256)]
    cs = bs[:]
    extra = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + extra)
            extra += 1
    return dict(zip(bs, map(chr, cs), strict=True))


def fix_surrogates(text: str) -> str:
    """Replace lone surrogates by U+FFFD (and join surrogate pairs), as tiktoken does."""
    return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")


def _load_vocab(folder: str | Path) -> tuple[dict[str, int], list[tuple[str, str]]]:
    from .hf_vocab import vocab_texts  # also reads a Hugging Face folder's vocab.json/merges.txt

    enc_path, bpe_path = vocab_paths(folder)
    encoder_text, bpe_text = vocab_texts(folder)
    path = enc_path
    try:
        encoder = json.loads(encoder_text)
        path = bpe_path
        lines = bpe_text.split("\n")
        merges = [tuple(line.split()) for line in lines[1:] if line.strip()]
    except (OSError, ValueError) as e:
        raise UserError(f"cannot read the vocabulary file {path}: {e}") from None
    if not isinstance(encoder, dict) or any(len(m) != 2 for m in merges):
        raise UserError(f"{folder}: encoder.json/vocab.bpe are not GPT-2 vocabulary files")
    return encoder, merges  # type: ignore[return-value]


class ReferenceEncoder:
    """OpenAI's encoder.py algorithm in plain Python: the oracle the fast engine is tested against."""

    folder: str | None = None  # the model folder it was loaded from, if any

    def __init__(self, encoder: dict[str, int], merges: Sequence[tuple[str, str]]):
        self.encoder = encoder
        self.decoder = {v: k for k, v in encoder.items()}
        self.byte_encoder = bytes_to_unicode()
        self.byte_decoder = {v: k for k, v in self.byte_encoder.items()}
        self.bpe_ranks = {pair: i for i, pair in enumerate(merges)}
        self.n_vocab = len(encoder)
        self.eot_token = encoder.get(ENDOFTEXT, self.n_vocab - 1)
        self.pattern = regex.compile(GPT2_PATTERN)
        self.cache: dict[str, list[str]] = {}

    def bpe(self, token: str) -> list[str]:
        """Merge the characters of one pre-token, lowest-ranked pair first, until none applies."""
        if token in self.cache:
            return self.cache[token]
        word = list(token)
        while len(word) > 1:
            pairs = set(zip(word, word[1:], strict=False))
            best = min(pairs, key=lambda p: self.bpe_ranks.get(p, float("inf")))
            if best not in self.bpe_ranks:
                break
            merged, i = [], 0
            while i < len(word):
                if i < len(word) - 1 and (word[i], word[i + 1]) == best:
                    merged.append(word[i] + word[i + 1])
                    i += 2
                else:
                    merged.append(word[i])
                    i += 1
            word = merged
        self.cache[token] = word
        return word

    def encode(self, text: str, *, legacy_endoftext: bool = False) -> list[int]:
        text = fix_surrogates(text)
        parts = [text] if legacy_endoftext else text.split(ENDOFTEXT)
        ids: list[int] = []
        for n, part in enumerate(parts):
            if n:
                ids.append(self.eot_token)
            for piece in self.pattern.findall(part):
                mapped = "".join(self.byte_encoder[b] for b in piece.encode("utf-8"))
                ids.extend(self.encoder[t] for t in self.bpe(mapped))
        return ids

    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        text = "".join(self.decoder[int(i)] for i in ids)
        return bytes(self.byte_decoder[c] for c in text)

    def decode(self, ids: Iterable[int]) -> str:
        return self.decode_bytes(ids).decode("utf-8", errors="replace")

    def stream_decoder(self) -> StreamDecoder:
        return StreamDecoder(self)


@functools.lru_cache(maxsize=1)
def _regex_classes() -> tuple[str, str]:
    """`\\p{L}` and `\\p{N}` as explicit ranges, as the installed `regex` module sees them."""
    codes = np.concatenate([np.arange(0xD800), np.arange(0xE000, 0x110000)]).astype("<u4")
    every_char = codes.tobytes().decode("utf-32-le")

    def ranges(prop: str) -> str:
        out = []
        for m in regex.finditer(prop + "+", every_char):
            a, b = ord(m.group()[0]), ord(m.group()[-1])
            out.append(f"\\x{{{a:x}}}" if a == b else f"\\x{{{a:x}}}-\\x{{{b:x}}}")
        return "".join(out)

    return ranges(r"\p{L}"), ranges(r"\p{N}")


def fast_pattern() -> str:
    """GPT2_PATTERN rewritten for tiktoken's regex engine, same pieces on every input.

    The alternatives without look-around are grouped so the engine runs them as one plain regex
    (`\\s+$` is what `\\s+(?!\\S)` matches at the end of the text); only the whitespace-before-a-
    word case needs the backtracking engine.
    """
    letters, numbers = _regex_classes()
    return (
        rf"(?:'(?:[sdmt]|ll|ve|re)| ?[{letters}]+| ?[{numbers}]+| ?[^\s{letters}{numbers}]+|\s+$)"
        r"|\s+(?!\S)|\s"
    )


class Encoder:
    """The fast engine: GPT-2's vocabulary in tiktoken's Rust BPE. Same API as ReferenceEncoder."""

    folder: str | None = None  # the model folder it was loaded from, if any

    def __init__(self, encoder: dict[str, int], merges: Sequence[tuple[str, str]]):
        import tiktoken

        # Undo the byte-to-unicode mapping with str.translate (fast): latin-1 then gives the bytes.
        unmap = {ord(c): b for b, c in bytes_to_unicode().items() if ord(c) != b}
        ranks: dict[bytes, int] = {}
        special: dict[str, int] = {}
        for token, i in encoder.items():
            if token == ENDOFTEXT:
                special[token] = i
            else:
                ranks[token.translate(unmap).encode("latin-1")] = i
        # tiktoken merges by the rank of the merged token; that equals GPT-2's merge order only
        # when token 256+k is merge k. Check it rather than trust it.
        for k, (a, b) in enumerate(merges):
            if encoder.get(a + b) != 256 + k:
                raise UserError(f"vocab.bpe merge {k + 1} ({a} {b}) does not match encoder.json")
        self.n_vocab = len(encoder)
        self.eot_token = special.get(ENDOFTEXT, self.n_vocab - 1)
        self._tk = tiktoken.Encoding(
            "gpt2easy",
            pat_str=fast_pattern(),
            mergeable_ranks=ranks,
            special_tokens=special,
            explicit_n_vocab=self.n_vocab,
        )

    def encode_to_numpy(self, text: str, *, legacy_endoftext: bool = False) -> np.ndarray:
        """Token ids as a uint32 array (no Python int list: the bulk path of encode.py)."""
        allowed = set() if legacy_endoftext else {ENDOFTEXT}
        try:
            return self._tk.encode_to_numpy(text, allowed_special=allowed, disallowed_special=())
        except UnicodeEncodeError:
            return self._tk.encode_to_numpy(
                fix_surrogates(text), allowed_special=allowed, disallowed_special=()
            )

    def encode(self, text: str, *, legacy_endoftext: bool = False) -> list[int]:
        return self.encode_to_numpy(text, legacy_endoftext=legacy_endoftext).tolist()

    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        return self._tk.decode_bytes([int(i) for i in ids])

    def decode(self, ids: Iterable[int]) -> str:
        """Text of `ids`; bytes of a character cut in half decode to U+FFFD, never an error."""
        return self.decode_bytes(ids).decode("utf-8", errors="replace")

    def stream_decoder(self) -> StreamDecoder:
        return StreamDecoder(self)


class StreamDecoder:
    """Decode ids as they arrive, holding back the bytes of a character that is not complete yet.

    `feed(ids)` returns the text that is complete so far; `flush()` returns what is held back
    (as U+FFFD if it never completed). Invalid bytes become U+FFFD; it never raises.
    """

    def __init__(self, encoder: Encoder | ReferenceEncoder):
        self._encoder = encoder
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def feed(self, ids: Iterable[int]) -> str:
        return self._utf8.decode(self._encoder.decode_bytes(ids))

    def flush(self) -> str:
        text = self._utf8.decode(b"", final=True)
        self._utf8.reset()
        return text


@functools.lru_cache(maxsize=4)
def _cached(folder: str, engine: str) -> Encoder | ReferenceEncoder:
    encoder, merges = _load_vocab(folder)
    result = (ReferenceEncoder if engine == "reference" else Encoder)(encoder, merges)
    result.folder = folder
    return result


def get_encoder(folder: str | Path, engine: str = "fast") -> Encoder:
    """The encoder of a model folder (holding encoder.json and vocab.bpe), built once per process.

    Args:
        folder: a model folder such as `src/models/124M`.
        engine: "fast" (tiktoken) or "reference" (plain Python, slow, same ids).
    """
    if engine not in ("fast", "reference"):
        raise ValueError(f"engine must be 'fast' or 'reference', not {engine!r}")
    return _cached(str(Path(folder).expanduser().resolve()), engine)  # type: ignore[return-value]
