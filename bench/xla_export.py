#!/usr/bin/env python3
"""Export gpt2easy's compiled programs as XLA HLO, for `bench/gpu.py` to time where TensorFlow is not.

    .venv/bin/python bench/xla_export.py OUT            # 124M: training step, generation, fp32 + bf16
    .venv/bin/python bench/xla_export.py OUT --shape tiny   # a 2-layer model, for the CPU check

Why: the GPU machine lent to this project has no package index and takes 64 MiB per call, while
TensorFlow for CUDA is 573 MB plus about 2.5 GB of CUDA 12 wheels; it has JAX, whose XLA runs HLO.
(Later TensorFlow was carried there in parts: `bench/gpu_tf.py` and `bench/gpu_tf_machine.sh`.)
So this script builds our real compiled functions with `--xla` (`step.TrainStep` with `jit=True`,
`generate.Generator`'s prompt pass and decode step), asks TensorFlow for their HLO
(`experimental_get_compiler_ir`), and writes per program `NAME.hlo.pb.gz` (a gzipped `HloModuleProto`) and a
`manifest.json` entry: the arguments (shape, dtype, and how `gpu.py` fills each: given, zeros, ones
or seeded normal values) and which outputs are variable updates (TensorFlow passes a variable in
as a parameter and returns its new value). No weights travel: both sides fill them the same way.

`--check` (what CI-free honesty needs): TensorFlow runs the same programs here on those filled
values and writes what they return (training losses over three steps, the generated tokens) into
the manifest; `gpu.py --check` runs the HLO with JAX and must agree before anything is timed.
"""

import argparse
import dataclasses
import gzip
import json
import os
import re
import sys
import zlib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "src"))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

SHAPES = {"124m": {}, "tiny": {"n_ctx": 128, "n_embd": 64, "n_head": 2, "n_layer": 2}}
TRAIN = ((1, 1024), (8, 1024))  # (batch, window) on 124M; tiny uses windows of 64
GEN = {"batches": (1, 8), "prompt": 16, "new": 256, "top_k": 40}  # as bench/generate.py
LR = 2e-5


def fill_of(name: str) -> str:
    """How a variable is filled on both sides, from its name: gains ones, biases and state
    (Adam slots, the key/value cache) zeros, everything else seeded normal values (std 0.02)."""
    if name.endswith("/g"):
        return "ones"
    if name.endswith(("/b", "/m", "/v")) or name.startswith("cache"):
        return "zeros"
    return "normal"


def filled(spec: dict) -> np.ndarray:
    """The values of a filled argument (`gpu.py` imports it: it needs no TensorFlow)."""
    import ml_dtypes

    dtype = ml_dtypes.bfloat16 if spec["dtype"] == "bfloat16" else np.dtype(spec["dtype"])
    if spec["fill"] == "ones":
        return np.ones(spec["shape"], dtype)
    if spec["fill"] == "zeros":
        return np.zeros(spec["shape"], dtype)
    rng = np.random.default_rng(zlib.crc32(spec["name"].encode()))  # same values in every program
    return (0.02 * rng.standard_normal(spec["shape"], np.float32)).astype(dtype)


def export(fn_, args, names: dict, out: str, key: str) -> dict:
    """Write `fn`'s HLO for `args` (a structure of tensors) to OUT/KEY.hlo.pb; return its manifest
    entry. `names` (see `naming`) covers every variable the program may capture."""
    import tensorflow as tf

    flat = tf.nest.flatten(args)
    specs = [tf.TensorSpec(t.shape, t.dtype) for t in flat]
    # Flat arguments: TensorFlow takes specs only at the top level (the generator's are tuples).
    fn = tf.function(lambda *a: fn_(*tf.nest.pack_sequence_as(args, a)), jit_compile=True,
                     autograph=False)
    cf = fn.get_concrete_function(*specs)
    captures = [names[id(c)] for c in cf.captured_inputs]  # (name, variable, written)
    # gzip: the module holds constants (masks, position ranges) that compress ~30x, and the GPU
    # machine takes 64 MiB per call.
    with gzip.open(os.path.join(out, f"{key}.hlo.pb.gz"), "wb") as f:
        f.write(fn.experimental_get_compiler_ir(*specs)(stage="hlo_serialized"))
    hlo = fn.experimental_get_compiler_ir(*specs)(stage="hlo")
    entry = hlo[hlo.index("\nENTRY"):]
    root = next(line for line in entry.splitlines() if "ROOT" in line)
    n_out = len(tf.nest.flatten(cf.structured_outputs))
    n_root = len(re.findall(r"\b(?:f32|bf16|s32|s64|pred|s8)\[", root.split("=", 1)[1].split(")")[0]))
    params = [{"shape": [int(d) for d in t.shape], "dtype": t.dtype.name, "fill": "given"}
              for t in flat]
    for name, var, _ in captures:
        params.append({"name": name, "shape": [int(d) for d in var.shape],
                       "dtype": var.dtype.name, "fill": fill_of(name)})
    if len(re.findall(r" parameter\(\d+\)", entry)) != len(params):
        raise SystemExit(f"{key}: the HLO's parameters are not the arguments then the captures")
    written = [len(flat) + i for i, (_, _, w) in enumerate(captures) if w]
    if n_root != n_out + len(written):
        raise SystemExit(f"{key}: {n_root} results, expected {n_out} + {len(written)} updates")
    return {"params": params, "n_out": n_out, "updates": written}


