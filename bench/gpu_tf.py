#!/usr/bin/env python3
"""GPU figures with TensorFlow itself: gpt2easy's training step and generation against transformers.

    python3 bench/gpu_tf.py --json gpu.json       # a machine with a GPU, TensorFlow for CUDA,
                                                  # transformers and torch with CUDA
    python3 bench/gpu_tf.py --only ours-train --steps 3   # one group
    GPU_TF_MATCH="bf16-xla train-b8" python3 bench/gpu_tf.py --only ours-train   # one setting
    bash bench/gpu_tf_machine.sh --json gpu.jsonl   # the lent machine without a package index

Unlike `bench/gpu.py` (our XLA programs run by JAX), this runs gpt2easy's own code under
TensorFlow's runtime, as `train.py` and the sampling scripts run it. 124M shape, random weights:
- ours train-bB: `step.TrainStep` (`--precision fp32|bf16`, with and without `--xla`), batch B x
  1024 tokens, Adam lr 2e-5; median of `--steps` steps after one warm-up step (the compilation).
  Each step reads its loss back, as train.py does.
- ours gen-bB: `generate.Generator` (fp32 and bf16): 16-token prompt, 256 new tokens, top_k 40,
  each token read back to the host as the scripts do; median of 3 runs after a warm-up run; the
  first token's time is the best of 3 one-token runs.
- transformers peers (`bench/gpu.py`'s): `GPT2LMHeadModel` with `torch.optim.Adam` in fp32, TF32
  and bf16 autocast; `model.generate` with fp32 and bf16 weights, same lengths and top_k.
Each group runs in its own process (TensorFlow and torch never share one, nor the GPU's memory);
ratios are against the fastest transformers setting of the same row kind in the same run.
"""

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "src"))
sys.path.insert(0, HERE)
GROUPS = ("ours-train", "hf-train", "ours-gen", "hf-gen")
BATCHES = (1, 8)
PROMPT, NEW, TOP_K = 16, 256, 40


def emit(out: str, name: str, result: dict) -> None:
    """Append one result as a JSON line (a group cut short keeps what it measured)."""
    shown = {k: round(v, 4) if isinstance(v, float) else v for k, v in result.items()}
    print(f"{name}: {json.dumps(shown)}", file=sys.stderr, flush=True)
    with open(out, "a") as f:
        f.write(json.dumps({"name": name, **result}) + "\n")


def ours_setup() -> None:
    """TensorFlow takes the GPU's memory as it goes (torch runs later in another process)."""
    os.environ.setdefault("TF_FORCE_GPU_ALLOW_GROWTH", "true")
    from gpt2easy import cli, machine

    cli.quiet_tensorflow()
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    chosen = machine.resolve_precision("auto", log=False)
    print(f"TensorFlow {tf.__version__} (CUDA build: {tf.test.is_built_with_cuda()}), GPUs: "
          f"{[g.name for g in gpus]}; --precision auto picks {chosen}; --xla auto picks "
          f"{machine.resolve_xla('auto', chosen, 124_439_808, log=False)}", file=sys.stderr, flush=True)
    if not gpus:
        raise SystemExit("TensorFlow sees no GPU")


def ours_train(out: str, steps: int) -> None:
    ours_setup()
    from gpt2easy.hparams import HParams
    from gpt2easy.model import GPT2
    from gpt2easy.optim import Optimizer
    from gpt2easy.step import StepConfig, TrainStep

    for batch in BATCHES:
        rows = np.random.default_rng(0).integers(0, 50257, (1, batch, 1025)).astype(np.int32)
        for precision in ("fp32", "bf16"):
            for xla in (False, True):
                name = f"ours-{precision}{'-xla' * xla} train-b{batch}"
                if os.environ.get("GPU_TF_MATCH", "") not in name:
                    continue
                gpt = GPT2(HParams(), seed=0)
                step = TrainStep(gpt, Optimizer("adam", gpt.weights),
                                 StepConfig(batch_size=batch, window=1024, precision=precision,
                                            jit=xla))
                t = time.perf_counter()
                first = float(step(rows, 2e-5, 0)[0])
                warm = time.perf_counter() - t
                times, loss = [], first
                for i in range(steps):
                    t = time.perf_counter()
                    loss = float(step(rows, 2e-5, i + 1)[0])
                    times.append(time.perf_counter() - t)
                s = float(np.median(times))
                emit(out, name,
                     {"s_per_step": s, "tokens_per_s": batch * 1024 / s, "compile_s": warm,
                      "first_loss": first, "loss": loss})
                del step, gpt


