#!/usr/bin/env python3
"""Generation speed: our compiled path against HuggingFace transformers GPT-2 on PyTorch (CPU).

    .venv/bin/pip install -r bench/requirements.txt
    .venv/bin/python bench/generate.py                    # 124M shape, random weights
    .venv/bin/python bench/generate.py --batches 1,4,8 --peers False   # batch sizes compared
    .venv/bin/python bench/generate.py --prompts 64 --peers False     # 64 prompts: batched vs one by one

One OpenAI-format checkpoint with random weights (non-trivial biases and gains) is written to a
temporary folder; both tools load it (transformers through a name mapping, since version 5 no
longer reads TF checkpoints), and must agree on greedy tokens and logits before anything is timed.
Batch 1, a 16-token prompt, 256 new tokens, top_k 40. Reports, per setting: time to first token
(prompt pass plus the first draw) and tokens per second over the whole generation (including the
prompt pass), the ratio to the faster transformers setting, and the memory-bandwidth bound: the
bytes of weights read per token against the read bandwidth measured here.

`--batches 1,4,8`: total tokens/s (all rows together) of one generation per batch size, in fp32 and
bf16, in the same run, with the ratio to batch 1 of the same precision. `--prompts N`: the time to
answer N prompts of mixed lengths (4 to 60 tokens) in batches of 8 prompts side by side
(`bulk`-style, left-padded) against one prompt at a time.
"""

import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src"))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from gpt2easy import cli  # noqa: E402


def random_weights(hp, seed=0):
    from gpt2easy.model import initial_weights

    rng = np.random.default_rng(seed + 1)
    weights = initial_weights(hp, seed)
    for name, value in weights.items():
        if name.endswith("/b"):
            value += 0.02 * rng.standard_normal(value.shape).astype(np.float32)
        elif name.endswith("/g"):
            value += 0.1 * rng.standard_normal(value.shape).astype(np.float32)
    return weights


def to_transformers(weights, hp):
    """OpenAI names -> GPT2LMHeadModel state dict (Conv1D weights are [in, out] in both)."""
    import torch

    def t(name):
        return torch.from_numpy(np.ascontiguousarray(weights[name]))

    sd = {"transformer.wte.weight": t("model/wte"), "transformer.wpe.weight": t("model/wpe"),
          "transformer.ln_f.weight": t("model/ln_f/g"), "transformer.ln_f.bias": t("model/ln_f/b"),
          "lm_head.weight": t("model/wte")}  # fmt: skip
    pairs = {"ln_1.weight": "ln_1/g", "ln_1.bias": "ln_1/b", "ln_2.weight": "ln_2/g",
             "ln_2.bias": "ln_2/b", "attn.c_attn.weight": "attn/c_attn/w",
             "attn.c_attn.bias": "attn/c_attn/b", "attn.c_proj.weight": "attn/c_proj/w",
             "attn.c_proj.bias": "attn/c_proj/b", "mlp.c_fc.weight": "mlp/c_fc/w",
             "mlp.c_fc.bias": "mlp/c_fc/b", "mlp.c_proj.weight": "mlp/c_proj/w",
             "mlp.c_proj.bias": "mlp/c_proj/b"}  # fmt: skip
    for i in range(hp.n_layer):
        for hf, ours in pairs.items():
            value = t(f"model/h{i}/{ours}")
            sd[f"transformer.h.{i}.{hf}"] = value[0] if ours.endswith("/w") else value
    return sd


def hf_model(weights, hp, dtype):
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(vocab_size=hp.n_vocab, n_positions=hp.n_ctx, n_embd=hp.n_embd,
                        n_layer=hp.n_layer, n_head=hp.n_head, activation_function="gelu_new",
                        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)  # fmt: skip
    model = GPT2LMHeadModel(config)
    missing, unexpected = model.load_state_dict(to_transformers(weights, hp), strict=False)
    assert not unexpected and all(".attn.bias" in m or "masked_bias" in m for m in missing), (
        missing, unexpected)  # fmt: skip
    return model.to(dtype).eval()


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def bench_ours(generator, prompt, new, top_k):
    from gpt2easy.generate import Controls

    controls = Controls.make(seed=(1, 0), top_k=top_k)

    def go(n):
        return [t for t, _ in generator.generate(prompt, n, controls)]

    go(new)  # compile (once per shape), then timed runs
    ttft = min(timed(lambda: go(1))[0] for _ in range(3))
    total = timed(lambda: go(new))[0]
    return ttft, new / total


