"""How good is a model on some text: mean loss (nats/token), perplexity and bits per byte.

What is scored (the rules `evaluate.py`, `gpt2easy evaluate` and the Python API share):
- The corpus is one stream of token ids, as training sees it: the chunks of an `.npz` (or of text
  encoded on the fly exactly like encode.py: files and `<|endoftext|>`-separated documents joined
  with the end-of-text token 50256) follow each other with one 50256 between two chunks, and the
  stream starts with a 50256 (for a vocabulary smaller than GPT-2's, its last id stands for 50256).
  So documents are not scored separately: a document's first token is predicted after the 50256
  before it (and, when the window reaches back that far, the end of the
  document before), the way unconditional sampling starts and the way training windows cross
  document boundaries. Every id after the leading 50256 is predicted exactly once, separators
  included: `tokens` counts them all.
- Sliding windows, transformers' perplexity recipe (`stride` S, window n_ctx + 1 ids: n_ctx inputs
  and their n_ctx next ids): windows start at 0, S, 2S, ...; each window scores only the ids the
  windows before it did not (its last S, all of the first window's), and the last window stops at
  the end of the stream. Every prediction after the first window therefore sees at least
  n_ctx + 1 - S ids of context. S = n_ctx (the default) scores each window's ids once, without
  overlap: fastest; a smaller S costs n_ctx / S times as much and gives a lower (better-informed)
  loss.
- Bits per byte: the total loss in bits over the UTF-8 bytes of the scored text (the bytes the
  predicted ids decode to; a 50256 counts 0 bytes: it is a boundary, not text). Comparable across
  tokenizers, unlike perplexity.

Windows go through in batches of `batch_size` rows of one static shape (the last batch padded and
masked), so the forward pass is traced once. Losses are summed in float64.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Iterator, Sequence

import numpy as np

from .commands import EvaluateConfig
from .errors import UserError
from .machine import PRECISION_CHOICES
from .tokens import ENDOFTEXT_ID

logger = logging.getLogger(__name__)



@dataclasses.dataclass(frozen=True)
class Score:
    """The result: `loss` in nats per predicted token over `tokens` predictions."""

    loss: float
    tokens: int
    bytes: int
    windows: int
    stride: int
    seconds: float = 0.0
    checkpoint: str | None = None
    data: str | None = None

    @property
    def perplexity(self) -> float:
        return math.exp(self.loss) if self.loss < 700 else math.inf

    @property
    def bits_per_byte(self) -> float | None:
        return self.loss * self.tokens / math.log(2) / self.bytes if self.bytes else None

    def to_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out.update(perplexity=self.perplexity, bits_per_byte=self.bits_per_byte,
                   tokens_per_sec=self.tokens / self.seconds if self.seconds else None)
        return out

    def summary(self) -> str:
        bpb = f"{self.bits_per_byte:.4f} bits/byte" if self.bits_per_byte is not None else "no bytes"
        speed = f", {self.tokens / self.seconds:,.0f} tokens/s" if self.seconds else ""
        return (f"loss {self.loss:.4f} nats/token, perplexity {self.perplexity:.2f}, {bpb} over "
                f"{self.tokens:,} tokens ({self.bytes:,} bytes; {self.windows} windows, stride "
                f"{self.stride}{speed})")


# --- the stream and its windows (NumPy only) -----------------------------------------------------


def end_of_text(n_vocab: int) -> int:
    """GPT-2's end-of-text id 50256; for a smaller (test) vocabulary its last id."""
    return ENDOFTEXT_ID if n_vocab > ENDOFTEXT_ID else n_vocab - 1


def join_chunks(chunks: Sequence[np.ndarray], eot: int = ENDOFTEXT_ID) -> np.ndarray:
    """One int32 stream: a leading `eot`, then the chunks with one `eot` between two (none added
    where a chunk already starts, or the stream already ends, with one)."""
    parts: list[np.ndarray] = []
    last = None
    for chunk in chunks:
        chunk = np.asarray(chunk)
        if not len(chunk):
            continue
        if last != eot and int(chunk[0]) != eot:
            parts.append(np.array([eot], np.int32))
        parts.append(chunk.astype(np.int32, copy=False))
        last = int(chunk[-1])
    if not parts:
        return np.array([eot], np.int32)
    return np.concatenate(parts)