def ours_gen(out: str) -> None:
    ours_setup()
    from gpt2easy.generate import Controls, Generator
    from gpt2easy.hparams import HParams
    from gpt2easy.model import GPT2

    gpt = GPT2(HParams(), seed=0)
    controls = Controls.make(seed=(1, 0), top_k=TOP_K)
    prompt = (np.arange(PROMPT)[None] * 37 + 11) % 50257
    for precision in ("fp32", "bf16"):
        generator = Generator(gpt, precision)
        for batch in BATCHES:
            prompts = np.repeat(prompt, batch, axis=0)

            def go(n, generator=generator, prompts=prompts):
                t = time.perf_counter()
                tokens = [tok for tok, _ in generator.generate(prompts, n, controls)]
                return time.perf_counter() - t, tokens

            warm, _ = go(NEW)
            first = min(go(1)[0] for _ in range(3))
            total = sorted(go(NEW)[0] for _ in range(3))[1]
            emit(out, f"ours-{precision} gen-b{batch}",
                 {"tokens_per_s": batch * NEW / total, "first_token_s": first, "compile_s": warm})


def hf_train(out: str, steps: int) -> None:
    import gpu

    for batch in BATCHES:
        for p in ("fp32", "tf32", "bf16"):
            emit(out, f"hf-{p} train-b{batch}", gpu.hf_train(p, batch, 1024, steps))


def hf_gen(out: str) -> None:
    import gpu

    for precision in ("fp32", "bf16"):
        for batch in BATCHES:
            emit(out, f"hf-{precision} gen-b{batch}", gpu.hf_gen(precision, batch, PROMPT, NEW))


def table(results: list[dict]) -> None:
    """One row per setting: tokens/s and the ratio to the best transformers row of its kind."""
    def kind(name):
        return name.split()[-1]

    best = {}
    for r in results:
        if r["name"].startswith("hf-"):
            best[kind(r["name"])] = max(best.get(kind(r["name"]), 0), r["tokens_per_s"])
    print("| setting | tokens/s | vs best transformers | warm-up (s) | notes |")
    print("| --- | ---: | ---: | ---: | --- |")
    for r in results:
        ratio = r["tokens_per_s"] / best[kind(r["name"])] if kind(r["name"]) in best else float("nan")
        note = (f"loss {r['first_loss']:.3f} -> {r['loss']:.3f}" if "first_loss" in r else
                f"first token {r['first_token_s'] * 1000:.0f} ms" if "first_token_s" in r else "")
        print(f"| {r['name']} | {r['tokens_per_s']:,.0f} | {ratio:.2f}x | "
              f"{r.get('compile_s', float('nan')):.1f} | {note} |")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=10, help="timed training steps per setting")
    ap.add_argument("--only", default=",".join(GROUPS), help=f"groups: {', '.join(GROUPS)}")
    ap.add_argument("--timeout", type=float, default=900, help="seconds per group")
    ap.add_argument("--json", default="gpu_tf.jsonl", help="results, one JSON line each")
    ap.add_argument("--worker", default="", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        {"ours-train": lambda: ours_train(args.json, args.steps),
         "hf-train": lambda: hf_train(args.json, args.steps),
         "ours-gen": lambda: ours_gen(args.json), "hf-gen": lambda: hf_gen(args.json)}[args.worker]()
        return
    open(args.json, "w").close()
    for group in args.only.split(","):
        cmd = [sys.executable, os.path.abspath(__file__), "--worker", group, "--steps",
               str(args.steps), "--json", args.json]
        t = time.perf_counter()
        try:
            rc = subprocess.run(cmd, timeout=args.timeout).returncode
        except subprocess.TimeoutExpired:
            rc = "timeout"
        print(f"group {group}: exit {rc}, {time.perf_counter() - t:.0f} s", file=sys.stderr,
              flush=True)
    with open(args.json) as f:
        table([json.loads(line) for line in f if line.strip()])


if __name__ == "__main__":
    main()