def bench_hf(model, prompt, new, top_k):
    import torch

    ids = torch.tensor(prompt, dtype=torch.long)

    def go(n):
        with torch.inference_mode():
            return model.generate(ids, do_sample=True, top_k=top_k, top_p=1.0, temperature=1.0,
                                  max_new_tokens=n, min_new_tokens=n, pad_token_id=50256)  # fmt: skip

    go(8)  # warm up
    ttft = min(timed(lambda: go(1))[0] for _ in range(3))
    total, out = timed(lambda: go(new))
    assert out.shape[1] == prompt.shape[1] + new
    return ttft, new / total


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or "unknown CPU"


def bench_batches(gpt2, prompt, new, top_k, batches, rounds=3):
    """Total tokens/s per (precision, batch size): one generation of `new` tokens, all rows busy;
    the best of `rounds` rounds that each time every size once."""
    from gpt2easy.generate import Controls, Generator

    controls = Controls.make(seed=(1, 0), top_k=top_k)
    print(f"\nbatch sizes: {new} new tokens per row, {prompt.shape[1]}-token prompt, top_k {top_k}")
    print(f"{'':10} {'batch':>5} {'total tokens/s':>15} {'per row':>8} {'vs batch 1':>11}")
    for precision in ("fp32", "bf16", "bf16-copy"):  # bf16-copy: without rows_kernel
        generator = Generator(gpt2, precision[:4], use_kernel=precision == "bf16")
        base = None
        best = {}
        rows = {batch: np.repeat(prompt, batch, axis=0) for batch in batches}
        for batch in batches:  # compile every shape first
            list(generator.generate(rows[batch], new, controls))
        for _ in range(rounds):  # then the sizes in turn, so that a ratio spans the same minutes
            for batch in batches:
                seconds = timed(lambda g=generator, r=rows[batch]: list(g.generate(r, new, controls)))[0]
                best[batch] = min(best.get(batch, seconds), seconds)
        for batch in batches:
            rate = batch * new / best[batch]
            base = base or (rate if batch == 1 else None)
            ratio = f"{rate / base:.2f}x" if base else "-"
            print(f"{precision:10} {batch:5d} {rate:15.1f} {rate / batch:8.1f} {ratio:>11}", flush=True)


def bench_prompts(gpt2, count, new, top_k, precision="bf16", batch=8):
    """Seconds to answer `count` prompts of mixed lengths: batches of `batch` against one by one."""
    from gpt2easy.generate import Controls, Generator

    rng = np.random.default_rng(0)
    prompts = [rng.integers(0, 50000, size=int(n)).tolist() for n in rng.integers(4, 61, size=count)]
    generator = Generator(gpt2, precision)
    controls = Controls.make(seed=(1, 0), top_k=top_k)

    def batched():
        for start in range(0, count, batch):
            chunk = prompts[start : start + batch]
            list(generator.generate(chunk, new, controls, streams=range(len(chunk)), lanes=[0] * len(chunk)))

    def single():
        for p in prompts:
            list(generator.generate([p], new, controls))

    for go in (batched, single):  # compile every shape first
        for start in range(0, count, batch):
            n = max(len(p) for p in prompts[start : start + batch])
            size = batch if go is batched else 1
            list(generator.generate([[0] * n] * size, new, controls))
    together = timed(batched)[0]
    alone = timed(single)[0]
    print(f"\n{count} prompts of 4-60 tokens, {new} new tokens each, {precision}, top_k {top_k}: "
          f"batches of {batch} {together:.1f} s, one at a time {alone:.1f} s "
          f"({alone / together:.2f}x)")  # fmt: skip


def read_bandwidth(gib=1.0):
    """GB/s of reading a large float32 array (summing it) with all threads."""
    import tensorflow as tf

    x = tf.ones([int(gib * 2**28)], tf.float32)
    sum_fn = tf.function(lambda x: tf.reduce_sum(x))
    sum_fn(x).numpy()
    seconds = min(timed(lambda: sum_fn(x).numpy())[0] for _ in range(5))
    return x.shape[0] * 4 / seconds / 1e9


def bytes_per_token(hp, itemsize):
    """Weights read per generated token: the block matrices and biases, the output embedding
    (logits), one row of wte and wpe (the cache is counted apart)."""
    e = hp.n_embd
    block = 12 * e * e * itemsize + 13 * e * 4
    return hp.n_layer * block + hp.n_vocab * e * itemsize + 2 * e * 4 + 2 * e * 4


