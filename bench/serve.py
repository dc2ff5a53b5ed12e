#!/usr/bin/env python3
"""Load on the server: 1, 4, 8 and 16 concurrent clients against `serve` on the 124M shape.

    .venv/bin/python bench/serve.py                       # random 124M-shaped weights
    .venv/bin/python bench/serve.py --clients 1,8 --requests 4 --max_tokens 64

A random 124M-shaped checkpoint (with GPT-2's vocabulary, from --vocab) is written to a temporary
folder and served in-process on 127.0.0.1 by the same code as serve.py. Each client sends
`requests` streamed completions one after another (a 16-token prompt, `max_tokens` new tokens,
top_k 40, its own seed; a request ends early only if it draws <|endoftext|>). Reported per
concurrency: total generated tokens per second (usage counts over wall time), p50/p95 time to first
token and per request, and errors (any non-200 answer or broken stream; must be 0).
"""

import asyncio
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from gpt2easy import cli  # noqa: E402

PROMPT = ("The history of the city begins in the early years of the nineteenth century, when a few "
          "families")  # about 16 tokens


async def client(http, i: int, requests: int, max_tokens: int, stats: dict) -> None:
    import httpx

    for k in range(requests):
        body = {"prompt": PROMPT, "max_tokens": max_tokens, "top_k": 40, "seed": 1000 * i + k,
                "stream": True, "stream_options": {"include_usage": True}}  # fmt: skip
        t0 = time.perf_counter()
        first, tokens, ok = None, 0, False
        try:
            async with http.stream("POST", "/v1/completions", json=body) as r:
                if r.status_code != 200:
                    stats["errors"] += 1
                    continue
                async for line in r.aiter_lines():
                    if line == "data: [DONE]":
                        ok = True
                    elif line.startswith("data: {"):
                        chunk = json.loads(line[6:])
                        if first is None and any(c.get("text") for c in chunk.get("choices", [])):
                            first = time.perf_counter() - t0
                        if chunk.get("usage"):
                            tokens = chunk["usage"]["completion_tokens"]
        except httpx.HTTPError:
            ok = False
        if not ok:
            stats["errors"] += 1
            continue
        stats["ttft"].append(first if first is not None else time.perf_counter() - t0)
        stats["total"].append(time.perf_counter() - t0)
        stats["tokens"] += tokens


async def level(url: str, clients: int, requests: int, max_tokens: int) -> dict:
    import httpx

    stats = {"ttft": [], "total": [], "tokens": 0, "errors": 0}
    async with httpx.AsyncClient(base_url=url, timeout=600, limits=httpx.Limits(max_connections=64)) as http:
        t0 = time.perf_counter()
        await asyncio.gather(*(client(http, i, requests, max_tokens, stats) for i in range(clients)))
        stats["wall"] = time.perf_counter() - t0
    return stats


def main(clients: str = "1,4,8,16", requests: int = 2, max_tokens: int = 32, precision: str = "fp32",
         vocab: str = str(ROOT.parent / "shared" / "data" / "gpt2-vocab")) -> None:  # fmt: skip
    """Run the load levels and print a table.

    Args:
        clients: comma-separated numbers of concurrent clients.
        requests: requests per client, one after another.
        max_tokens: new tokens per request.
        precision: fp32 or bf16.
        vocab: folder with GPT-2's encoder.json and vocab.bpe.
    """
    cli.quiet_tensorflow()
    logging.getLogger("httpx").setLevel(logging.WARNING)  # not a line per request
    sys.path.insert(0, str(ROOT / "bench"))
    from generate import random_weights

    from gpt2easy.checkpoint import write_openai_checkpoint
    from gpt2easy.hparams import HParams
    from gpt2easy.serve import ServeConfig, build_service, start_background

    levels = [int(c) for c in str(clients).split(",")]
    hp = HParams()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "124M-random"
        folder.mkdir()
        hp.to_json(folder / "hparams.json")
        for name in ("encoder.json", "vocab.bpe"):
            shutil.copyfile(Path(vocab) / name, folder / name)
        write_openai_checkpoint(folder, random_weights(hp))
        t = time.perf_counter()
        cfg = ServeConfig(models_dir=tmp, model_name="124M-random", precision=precision,
                          max_queue=max(levels) + 1, max_batch=max(levels))  # fmt: skip
        service = build_service(cfg)
        print(f"loaded and compiled in {time.perf_counter() - t:.1f} s", file=sys.stderr)
        rows = []
        with start_background(service, max_queue=cfg.max_queue) as url:
            for c in levels:
                # warm-up: compile this batch size for the prompt's bucket (once per shape, also
                # in a real server; the timed run below measures the steady state)
                asyncio.run(level(url, c, 1, 2))
                s = asyncio.run(level(url, c, requests, max_tokens))
                rows.append((c, s))
                print(f"{c} clients done in {s['wall']:.1f} s", file=sys.stderr)
        service.scheduler.stop()
    pct = lambda xs, q: float(np.percentile(xs, q)) if xs else float("nan")  # noqa: E731
    print(f"\n124M shape, random weights, {precision}, {os.cpu_count()} CPUs; each client: {requests} "
          f"streamed requests of {max_tokens} new tokens (16-token prompt, top_k 40)\n")  # fmt: skip
    print("| clients | total tokens/s | TTFT p50 | TTFT p95 | request p50 | request p95 | errors |")
    print("|---|---|---|---|---|---|---|")
    for c, s in rows:
        print(f"| {c} | {s['tokens'] / s['wall']:.1f} | {pct(s['ttft'], 50):.2f} s "
              f"| {pct(s['ttft'], 95):.2f} s | {pct(s['total'], 50):.2f} s | {pct(s['total'], 95):.2f} s "
              f"| {s['errors']} |")


if __name__ == "__main__":
    cli.run(main)
