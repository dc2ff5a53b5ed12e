#!/usr/bin/env python3
"""Training speed: our step against the peers, on this machine (CPU), on two shapes.

    .venv/bin/pip install -r bench/requirements.txt           # transformers + torch==2.13.0 (CPU)
    .venv/bin/pip install --no-deps gpt-2-simple==0.8.1       # the classic TF1 graph (no deps!)
    .venv/bin/python bench/train.py                           # all, 3 timed steps each
    .venv/bin/python bench/train.py --only ours-fp32,hf-fp32 --steps 5
    .venv/bin/python bench/train.py --shape demo --only ours-fp32,ours-fp32-xla,classic-tf1,hf-fp32 --steps 20

Shapes: `124m` (default): GPT-2 124M, batch 1 x 1024 tokens, Adam (lr 2e-5), as the classic
fine-tuning. `demo`: the demo's preset (4 layers x 256, 4 heads, context 128), batch 8 x 128 tokens,
AdamW (weight decay 0.1 on matrices; Adam for the classic graph, which has no AdamW), where the
50257-way output layer is most of the work. Random weights, one process per setting, one at a time:
- ours-fp32, ours-bf16: gpt2easy's compiled step (step.TrainStep), as train.py runs it.
- classic-tf1: gpt-2-simple's model.py (nshepperd's/OpenAI's TF1 graph) under tf.compat.v1 with
  `tf.compat.v1.train.AdamOptimizer`, fed through a placeholder like the classic train.py.
- hf-fp32, hf-bf16: transformers GPT2LMHeadModel on PyTorch, torch.optim.Adam; bf16 = autocast.
Each runs one untimed warm-up step (compilation), then `--steps` timed steps; we report the
median seconds per step, tokens/s (the same tokens per step for every tool), peak RSS, the ratio to the
fastest peer, and achieved FLOP/s: 6 * params * tokens + 12 * n_layer * n_ctx^2 * n_embd (attention,
forward + backward, full square) per step, as a percentage of the matmul peak of the setting's
precision measured here (the best 2048^3 matmul of TensorFlow and PyTorch, fp32 or bf16). A
setting whose warm-up step exceeds `--timeout` seconds is reported as slower than that (PyTorch's
bf16 matmul on CPUs without AVX-512 BF16 runs at a few GFLOP/s). CPU seconds per step (all
threads) are printed too: on a machine shared with other jobs they compare tools more fairly than
wall-clock time.

Also: `--curve N` trains a small model (4 layers x 256, n_ctx 128) on Shakespeare for N steps in fp32 and in
bf16 with the same seed and batches, and prints both loss curves.
"""

import json
import os
import re
import resource
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "src"))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")  # as cli.quiet_tensorflow: the shipped setting

import numpy as np  # noqa: E402

from gpt2easy import cli  # noqa: E402

SETTINGS = ("ours-fp32", "ours-bf16", "classic-tf1", "hf-fp32", "hf-bf16")
PEERS = ("classic-tf1", "hf-fp32", "hf-bf16")
LR = 2e-5
SHAPES = {  # name: (hparams, batch size, window, optimizer)
    "124m": ({}, 1, 1024, "adam"),
    "demo": ({"n_ctx": 128, "n_embd": 256, "n_head": 4, "n_layer": 4}, 8, 128, "adamw"),
}
WEIGHT_DECAY = 0.1


def shape_of(name: str):
    """(HParams, batch, window, optimizer) of a shape name."""
    from gpt2easy.hparams import HParams

    fields, batch, window, optimizer = SHAPES[name]
    return HParams(**fields), batch, window, optimizer


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def tokens(batch: int = 1, window: int = 1024, seed=0):
    return np.random.default_rng(seed).integers(0, 50257, size=(batch, window + 1)).astype(np.int32)


def time_steps(step, n: int) -> dict:
    t = time.perf_counter()
    loss = step()
    warmup = time.perf_counter() - t
    times, cpu = [], []
    for _ in range(n):
        t, c = time.perf_counter(), time.process_time()
        loss = step()
        times.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    return {"warmup_s": warmup, "s_per_step": float(np.median(times)), "times": times,
            "cpu_s_per_step": float(np.median(cpu)), "loss": float(loss), "rss_mb": rss_mb()}


