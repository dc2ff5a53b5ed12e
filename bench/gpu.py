#!/usr/bin/env python3
"""GPU figures: gpt2easy's XLA programs (run by JAX) against transformers on PyTorch, same GPU.

    .venv/bin/python bench/xla_export.py .gpu/xla                        # here: programs as HLO
    python3 bench/gpu.py .gpu/xla                             # there: JAX + torch, no TensorFlow
    .venv/bin/python bench/xla_export.py .gpu/tiny --shape tiny --check  # here: a 2-layer model
    python3 bench/gpu.py .gpu/tiny --check --peers none       # (Python 3.12 with jax==0.11.2): JAX
                                                              # on the CPU agrees with TensorFlow

What runs: the HLO that TensorFlow compiles for `train.py --xla` (one whole training step: forward,
loss, gradients, Adam, the weight update) and for generation (the prompt pass and the decode step
with the key/value cache and top-k drawing), exported by `xla_export.py`, compiled by the XLA in
JAX and fed the same filled values. This measures our programs under another build of the same
compiler, not the TensorFlow runtime: the figures stand for `--xla` on a GPU, not for the
plain-graph path. (Written when TensorFlow could not be installed on the lent GPU machine; since
then `bench/gpu_tf.py` runs gpt2easy itself on TensorFlow there, see `bench/gpu_tf_machine.sh`.)
Between calls TensorFlow aliases a variable's new value onto the old one; here no buffer is
donated, so every update comes back in a new buffer (a copy of the weights or of the cache per
call, which the times include).

Peers: transformers `GPT2LMHeadModel` with `torch.optim.Adam` (fp32 without TF32, fp32 with TF32
as XLA and TensorFlow use it by default, bf16 autocast), and `model.generate` with top_k 40 for the
same numbers of tokens (fp32 and bf16 weights). `--check` first compares JAX's results with the
TensorFlow results that `xla_export.py --check` recorded. Prints one table; ratios are against the
fastest transformers setting of the same row kind, from the same run.
"""

import argparse
import gzip
import json
import os
import re
import sys
import time

import numpy as np

# TensorFlow's XLA keeps a float32 -> bf16 -> float32 round trip (our bf16 rounding of logits and
# activations); this XLA would drop it by default, and top-k over rounded logits then picks other
# tokens. Keep it, so the programs compute what they compute under TensorFlow.
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_allow_excess_precision=false")
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # leave the GPU's memory to torch too
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from xla_export import filled  # noqa: E402  (no TensorFlow: the same fill as the export)


def compiled(path: str):
    """Compile one exported HLO module with JAX's XLA for its default device.

    The module comes through StableHLO, where TensorFlow's output copies (`copy` of each updated
    variable) stay `mhlo.copy`, which XLA's GPU path refuses (CPU takes it); a copy with the same
    type is an identity, so it becomes a reshape to the same shape."""
    import jax._src.xla_bridge as xb
    from jax._src import compiler
    from jax._src.interpreters import mlir
    from jax._src.lib import _jax
    from jax._src.lib.mlir import ir

    with gzip.open(path, "rb") as f:
        module = _jax.mlir.hlo_to_stablehlo(f.read())
    with mlir.make_ir_context():
        text = ir.Module.parse(module).operation.get_asm()
    text = re.sub(r"(%\S+) = mhlo\.copy (%\S+) : (tensor<[^>]*>)",
                  r"\1 = stablehlo.reshape \2 : (\3) -> \3", text)
    if "mhlo.copy" in text:
        raise RuntimeError(f"{path}: a copy left that is not an identity")
    backend = xb.get_backend()
    return backend.compile_and_load(text, backend.devices()[:1],
                                    compiler.get_compile_options(num_replicas=1, num_partitions=1))


class Program:
    """An exported program over a shared name -> device array store of its variables."""

    def __init__(self, folder: str, key: str, entry: dict, store: dict):
        t = time.perf_counter()
        self.exe = compiled(os.path.join(folder, f"{key}.hlo.pb.gz"))
        self.compile_s = time.perf_counter() - t
        self.entry, self.store = entry, store
        for p in entry["params"]:
            if p["fill"] != "given" and p["name"] not in store:
                store[p["name"]] = put(filled(p))

    def __call__(self, *given):
        """Run with the given arguments; store the variable updates; return the outputs."""
        params = [*given, *(self.store[p["name"]] for p in self.entry["params"][len(given):])]
        out = self.exe.execute(params)
        for j, i in enumerate(self.entry["updates"]):
            self.store[self.entry["params"][i]["name"]] = out[self.entry["n_out"] + j]
        return out[: self.entry["n_out"]]


def put(a: np.ndarray):
    import jax

    return jax.device_put(a, jax.devices()[0])


