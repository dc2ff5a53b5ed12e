#!/usr/bin/env python3
"""Held-out loss of a trained model: mean nats per token over every token of an encoded dataset.

    python demo/heldout_loss.py --dataset data/shakespeare/val.npz --run_name shakespeare-small

The training log's `validation loss` averages a fixed sample of windows (quick, for watching a run);
this scores the whole file, the figure the demo is judged by: each document is cut into consecutive
windows of `--window` tokens (default: the model's context), every token is predicted from the
tokens before it in its window, and the loss is averaged over all predicted tokens. A document's
last window may be shorter; it is scored too, so every token but each document's first counts.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from gpt2easy import cli  # noqa: E402
from gpt2easy.errors import UserError  # noqa: E402
from gpt2easy.folders import DEFAULT_MODELS_DIR  # noqa: E402


def windows(chunks, window: int) -> dict[int, list]:
    """Rows of `length + 1` tokens by length: consecutive windows that overlap by one token, so
    each token after a document's first is a target exactly once."""
    import numpy as np

    rows: dict[int, list] = {}
    for chunk in chunks:
        for start in range(0, len(chunk) - 1, window):
            row = np.asarray(chunk[start:start + window + 1], np.int32)
            rows.setdefault(len(row) - 1, []).append(row)
    return rows


def heldout_loss(dataset: str, run_name: str | None = None, model_name: str = "124M",
                 models_dir: str = DEFAULT_MODELS_DIR, checkpoint: str | None = None,
                 checkpoint_dir: str = "checkpoint", window: int = 0, batch_size: int = 16) -> None:
    """Print `held-out loss: X nats/token over N tokens (checkpoint C)` on stdout."""
    cli.quiet_tensorflow()
    from gpt2easy.checkpoint import load_model, open_model
    from gpt2easy.dataset import load_npz
    from gpt2easy.train import EvalLoss

    hp, _, prefix = open_model(models_dir, model_name, run_name, checkpoint, checkpoint_dir)
    window = window or hp.n_ctx
    if not 0 < window <= hp.n_ctx:
        raise UserError(f"--window must be between 1 and the model's context {hp.n_ctx}, got {window}")
    chunks = load_npz(dataset, n_vocab=hp.n_vocab)
    gpt = load_model(prefix, hp)
    total, count = 0.0, 0
    for length, rows in sorted(windows(chunks, window).items()):
        loss = EvalLoss(gpt, min(batch_size, len(rows)), length)
        total += loss(rows) * len(rows) * length
        count += len(rows) * length
    if not count:
        raise UserError(f"{dataset}: no document of 2 tokens or more to score")
    print(f"held-out loss: {total / count:.4f} nats/token over {count:,} tokens ({prefix})")


if __name__ == "__main__":
    cli.run(heldout_loss)