def windows(n: int, n_ctx: int, stride: int) -> Iterator[tuple[int, int, int]]:
    """transformers' sliding windows over a stream of `n` ids: (begin, end, skip) per window.

    The window holds ids [begin, end) (at most n_ctx + 1); its targets are ids begin+1 .. end-1,
    of which the first `skip` were scored by earlier windows. Every id 1 .. n-1 is a counted target
    exactly once."""
    if not 1 <= stride <= n_ctx:
        raise ValueError(f"stride must be between 1 and n_ctx ({n_ctx}), got {stride}")
    prev_end = 0
    for begin in range(0, max(n - 1, 0), stride):
        end = min(begin + n_ctx + 1, n)
        yield begin, end, max(0, prev_end - begin - 1)
        prev_end = end
        if end == n:
            return


def token_bytes(ids: np.ndarray, encoder, eot: int = ENDOFTEXT_ID) -> int:
    """UTF-8 bytes that `ids` decode to (each `eot` counts 0)."""
    counts = np.bincount(np.asarray(ids, np.int64))
    present = np.flatnonzero(counts)
    return int(sum(int(counts[i]) * len(encoder.decode_bytes([int(i)])) for i in present if i != eot))


# --- the compiled part ---------------------------------------------------------------------------


class Scorer:
    """Per-token losses of batches of windows: [batch, n_ctx + 1] ids -> [batch, n_ctx] nats.

    One compiled function per (batch, length), traced once and reused (a Python API object keeps
    its Scorer between calls)."""

    def __init__(self, gpt, precision: str = "fp32"):
        from .machine import resolve_precision

        precision = resolve_precision(precision)
        if precision not in PRECISION_CHOICES:
            raise UserError(f"--precision must be one of auto, fp32, bf16, got {precision!r}")
        self.gpt, self.precision = gpt, precision
        self._fns: dict[tuple[int, int], object] = {}

    def _fn(self, batch: int, length: int):
        import tensorflow as tf

        from .model import COMPUTE_DTYPES, row_token_losses

        key = (batch, length)
        if key not in self._fns:
            dtype, hp = COMPUTE_DTYPES[self.precision], self.gpt.hparams

            def losses(rows):
                return row_token_losses(self.gpt.params(), rows, hp, dtype)

            self._fns[key] = tf.function(losses, autograph=False, input_signature=[
                tf.TensorSpec([batch, length + 1], tf.int32)])
        return self._fns[key]

    def __call__(self, rows: np.ndarray) -> np.ndarray:
        return self._fn(*rows.shape[:1], rows.shape[1] - 1)(rows).numpy()


def score(gpt, ids: np.ndarray, *, stride: int = 0, batch_size: int = 4, precision: str = "fp32",
          scorer: Scorer | None = None, encoder=None, progress: bool = True) -> Score:
    """Score a stream of ids (see `join_chunks`; its first id is context only) with the model `gpt`
    (a `model.GPT2`). `stride` 0 means n_ctx. Bytes are counted when `encoder` is given."""
    from tqdm.auto import tqdm

    ids = np.asarray(ids, np.int32)
    n_ctx = gpt.hparams.n_ctx
    stride = stride or n_ctx
    if not 1 <= stride <= n_ctx:
        raise UserError(f"--stride must be between 1 and the model's context {n_ctx} (0 = {n_ctx}), "
                        f"got {stride}")
    if len(ids) < 2:
        raise UserError("nothing to score: the data has no tokens")
    if ids.min() < 0 or ids.max() >= gpt.hparams.n_vocab:
        bad = int(ids.min()) if ids.min() < 0 else int(ids.max())
        raise UserError(f"token id {bad} is outside the model's vocabulary "
                        f"(0..{gpt.hparams.n_vocab - 1}): the data was encoded for another model")
    scorer = scorer or Scorer(gpt, precision)
    plan = list(windows(len(ids), n_ctx, stride))
    length = min(n_ctx, len(ids) - 1)  # a corpus shorter than one window: one shorter shape
    batch = min(batch_size, len(plan))
    total, count, started = 0.0, 0, time.perf_counter()
    with tqdm(total=len(ids) - 1, unit="tok", unit_scale=True, desc="evaluating", disable=not progress,
              leave=False) as bar:
        for i in range(0, len(plan), batch):
            group = plan[i:i + batch]
            rows = np.zeros((batch, length + 1), np.int32)
            mask = np.zeros((batch, length), bool)
            for r, (begin, end, skip) in enumerate(group):
                rows[r, :end - begin] = ids[begin:end]
                mask[r, skip:end - begin - 1] = True
            losses = scorer(rows)
            total += float(np.sum(losses[mask], dtype=np.float64))
            done = int(mask.sum())
            count += done
            bar.update(done)
    assert count == len(ids) - 1, (count, len(ids))
    eot = end_of_text(gpt.hparams.n_vocab)
    nbytes = token_bytes(ids[1:], encoder, eot) if encoder is not None else 0
    return Score(loss=total / count, tokens=count, bytes=nbytes, windows=len(plan), stride=stride,
                 seconds=time.perf_counter() - started)