def sync(x):
    for t in x if isinstance(x, list | tuple) else [x]:
        t.block_until_ready()


def run_train(folder, key, entry, steps: int, check: bool) -> dict:
    store = {}
    prog = Program(folder, key, entry, store)
    b, w = entry["batch"], entry["window"]
    rows = (np.load(os.path.join(folder, f"{key}.tokens.npy")) if check else
            np.random.default_rng(0).integers(0, 50257, (1, b, w + 1)).astype(np.int32))
    tokens, stop = put(rows), put(np.float32(0.0))
    agree = {}
    if "losses" in entry:  # TensorFlow's losses on CPU for these tokens, lr 1e-3, three steps
        losses = [float(prog(tokens, put(np.float32(1e-3)), put(np.int64(i)), stop)[0])
                  for i in range(3)]
        diff = float(np.max(np.abs(np.subtract(losses, entry["losses"]))))
        ok = diff <= (2e-3 if entry["precision"] == "bf16" else 1e-4)
        print(f"{key}: JAX losses {np.round(losses, 5).tolist()} TensorFlow "
              f"{np.round(entry['losses'], 5).tolist()}: {'agree' if ok else 'DIFFER'}",
              file=sys.stderr)
        if check and not ok:
            raise SystemExit(1)
        agree = {"max_loss_diff": diff}
    lr = put(np.float32(entry["lr"]))
    t0 = time.perf_counter()
    sync(prog(tokens, lr, put(np.int64(0)), stop))
    warm = time.perf_counter() - t0
    times, loss = [], None
    for i in range(steps):
        t = time.perf_counter()
        out = prog(tokens, lr, put(np.int64(i + 1)), stop)
        sync(out)
        times.append(time.perf_counter() - t)
        loss = float(out[0])
    s = float(np.median(times))
    return {"s_per_step": s, "tokens_per_s": b * w / s, "compile_s": prog.compile_s + warm,
            "loss": loss, **agree}


def run_gen(folder, key, entry, check: bool) -> dict:
    store = {}
    prefill = Program(folder, f"{key}.prefill", entry["prefill"], store)
    step = Program(folder, f"{key}.step", entry["step"], store)
    npz = np.load(os.path.join(folder, f"{key}.args.npz"))
    given = [put(npz[f"arr_{i}"]) for i in range(len(npz.files))]
    controls = given[-6:]  # Controls: seed, temperature, top_k, top_p, penalty, eos

    def generate():
        state = prefill(*given)
        sync(state[0])
        first = time.perf_counter()
        tokens = [state[0]]
        for _ in range(entry["new"] - 1):
            state = step(*state, *controls)
            tokens.append(state[0])
        sync(tokens[-1])
        return np.stack([np.asarray(t) for t in tokens], axis=1), first

    t = time.perf_counter()
    tokens, _ = generate()  # compiles nothing more; the first run warms up
    warm = time.perf_counter() - t
    agree = {}
    if "tokens" in entry:  # what TensorFlow drew on CPU from the same values
        same = float(np.mean(tokens == np.asarray(entry["tokens"])))
        first = int(np.argmin(np.all(tokens == np.asarray(entry["tokens"]), axis=0).tolist()
                              + [False]))
        print(f"{key}: {same:.1%} of JAX's tokens equal TensorFlow's (all rows equal up to "
              f"token {first})", file=sys.stderr)
        if check and same < 1.0:
            raise SystemExit(1)
        agree = {"tokens_equal": same, "equal_prefix": first}
    runs = []
    for _ in range(3):
        t = time.perf_counter()
        _, first = generate()
        runs.append((time.perf_counter() - t, first - t))
    total, first = sorted(runs)[1]
    return {"tokens_per_s": entry["batch"] * entry["new"] / total, "first_token_s": first,
            "compile_s": prefill.compile_s + step.compile_s + warm, **agree}