# --- workers (each in its own process) -----------------------------------------------------------


def worker_ours(precision: str, n: int, xla: bool = False, shape_name: str = "124m") -> dict:
    from gpt2easy.model import GPT2
    from gpt2easy.optim import Optimizer
    from gpt2easy.step import StepConfig, TrainStep

    hp, batch, window, optimizer = shape_of(shape_name)
    gpt = GPT2(hp, seed=0)
    decay = WEIGHT_DECAY if optimizer == "adamw" else 0.0
    step = TrainStep(gpt, Optimizer(optimizer, gpt.weights, weight_decay=decay),
                     StepConfig(batch_size=batch, window=window, precision=precision, jit=xla))
    rows = tokens(batch, window)[None]
    counter = iter(range(10**6))
    return time_steps(lambda: step(rows, LR, next(counter))[0], n)


def worker_classic(n: int, shape_name: str = "124m") -> dict:
    import importlib.util

    import tensorflow as tf

    # The classic TF1 graph (openai/nshepperd model.py as packaged by gpt-2-simple), loaded by path:
    # the package's __init__ pulls in its training code and dependencies we don't need.
    spec = importlib.util.find_spec("gpt_2_simple")
    if spec is None:
        raise SystemExit("gpt-2-simple is not installed: pip install --no-deps gpt-2-simple==0.8.1")
    path = os.path.join(os.path.dirname(spec.origin), "src", "model.py")
    spec = importlib.util.spec_from_file_location("classic_model", path)
    model = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(model)

    tf.compat.v1.disable_eager_execution()
    hp, batch, window, _ = shape_of(shape_name)
    hparams = model.HParams(n_vocab=hp.n_vocab, n_ctx=hp.n_ctx, n_embd=hp.n_embd, n_head=hp.n_head,
                            n_layer=hp.n_layer)
    context = tf.compat.v1.placeholder(tf.int32, [batch, None])
    logits = model.model(hparams=hparams, X=context)["logits"]
    loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels=context[:, 1:], logits=logits[:, :-1]))
    train_vars = [v for v in tf.compat.v1.trainable_variables() if "model" in v.name]
    opt = tf.compat.v1.train.AdamOptimizer(LR).minimize(loss, var_list=train_vars)
    config = tf.compat.v1.ConfigProto()  # as the classic script: layout optimizer off
    config.graph_options.rewrite_options.layout_optimizer = 2  # RewriterConfig.OFF
    sess = tf.compat.v1.Session(config=config)
    sess.run(tf.compat.v1.global_variables_initializer())
    feed = {context: tokens(batch, window)[:, :window]}
    return time_steps(lambda: sess.run((opt, loss), feed_dict=feed)[1], n)


def worker_hf(precision: str, n: int, shape_name: str = "124m") -> dict:
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    hp, batch, window, optimizer = shape_of(shape_name)
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(
        n_positions=hp.n_ctx, n_embd=hp.n_embd, n_head=hp.n_head, n_layer=hp.n_layer,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0))
    model.train()
    if optimizer == "adamw":  # decay on matrices only, as ours
        params = list(model.parameters())
        opt = torch.optim.AdamW([{"params": [p for p in params if p.dim() >= 2]},
                                 {"params": [p for p in params if p.dim() < 2],
                                  "weight_decay": 0.0}], lr=LR, weight_decay=WEIGHT_DECAY)
    else:
        opt = torch.optim.Adam(model.parameters(), lr=LR)
    x = torch.from_numpy(tokens(batch, window)[:, :window]).long()

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            loss = model(x, labels=x).loss
        loss.backward()
        opt.step()
        return loss.item()

    return time_steps(step, n)