def assign_fills(entry: dict, variables: dict) -> None:
    """Give the TensorFlow variables the values `gpu.py` will fill them with."""
    for p in entry["params"]:
        if p["fill"] != "given":
            variables[p["name"]].assign(filled(p))


def train_programs(hp, out: str, check: bool, precisions) -> dict:
    import tensorflow as tf

    from gpt2easy.model import GPT2
    from gpt2easy.optim import Optimizer
    from gpt2easy.step import StepConfig, TrainStep

    entries = {}
    for precision in precisions:
        for batch, window in TRAIN if hp.n_layer == 12 else ((2, 64),):
            gpt = GPT2(hp, seed=0)
            opt = Optimizer("adam", gpt.weights)
            step = TrainStep(gpt, opt, StepConfig(batch_size=batch, window=window,
                                                  precision=precision, jit=True))
            variables = {**gpt.weights, **opt.slots}
            names = naming(variables, written=set(variables))
            rows = np.random.default_rng(0).integers(0, hp.n_vocab, (1, batch, window + 1))
            args = (tf.constant(rows, tf.int32), tf.constant(LR, tf.float32),
                    tf.constant(0, tf.int64), tf.constant(0.0))
            key = f"train-{precision}-b{batch}"
            entry = export(step.dist.fn, args, names, out, key)
            entry.update(kind="train", batch=batch, window=window, precision=precision, lr=LR)
            if check:
                assign_fills(entry, variables)
                entry["losses"] = [step(rows, 1e-3, i)[0] for i in range(3)]  # lr 1e-3 moves it
                np.save(os.path.join(out, f"{key}.tokens.npy"), rows.astype(np.int32))
            entries[key] = entry
    return entries


def naming(variables: dict, written: set) -> dict:
    """id(variable handle) -> (name, variable, whether the program updates it)."""
    return {id(var.handle): (name, var, name in written) for name, var in variables.items()}


def gen_programs(hp, out: str, check: bool, precisions) -> dict:
    import tensorflow as tf

    from gpt2easy.generate import Controls, Generator
    from gpt2easy.model import GPT2

    entries = {}
    n, new = GEN["prompt"], GEN["new"] if hp.n_layer == 12 else 32
    for precision in precisions:
        for batch in GEN["batches"]:
            gen = Generator(GPT2(hp, seed=0), precision)
            prompts = np.random.default_rng(1).integers(0, hp.n_vocab, (batch, n))
            controls = Controls.make(seed=(7, 0), temperature=1.0, top_k=GEN["top_k"])
            compiled, state = gen.start(prompts, new, controls)  # makes and traces both
            variables = {**{f"w:{k}": v for k, v in gen.w.items()},
                         **{f"wide:{k}": v for k, v in gen.w_wide.items()}}
            for i, (k, v) in enumerate(compiled.cache):
                variables[f"cache/{i}/k"], variables[f"cache/{i}/v"] = k, v
            names = naming(variables, written={k for k in variables if k.startswith("cache")})
            key = f"gen-{precision}-b{batch}"
            pre = gen.prompt_inputs(prompts, new, controls)[1]
            entry = {"kind": "gen", "batch": batch, "prompt": n, "new": new,
                     "precision": precision,
                     "prefill": export(compiled.prefill, pre, names, out, f"{key}.prefill"),
                     "step": export(compiled.step, (state, controls), names, out, f"{key}.step")}
            np.savez(os.path.join(out, f"{key}.args.npz"),
                     *[t.numpy() for t in tf.nest.flatten(pre)])
            if check:
                assign_fills(entry["prefill"], variables)
                assign_fills(entry["step"], variables)
                entry["tokens"] = np.stack([t for t, _ in gen.generate(prompts, new, controls)],
                                           axis=1).tolist()
            entries[key] = entry
    return entries


def main(argv=None) -> None:
    from gpt2easy.hparams import HParams

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out")
    ap.add_argument("--shape", choices=sorted(SHAPES), default="124m")
    ap.add_argument("--check", action="store_true", help="record TensorFlow's results too")
    ap.add_argument("--precisions", default="fp32,bf16")
    args = ap.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    hp = HParams(**SHAPES[args.shape])
    precisions = args.precisions.split(",")
    manifest = {"shape": args.shape, "hparams": dataclasses.asdict(hp),
                **train_programs(hp, args.out, args.check, precisions),
                **gen_programs(hp, args.out, args.check, precisions)}
    with open(os.path.join(args.out, "manifest.json"), "w") as f:
        json.dump(manifest, f, default=float)
    print(f"wrote {len(manifest) - 2} programs to {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
