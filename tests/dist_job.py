"""A tiny training job under a `tf.distribute` strategy, run by tests/test_distribute.py in its
own process (logical CPU devices and MultiWorkerMirroredStrategy must be set up before TensorFlow
starts, so they cannot share the pytest process).

It trains a tiny GPT-2 on random tokens with `gpt2easy.distribute.TrainStep`, the global batch
drawn from one seeded sampler, and writes its loss sequence and final weights to --out (.npz).
Only the chief saves a checkpoint into --run_dir. SIGINT/SIGTERM stop the job after the current
step on every worker (the flag rides on the all-reduce); a peer that dies ends it with one line.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--strategy", default="default")
    p.add_argument("--logical_cpus", type=int, default=1)
    p.add_argument("--replicas", type=int, default=1, help="batch_size is per replica; the "
                   "sampler draws replicas * batch_size rows (the reference run passes 1)")
    p.add_argument("--batch_size", type=int, default=2)
    p.add_argument("--accumulate", type=int, default=1)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--precision", default="fp32")
    p.add_argument("--optimizer", default="adam")
    p.add_argument("--seed", type=int, default=3)
    p.add_argument("--step_sleep", type=float, default=0.0)
    p.add_argument("--eval", type=int, default=1, help="0: skip the validation loss")
    p.add_argument("--run_dir", default="")
    p.add_argument("--progress", default="", help="file rewritten with the step after each step")
    p.add_argument("--out", required=True)
    args = p.parse_args()

    import tensorflow as tf

    if args.logical_cpus > 1:  # before anything initialises the devices
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * args.logical_cpus)

    import numpy as np

    from gpt2easy import distribute
    from gpt2easy.checkpoint import write_checkpoint
    from gpt2easy.errors import UserError
    from gpt2easy.hparams import HParams
    from gpt2easy.model import GPT2, loss_fn, model

    strategy = distribute.make_strategy(args.strategy)
    replicas = distribute.num_replicas(strategy)
    assert replicas == args.replicas, (replicas, args.replicas)
    chief = distribute.is_chief(strategy)
    hp = HParams(n_vocab=300, n_ctx=32, n_embd=32, n_head=2, n_layer=2)
    window, dtype = 16, {"fp32": tf.float32, "bf16": tf.bfloat16}[args.precision]

    with strategy.scope():
        gpt = GPT2(hp, seed=args.seed)
        slots = {f"optimizer/{n}/{s}": tf.Variable(tf.zeros_like(v), trainable=False)
                 for n, v in gpt.weights.items() for s in ("m", "v")}
    names = list(gpt.weights)

    def grads_fn(tokens, step):  # [accumulate, B, window + 1], per replica
        total_loss, total = tf.constant(0.0), [tf.zeros_like(gpt.weights[n]) for n in names]
        for i in range(args.accumulate):
            rows = tokens[i]
            with tf.GradientTape() as tape:
                logits, _ = model(gpt.params(), rows[:, :-1], hp, dtype=dtype)
                loss = loss_fn(logits, rows[:, 1:])
            grads = tape.gradient(loss, [gpt.weights[n] for n in names])
            total = [t + tf.convert_to_tensor(g) for t, g in zip(total, grads, strict=True)]
            total_loss += loss
        return total_loss / args.accumulate, [g / args.accumulate for g in total]

    def apply(grads, lr, step):  # Adam with assign() on slots, SGD with assign_sub()
        if args.optimizer == "sgd":
            for n in names:
                gpt.weights[n].assign_sub(lr * grads[n])
            return
        t = tf.cast(step, tf.float32) + 1.0
        for n in names:
            m, v = slots[f"optimizer/{n}/m"], slots[f"optimizer/{n}/v"]
            m.assign(0.9 * m + 0.1 * grads[n])
            v.assign(0.999 * v + 0.001 * tf.square(grads[n]))
            step_size = lr * tf.sqrt(1.0 - 0.999**t) / (1.0 - 0.9**t)
            gpt.weights[n].assign_sub(step_size * m / (tf.sqrt(v) + 1e-8))

    def clip(grads):
        norm = tf.linalg.global_norm(list(grads.values()))
        return grads, norm

    train = distribute.TrainStep(strategy, gpt.weights, grads_fn, apply, batch_size=args.batch_size,
                                 accumulate=args.accumulate, window=window, clip=clip)
    def row_losses(rows):
        logits = model(gpt.params(), rows[:, :-1], hp, dtype=dtype)[0]
        return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(rows[:, 1:], logits), 1)

    evaluate = distribute.EvalLoss(strategy, row_losses, batch_size=args.batch_size, window=window)

    corpus = np.random.default_rng(0).integers(0, hp.n_vocab, size=5000).astype(np.int32)
    rng = np.random.default_rng(args.seed)  # the same draws on every worker
    global_rows = replicas * args.batch_size

    def draw(shape):
        starts = rng.integers(0, len(corpus) - window - 1, size=shape)
        return corpus[starts[..., None] + np.arange(window + 1)]

    val_rows = draw((5,))  # not a multiple of the global batch: the last one is padded
    index = int(os.environ.get("TF_CONFIG") and json.loads(os.environ["TF_CONFIG"])["task"]["index"]
                or 0)
    probe = distribute.broadcast_from_chief(
        strategy, {"x": np.full(3, index + 0.5, np.float32), "n": np.int64(41 + index)})
    distribute.check_same_start(strategy, seed=args.seed, step=0)
    try:  # a worker that differs from the chief: both are told
        distribute.check_same_start(strategy, probe=index)
        mismatch = None
    except UserError as e:
        mismatch = str(e)
    losses, norms, done, status, written = [], [], 0, "finished", []
    stop = argparse.Namespace(requested=False)  # the trainer's StopFlag, in short

    def request_stop(signum, frame):
        stop.requested = True

    for s in (signal.SIGINT, signal.SIGTERM):
        signal.signal(s, request_stop)
    try:
        for step in range(args.steps):
            loss, norm, stop_all = train(draw((args.accumulate, global_rows)), 1e-2, step,
                                         stop.requested)
            losses.append(loss)
            norms.append(norm)
            done = step + 1
            if args.progress:
                Path(args.progress).write_text(str(done))
            if stop_all:
                status = "stopped"
                break
            time.sleep(args.step_sleep)
    except distribute.PEER_ERRORS as e:
        status = "peer_failure"
        print(distribute.peer_failure_message(e), file=sys.stderr)
    val = evaluate(val_rows) if args.eval and status != "peer_failure" else float("nan")
    weights = {n: v.numpy() for n, v in gpt.weights.items()}
    if chief and args.run_dir:
        state = {**weights, **{n: v.numpy() for n, v in slots.items()},
                 "train/step": np.int64(done)}
        written.append(write_checkpoint(args.run_dir, done, state))
    np.savez(args.out, losses=np.array(losses), norms=np.array(norms), val=val,
             traces=train.tracing_count(), **{f"w/{n}": v for n, v in weights.items()})
    Path(args.out + ".json").write_text(json.dumps(
        {"chief": chief, "status": status, "steps": done, "written": written,
         "replicas": replicas, "probe": [probe["x"].tolist(), int(probe["n"])],
         "mismatch": mismatch}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