# --- the command ---------------------------------------------------------------------------------


def load_stream(data: str, folder, n_vocab: int, combine: int = 50000, encoding: str = "utf-8"):
    """The stream of `data` (text encoded on the fly with a progress bar, or an .npz)."""
    import os

    from tqdm.auto import tqdm

    from .corpus import list_files
    from .dataset import load_dataset

    text_bytes = sum(os.path.getsize(f) for f in list_files(data) if f.suffix != ".npz")
    with tqdm(total=text_bytes, unit="B", unit_scale=True, desc="encoding", disable=not text_bytes,
              leave=False) as bar:
        chunks = load_dataset(data, folder, combine, encoding, n_vocab=n_vocab, on_bytes=bar.update)
    return join_chunks(chunks, end_of_text(n_vocab))


def main(cfg: EvaluateConfig) -> None:
    """Score DATA (text file, folder, glob or .npz): loss, perplexity and bits per byte.

    Every token is predicted exactly once (sliding windows of n_ctx tokens moved by --stride)."""
    import json
    import sys

    from .cli import quiet_tensorflow

    result = run_evaluate(cfg, before_tensorflow=quiet_tensorflow)
    print(f"{cfg.data}: {result.summary()} ({result.checkpoint})", file=sys.stderr)
    if cfg.json:
        print(json.dumps(result.to_dict()), flush=True)


def run_evaluate(cfg: EvaluateConfig, progress: bool = True, before_tensorflow=None) -> Score:
    """Load the model the flags name and score `cfg.data` (what evaluate.py runs). The flags, the
    model folder and the data are checked first; `before_tensorflow()` is called after that, before
    TensorFlow is imported (the command line quiets its start-up there)."""
    from .encoder import get_encoder
    from .locate import open_model

    if cfg.batch_size < 1:
        raise UserError(f"--batch_size must be at least 1, got {cfg.batch_size}")
    if cfg.stride < 0:
        raise UserError(f"--stride must be 0 (= n_ctx) or more, got {cfg.stride}")
    if cfg.precision not in PRECISION_CHOICES:
        raise UserError(f"--precision must be one of auto, fp32, bf16, got {cfg.precision!r}")
    hp, folder, prefix = open_model(cfg.models_dir, cfg.model_name, cfg.run_name, cfg.checkpoint,
                                    cfg.checkpoint_dir)
    if cfg.stride > hp.n_ctx:
        raise UserError(f"--stride must be at most the model's context {hp.n_ctx}, got {cfg.stride}")
    ids = load_stream(cfg.data, folder, hp.n_vocab, cfg.combine, cfg.encoding)
    if before_tensorflow is not None:
        before_tensorflow()
    from .checkpoint import load_model

    gpt = load_model(prefix, hp)
    logger.debug("scoring %d tokens of %s with %s", len(ids) - 1, cfg.data, prefix)
    result = score(gpt, ids, stride=cfg.stride, batch_size=cfg.batch_size, precision=cfg.precision,
                   encoder=get_encoder(folder), progress=progress)
    return dataclasses.replace(result, checkpoint=prefix, data=cfg.data)
