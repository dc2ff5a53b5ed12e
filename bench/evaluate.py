#!/usr/bin/env python3
"""Evaluation speed and agreement: `gpt2easy.evaluate.score` against transformers on the same weights.

    .venv/bin/python bench/evaluate.py                       # 124M shape, random weights, fp32
    .venv/bin/python bench/evaluate.py --tokens 8192 --batch_sizes 1,8 --precision bf16

Random weights in the 124M shape (see bench/generate.py); the ids are Shakespeare encoded with the
GPT-2 vocabulary (../shared/data) or, without it, random ids. Both tools score the same windows
(stride = n_ctx, every token once): the loss difference and, for each, tokens/s of wall time and
tokens per CPU-second of the process (all its threads: steadier than wall time on a shared machine).
"""

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src"))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from gpt2easy import cli  # noqa: E402

SHARED = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "data")


def corpus_ids(n: int) -> np.ndarray:
    vocab = os.path.join(SHARED, "gpt2-vocab")
    text_file = os.path.join(SHARED, "shakespeare", "julius_caesar.txt")
    if os.path.isfile(os.path.join(vocab, "encoder.json")) and os.path.isfile(text_file):
        from gpt2easy.encoder import get_encoder

        with open(text_file, encoding="utf-8") as f:
            ids = get_encoder(vocab).encode_to_numpy(f.read())
        ids = np.resize(ids, n)  # repeated if the play is shorter
    else:
        ids = np.random.default_rng(0).integers(0, 50257, n)
    return np.concatenate([[50256], ids]).astype(np.int32)


def hf_loss(model, ids, n_ctx):
    """Sum of NLL over the same non-overlapping windows of n_ctx + 1 ids; (mean, seconds)."""
    import torch

    total, count, start, cpu = 0.0, 0, time.perf_counter(), time.process_time()
    with torch.inference_mode():
        for begin in range(0, len(ids) - 1, n_ctx):
            window = torch.tensor(ids[begin:begin + n_ctx + 1], dtype=torch.long)[None]
            logits = model(window[:, :-1]).logits.float()
            nll = torch.nn.functional.cross_entropy(logits[0], window[0, 1:], reduction="sum")
            total += float(nll)
            count += window.shape[1] - 1
    return total / count, time.perf_counter() - start, time.process_time() - cpu


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tokens", type=int, default=16384, help="tokens to score")
    p.add_argument("--batch_sizes", default="1,4,8")
    p.add_argument("--precision", default="fp32", choices=("fp32", "bf16"))
    p.add_argument("--no_hf", action="store_true", help="skip transformers")
    args = p.parse_args()
    cli.quiet_tensorflow()
    from generate import hf_model, random_weights

    from gpt2easy.evaluate import Scorer, score
    from gpt2easy.hparams import HParams
    from gpt2easy.model import GPT2

    hp = HParams(n_vocab=50257, n_ctx=1024, n_embd=768, n_head=12, n_layer=12)
    weights = random_weights(hp)
    ids = corpus_ids(args.tokens)
    gpt = GPT2(hp, weights)
    results = {}
    for batch in (int(b) for b in args.batch_sizes.split(",")):
        scorer = Scorer(gpt, args.precision)
        score(gpt, ids[: hp.n_ctx * batch + 1], batch_size=batch, scorer=scorer, progress=False)  # compile
        cpu = time.process_time()
        r = score(gpt, ids, batch_size=batch, scorer=scorer, progress=False)
        cpu = time.process_time() - cpu
        results[batch] = r.loss
        print(f"gpt2easy {args.precision} batch {batch}: {r.tokens} tokens in {r.seconds:.1f} s = "
              f"{r.tokens / r.seconds:.0f} tokens/s wall, {r.tokens / cpu:.1f} tokens per CPU-second; "
              f"loss {r.loss:.6f}", flush=True)
    if not args.no_hf:
        import torch

        torch.set_num_threads(os.cpu_count() or 1)
        model = hf_model(weights, hp, torch.float32)
        loss, seconds, cpu = hf_loss(model, ids, hp.n_ctx)
        print(f"transformers fp32 batch 1: {len(ids) - 1} tokens in {seconds:.1f} s = "
              f"{(len(ids) - 1) / seconds:.0f} tokens/s wall, {(len(ids) - 1) / cpu:.1f} tokens per "
              f"CPU-second; loss {loss:.6f}; "
              f"|difference| {max(abs(v - loss) for v in results.values()):.2e}")


if __name__ == "__main__":
    main()