def worker_peak(engine: str) -> dict:
    """Best of 7 2048^3 matmuls, fp32 and bf16, in GFLOP/s (the best of several: the machine's
    speed drifts by 2x within minutes on a shared host)."""
    n, out = 2048, {}
    if engine == "tf":
        import tensorflow as tf

        for name, dt in (("fp32", tf.float32), ("bf16", tf.bfloat16)):
            a, b = (tf.cast(tf.random.normal([n, n]), dt) for _ in range(2))
            f = tf.function(tf.matmul)
            f(a, b).numpy()
            best = min(_timed(lambda f=f, a=a, b=b: f(a, b).numpy()) for _ in range(7))
            out[name] = 2 * n**3 / best / 1e9
    else:
        import torch

        for name, dt in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
            size = n if dt == torch.float32 else 512  # bf16 is very slow without AVX-512 BF16
            a, b = torch.randn(size, size).to(dt), torch.randn(size, size).to(dt)
            a @ b
            best = min(_timed(lambda a=a, b=b: a @ b) for _ in range(7))
            out[name] = 2 * size**3 / best / 1e9
    return out


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def worker_curve(precision: str, n: int) -> dict:
    """Loss curve of a 4 x 256 model on Shakespeare (real vocabulary), fixed seed and batches."""
    from gpt2easy.dataset import load_dataset
    from gpt2easy.hparams import HParams
    from gpt2easy.model import GPT2
    from gpt2easy.optim import Optimizer
    from gpt2easy.step import StepConfig, TrainStep
    from gpt2easy.windows import Sampler

    shared = os.path.join(os.path.dirname(ROOT), "shared", "data")
    chunks = load_dataset(os.path.join(shared, "shakespeare", "sonnets.txt"),
                          os.path.join(shared, "gpt2-vocab"))
    hp = HParams(n_ctx=128, n_embd=256, n_head=4, n_layer=4)
    gpt = GPT2(hp, seed=0)
    step = TrainStep(gpt, Optimizer("adam", gpt.weights),
                     StepConfig(batch_size=4, window=128, precision=precision))
    sampler = Sampler(chunks, seed=0)
    losses = [step(sampler.sample_batch(4, 129)[None], 1e-3, i)[0] for i in range(n)]
    return {"losses": losses, "rss_mb": rss_mb()}


# --- the driver ----------------------------------------------------------------------------------


def run_worker(args: list[str], timeout: float) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", *args]
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"slower than {timeout:.0f} s (timed out)"}
    if r.returncode != 0:
        lines = [ln for ln in r.stderr.strip().splitlines() if ln.strip()]
        errors = [ln for ln in lines if re.match(r"[\w.]+(Error|Exception|Exit)\b", ln)]
        return {"error": (errors or lines or ["failed"])[0][:200]}
    return json.loads(r.stdout.strip().splitlines()[-1])


def flops_per_step(shape_name: str) -> float:
    """6 * params * tokens + attention (forward + backward over the full square) per step."""
    hp, batch, t, _ = shape_of(shape_name)
    return batch * (6 * hp.n_params() * t + 12 * hp.n_layer * t * t * hp.n_embd)