def check_agreement(gpt2_model, torch_model, weights, hp):
    """Greedy tokens equal, and logits close, before any timing."""
    import tensorflow as tf
    import torch

    from gpt2easy.generate import Controls, Generator
    from gpt2easy.model import model

    prompt = np.arange(100, 116)[None]
    ours, _ = model(gpt2_model.params(), tf.constant(prompt, tf.int32), hp)
    with torch.inference_mode():
        theirs = torch_model(torch.tensor(prompt)).logits.numpy()
    diff = float(np.abs(ours.numpy() - theirs).max())
    greedy = [int(t[0]) for t, _ in Generator(gpt2_model).generate(prompt, 24, Controls.make(
        temperature=0.0))]  # fmt: skip
    with torch.inference_mode():
        out = torch_model.generate(torch.tensor(prompt), do_sample=False, max_new_tokens=24,
                                   min_new_tokens=24, pad_token_id=50256)  # fmt: skip
    same = greedy == out[0, 16:].tolist()
    print(f"check: max |logit difference| {diff:.2e} (fp32), greedy 24 tokens equal: {same}")
    if diff > 1e-3 or not same:
        raise SystemExit("bench: the two implementations disagree; not timing them")


def main(new_tokens: int = 256, prompt_tokens: int = 16, top_k: int = 40, peers: bool = True,
         threads: int = 0, batches=(), prompts: int = 0) -> None:  # fmt: skip
    """Time generation at batch 1 on the 124M shape with random weights.

    Args:
        batches: e.g. "1,4,8": compare total tokens/s of these batch sizes (fp32 and bf16) instead.
        prompts: e.g. 64: time that many mixed-length prompts batched vs one at a time instead.
        new_tokens: tokens generated per run.
        prompt_tokens: prompt length.
        top_k: top-k of the draws.
        peers: also time transformers on PyTorch (bench/requirements.txt).
        threads: PyTorch threads; 0 = its default.
    """
    cli.quiet_tensorflow()
    from gpt2easy.checkpoint import load_model, write_openai_checkpoint
    from gpt2easy.generate import Generator
    from gpt2easy.hparams import HParams

    hp = HParams()
    weights = random_weights(hp)
    with tempfile.TemporaryDirectory() as tmp:
        write_openai_checkpoint(tmp, weights)
        gpt2 = load_model(tmp, hp)
        from gpt2easy.checkpoint import read_weights
        from gpt2easy.locate import find_checkpoint

        weights = read_weights(find_checkpoint(tmp), hp)  # what both tools load: the same file
    prompt = (np.arange(prompt_tokens)[None] * 37 + 11) % hp.n_vocab
    print(f"CPU: {cpu_name()}, {os.cpu_count()} cores")
    if batches or prompts:
        if batches:
            items = batches if isinstance(batches, (list, tuple)) else str(batches).split(",")
            sizes = [int(b) for b in items]
            bench_batches(gpt2, prompt, new_tokens, top_k, sizes)
        if prompts:
            bench_prompts(gpt2, int(prompts), new_tokens, top_k)
        return
    rows = []
    torch_models = {}
    if peers:
        import torch

        if threads:
            torch.set_num_threads(threads)
        torch_models["fp32"] = hf_model(weights, hp, torch.float32)
        check_agreement(gpt2, torch_models["fp32"], weights, hp)
        torch_models["bf16"] = hf_model(weights, hp, torch.bfloat16)
    for precision in ("fp32", "bf16"):
        ttft, rate = bench_ours(Generator(gpt2, precision), prompt, new_tokens, top_k)
        rows.append((f"gpt2easy {precision}", ttft, rate, 4 if precision == "fp32" else 2))
    for name, m in torch_models.items():
        ttft, rate = bench_hf(m, prompt, new_tokens, top_k)
        rows.append((f"transformers {name} weights", ttft, rate, 4 if name == "fp32" else 2))
    bandwidth = read_bandwidth()
    best_peer = max((r[2] for r in rows if r[0].startswith("transformers")), default=None)
    print(f"\n124M shape, batch 1, {prompt_tokens}-token prompt, {new_tokens} new tokens, "
          f"top_k {top_k}, {os.cpu_count()} CPUs; read bandwidth {bandwidth:.1f} GB/s")  # fmt: skip
    print(f"{'':28} {'first token':>12} {'tokens/s':>9} {'vs best peer':>13} {'bound':>12}")
    for name, ttft, rate, itemsize in rows:
        bound = bandwidth * 1e9 / bytes_per_token(hp, itemsize)
        ratio = f"{rate / best_peer:.2f}x" if best_peer else "-"
        print(f"{name:28} {ttft * 1000:9.0f} ms {rate:9.1f} {ratio:>13} {bound:7.0f} tok/s"
              f" ({bytes_per_token(hp, itemsize) / 1e6:.0f} MB/token)")  # fmt: skip


if __name__ == "__main__":
    cli.run(main)