def cuda() -> str:
    """The torch device: the GPU, or the CPU where there is none (to try this script anywhere)."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def torch_sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def hf_model(precision: str):
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0))
    return model.to(cuda(), torch.bfloat16 if precision == "bf16-weights" else torch.float32)


def hf_train(precision: str, batch: int, window: int, steps: int) -> dict:
    import torch

    torch.set_float32_matmul_precision("high" if precision == "tf32" else "highest")
    model = hf_model("fp32").train()
    opt = torch.optim.Adam(model.parameters(), lr=2e-5)
    x = torch.randint(0, 50257, (batch, window), device=cuda())

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast(cuda(), dtype=torch.bfloat16, enabled=precision == "bf16"):
            loss = model(x, labels=x).loss
        loss.backward()
        opt.step()
        return loss

    step()
    torch_sync()
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        loss = float(step())
        times.append(time.perf_counter() - t)
    s = float(np.median(times))
    torch.set_float32_matmul_precision("highest")
    return {"s_per_step": s, "tokens_per_s": batch * window / s, "loss": loss}


def hf_gen(precision: str, batch: int, prompt: int, new: int) -> dict:
    import torch

    model = hf_model("bf16-weights" if precision == "bf16" else "fp32").eval()
    x = torch.randint(0, 50257, (batch, prompt), device=cuda())
    kw = dict(do_sample=True, top_k=40, max_new_tokens=new, min_new_tokens=new,
              pad_token_id=50256, attention_mask=torch.ones_like(x))
    with torch.no_grad():
        model.generate(x, **kw)
        runs = []
        for _ in range(3):
            torch_sync()
            t = time.perf_counter()
            out = model.generate(x, **kw)
            torch_sync()
            runs.append(time.perf_counter() - t)
    assert out.shape[1] == prompt + new
    return {"tokens_per_s": batch * new / sorted(runs)[1]}


def machine() -> str:
    try:
        import torch

        return f"{torch.cuda.get_device_name(0)} (torch {torch.__version__})"
    except Exception:  # noqa: BLE001 - only a label
        import jax

        return str(jax.devices()[0])


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", help="what bench/xla_export.py wrote")
    ap.add_argument("--check", action="store_true",
                    help="stop unless JAX's results equal TensorFlow's (on CPU; a GPU rounds "
                         "otherwise, and without --check the comparison is only printed)")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--peers", default="hf", choices=("hf", "none"))
    ap.add_argument("--only", default="", help="comma-separated program keys")
    ap.add_argument("--json", default="", help="also write every result to this file")
    args = ap.parse_args(argv)
    with open(os.path.join(args.folder, "manifest.json")) as f:
        manifest = json.load(f)
    keys = [k for k in manifest if isinstance(manifest[k], dict) and "kind" in manifest[k]
            and (not args.only or k in args.only.split(","))]
    import jax

    jax.config.update("jax_enable_x64", True)  # int64 arguments stay int64 (TensorFlow's seeds)
    print(f"device: {machine()}; JAX {jax.__version__} on {jax.devices()[0].platform}",
          file=sys.stderr)
    results = {}

    def record(name, result):
        results[name] = result
        print(f"{name}: {json.dumps({k: round(v, 4) for k, v in result.items()})}",
              file=sys.stderr, flush=True)
        if args.json:
            with open(args.json, "w") as f:
                json.dump(results, f, indent=1)

    for key in keys:  # each program, then its peers: a run cut short still has pairs
        e = manifest[key]
        runs = [(f"ours-xla {key}", lambda e=e, key=key: (
            run_train(args.folder, key, e, args.steps, args.check) if e["kind"] == "train"
            else run_gen(args.folder, key, e, args.check)))]
        if args.peers == "hf" and e["kind"] == "train" and e["precision"] == "fp32":
            runs += [(f"hf-{p} train-b{e['batch']}", lambda e=e, p=p: hf_train(
                p, e["batch"], e["window"], args.steps)) for p in ("fp32", "tf32", "bf16")]
        elif args.peers == "hf" and e["kind"] == "gen":
            runs.append((f"hf-{e['precision']} gen-b{e['batch']}", lambda e=e: hf_gen(
                e["precision"], e["batch"], e["prompt"], e["new"])))
        for name, run in runs:
            try:
                record(name, run())
            except Exception as error:  # noqa: BLE001 - one failed setting must not cost the rest
                if args.check:
                    raise
                print(f"{name}: failed: {type(error).__name__}: {error}", file=sys.stderr)
    table(results)


def table(results: dict) -> None:
    """One row per result: tokens/s and the ratio to the best transformers row of its kind."""
    def kind(name):
        return name.split()[-1].split("-")[0] + "-" + name.split("-b")[-1]

    best = {}
    for name, r in results.items():
        if name.startswith("hf-"):
            best[kind(name)] = max(best.get(kind(name), 0), r["tokens_per_s"])
    print("| setting | tokens/s | vs best transformers | first compile + run (s) | "
          "against TensorFlow on CPU |")
    print("| --- | ---: | ---: | ---: | --- |")
    for name, r in results.items():
        ratio = r["tokens_per_s"] / best[kind(name)] if kind(name) in best else float("nan")
        agree = (f"loss within {r['max_loss_diff']:.1e}" if "max_loss_diff" in r else
                 f"{r['tokens_equal']:.0%} tokens equal" if "tokens_equal" in r else "")
        print(f"| {name} | {r['tokens_per_s']:.0f} | {ratio:.2f}x | "
              f"{r.get('compile_s', float('nan')):.1f} | {agree} |")


if __name__ == "__main__":
    main()