def bench(steps: int = 3, only: str = "", timeout: float = 900.0, curve: int = 0,
          shape: str = "124m") -> None:
    """Time every setting in its own process and print the table (see the module docstring).

    Args:
        steps: timed steps per setting (after one warm-up step).
        only: comma-separated subset of ours-fp32, ours-bf16, ours-fp32-xla, classic-tf1,
            hf-fp32, hf-bf16.
        timeout: seconds allowed per setting.
        curve: also compare fp32 and bf16 loss curves over this many steps (0 = skip).
        shape: 124m or demo (see the module docstring).
    """
    if shape not in SHAPES:
        raise SystemExit(f"--shape must be one of {', '.join(SHAPES)}, got {shape!r}")
    _, batch, window, optimizer = SHAPES[shape]
    per_step = batch * window
    chosen = [s for s in (str(only).split(",") if only else SETTINGS) if s]
    cpu = subprocess.run(["sh", "-c", "grep -m1 'model name' /proc/cpuinfo"], capture_output=True,
                         text=True).stdout.split(":")[-1].strip()
    print(f"machine: {cpu}, {os.cpu_count()} cores; shape {shape}, batch {batch} x {window} tokens, "
          f"{optimizer}")
    peaks = {e: run_worker(["peak", e], 300) for e in ("tf", "torch")}
    for e, p in peaks.items():
        if "error" not in p:
            print(f"matmul peak ({e}): fp32 {p['fp32']:.0f} GFLOP/s, bf16 {p['bf16']:.1f} GFLOP/s")
    # A setting's FLOP rate against the best matmul of its own precision (either engine).
    peak = {prec: max(p.get(prec, 0) for p in peaks.values()) for prec in ("fp32", "bf16")}
    flops = flops_per_step(shape)
    results = {}
    for name in chosen:
        results[name] = r = run_worker([name, str(steps), shape], timeout)
        if "error" in r:
            print(f"{name:14s} {r['error']}", flush=True)
        else:
            print(f"{name:14s} {r['s_per_step']:7.3f} s/step {per_step / r['s_per_step']:7.0f} tokens/s "
                  f"(warm-up {r['warmup_s']:.1f} s, steps {', '.join(f'{t:.2f}' for t in r['times'])}"
                  f", CPU {r['cpu_s_per_step']:.1f} s/step, loss {r['loss']:.3f}, "
                  f"peak RSS {r['rss_mb']:.0f} MB)",
                  flush=True)
    ok = {k: v for k, v in results.items() if "error" not in v}
    peers = {k: v for k, v in ok.items() if k in PEERS}
    best = min(peers, key=lambda k: ok[k]["s_per_step"]) if peers else None
    print(f"\n{'setting':14s} {'s/step':>7s} {'tokens/s':>9s} {'vs ' + (best or '-'):>18s} "
          f"{'CPU s/step':>11s} {'CPU ratio':>10s} {'GFLOP/s':>8s} {'% of peak':>10s} {'RSS MB':>7s}")
    for name in chosen:
        r = results[name]
        if "error" in r:
            print(f"{name:14s} {r['error']}")
            continue
        ratio = ok[best]["s_per_step"] / r["s_per_step"] if best else float("nan")
        gflops = flops / r["s_per_step"] / 1e9
        cpu_ratio = ok[best]["cpu_s_per_step"] / r["cpu_s_per_step"] if best else float("nan")
        top = peak["bf16" if "bf16" in name else "fp32"]
        of_peak = 100 * gflops / top if top else float("nan")
        print(f"{name:14s} {r['s_per_step']:7.3f} {per_step / r['s_per_step']:9.0f} {ratio:17.2f}x "
              f"{r['cpu_s_per_step']:11.2f} {cpu_ratio:9.2f}x {gflops:8.0f} {of_peak:9.0f}% "
              f"{r['rss_mb']:7.0f}")
    print(f"(FLOP per step: {flops / 1e9:.0f} G = 6 x params x tokens + attention)")
    if curve:
        c = {p: run_worker(["curve", p, str(curve)], 3600) for p in ("fp32", "bf16")}
        if any("error" in v for v in c.values()):
            print("loss curves:", {k: v.get("error") for k, v in c.items()})
            return
        print(f"\nloss curves, 4 x 256 model on sonnets.txt, batch 4 x 128, Adam 1e-3, {curve} steps:")
        print(f"{'step':>5s} {'fp32':>8s} {'bf16':>8s} {'diff':>8s}")
        for i in sorted({*range(0, curve, max(1, curve // 10)), curve - 1}):
            a, b = c["fp32"]["losses"][i], c["bf16"]["losses"][i]
            print(f"{i + 1:5d} {a:8.4f} {b:8.4f} {b - a:+8.4f}")


def worker_main(args: list[str]) -> None:
    kind = args[0]
    if kind == "peak":
        out = worker_peak(args[1])
    elif kind == "curve":
        out = worker_curve(args[1], int(args[2]))
    elif kind.startswith("ours-"):
        out = worker_ours(kind.split("-")[1], int(args[1]), xla=kind.endswith("-xla"),
                          shape_name=args[2])
    elif kind == "classic-tf1":
        out = worker_classic(int(args[1]), args[2])
    elif kind.startswith("hf-"):
        out = worker_hf(kind[3:], int(args[1]), args[2])
    else:
        raise SystemExit(f"unknown setting {kind}")
    print(json.dumps(out))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        worker_main(sys.argv[2:])
    else:
        cli.run(bench)
