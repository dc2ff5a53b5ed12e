#!/usr/bin/env python3
"""Fine-tune GPT-2 on your data (or train a small GPT-2 from scratch), the classic way.

    python train.py --dataset corpus.npz
    python train.py --dataset 'texts/*.txt' --model_name 124M --run_name run1 --steps 1000
    python train.py --dataset corpus.npz --optimizer adamw --learning_rate 1e-4 --warmup_steps 100 \\
        --lr_decay cosine --steps 5000 --grad_clip 1.0 --weight_decay 0.1 --precision bf16

Ctrl+C (or SIGTERM) finishes the current step, saves checkpoint/RUN/model-N and exits 0.
Step lines and logs go to stderr; the periodic samples go to stdout and samples/RUN/samples-N.
"""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "src"))

import fire  # noqa: E402

from gpt2easy import cli  # noqa: E402
from gpt2easy.folders import DEFAULT_MODELS_DIR  # noqa: E402

TEXT_FLAGS = ("dataset", "model_name", "models_dir", "encoding", "restore_from", "run_name",
              "val_dataset", "checkpoint_dir", "sample_dir", "optimizer", "lr_decay", "precision",
              "strategy", "save_optimizer")


@fire.decorators.SetParseFn(str, *TEXT_FLAGS)
def train(
    dataset: str,
    model_name: str = "124M",
    models_dir: str = DEFAULT_MODELS_DIR,
    combine: int = 50000,
    encoding: str = "utf-8",
    batch_size: int = 1,
    learning_rate: float = 0.00002,
    accumulate_gradients: int = 1,
    memory_saving_gradients: bool = False,
    only_train_transformer_layers: bool = False,
    optimizer: str = "adam",
    noise: float = 0.0,
    top_k: int = 40,
    top_p: float = 0.0,
    restore_from: str = "latest",
    run_name: str = "run1",
    sample_every: int = 100,
    sample_length: int = -1,
    sample_num: int = 1,
    save_every: int = 1000,
    val_dataset: str = None,
    val_batch_size: int = 2,
    val_batch_count: int = 40,
    val_every: int = 0,
    steps: int = -1,
    seed: int = None,
    max_checkpoints: int = 5,
    print_every: int = 1,
    checkpoint_dir: str = "checkpoint",
    sample_dir: str = "samples",
    warmup_steps: int = 0,
    lr_decay: str = "none",
    lr_decay_steps: int = -1,
    min_lr: float = 0.0,
    grad_clip: float = 0.0,
    weight_decay: float = 0.0,
    precision: str = "fp32",
    xla: bool = False,
    strategy: str = "auto",
    save_optimizer: str = "newest",
    verbose: bool = False,
) -> None:
    """Train on DATASET and save checkpoints to CHECKPOINT_DIR/RUN_NAME.

    Args:
        dataset: an .npz from encode.py, a text file, a folder (recursive) or a quoted glob; text
            is encoded on the fly exactly like encode.py.
        model_name: base model folder under models_dir (hparams.json and vocabulary; without a
            checkpoint there, training starts from random weights: how small GPT-2s are made).
        models_dir: folder holding one folder per model.
        combine: text files are joined into chunks of at least this many characters.
        encoding: text encoding of the dataset's text files and of the sample files.
        batch_size: rows (windows of n_ctx tokens) per micro-batch and per replica (GPU); the
            global batch, batch_size x replicas, is printed at the start.
        learning_rate: peak learning rate (constant unless --warmup_steps/--lr_decay).
        accumulate_gradients: micro-batches per update; their gradients are averaged.
        memory_saving_gradients: recompute each block's activations in the backward pass.
        only_train_transformer_layers: train only the blocks (weights named model/h*).
        optimizer: adam (TF1 defaults, the classic), adamw (decoupled weight decay), or sgd.
        noise: probability of replacing each input token by a random one (targets stay clean).
        top_k: top-k of the training samples (0 = off).
        top_p: top-p of the training samples; above 0 it replaces top_k (the classic rule).
        restore_from: latest (the run's newest checkpoint, else the base model), fresh (the base
            model), or a folder or model-N checkpoint prefix.
        run_name: the run's folder under checkpoint_dir and sample_dir.
        sample_every: write samples every this many updates.
        sample_length: tokens per training sample; -1 = n_ctx - 1 (1023 for GPT-2).
        sample_num: samples each time.
        save_every: save a checkpoint every this many updates (and always on exit).
        val_dataset: validation data (default: fixed windows of the training data).
        val_batch_size: rows per validation batch.
        val_batch_count: validation batches (fixed windows, seed 1).
        val_every: validate every this many updates (0 = never).
        steps: stop and save after this many updates; -1 = until Ctrl+C.
        seed: seed of initialisation, data order, noise and samples (default: random, logged
            and saved, so a resumed run continues with it).
        max_checkpoints: checkpoints kept in the run folder (0 = all).
        print_every: print the step line every this many updates.
        checkpoint_dir: where run folders go.
        sample_dir: where sample folders go.
        warmup_steps: linear learning-rate warm-up over this many updates.
        lr_decay: none, cosine or linear decay to min_lr after the warm-up.
        lr_decay_steps: update at which the decay reaches min_lr; -1 = --steps.
        min_lr: learning rate at the end of the decay.
        grad_clip: clip gradients to this global norm (0 = off).
        weight_decay: decoupled weight decay of matrices (needs --optimizer adamw).
        precision: fp32, or bf16 (bf16 matmuls, float32 weights, optimizer and loss).
        xla: compile the training step with XLA (on a 2-core CPU: 1.2x faster for small models
            like the demo's, ~4% for 124M after a one-minute compile).
        strategy: auto (one device, or every GPU of this machine when it has several), default
            (one device), mirrored (every GPU of this machine), or multi_worker (the machines
            listed in the TF_CONFIG variable; run train.py on each, only the chief writes).
        save_optimizer: checkpoints that keep their optimizer slots (model-N.optimizer, twice the
            weights' size): newest (the one a resume continues from), all, or none.
        verbose: more logging.
    """
    del verbose  # read by cli.run
    cli.quiet_tensorflow()
    from gpt2easy.trainer import TrainConfig
    from gpt2easy.trainer import train as run_training

    def optional(value):
        return None if value is None or int(value) < 0 else int(value)

    cfg = TrainConfig(
        dataset=dataset, model_name=model_name, models_dir=models_dir, combine=int(combine),
        encoding=encoding, batch_size=int(batch_size), learning_rate=float(learning_rate),
        accumulate_gradients=int(accumulate_gradients),
        memory_saving_gradients=bool(memory_saving_gradients),
        only_train_transformer_layers=bool(only_train_transformer_layers), optimizer=optimizer,
        noise=float(noise), top_k=int(top_k), top_p=float(top_p), restore_from=restore_from,
        run_name=run_name, sample_every=int(sample_every), sample_length=optional(sample_length),
        sample_num=int(sample_num), save_every=int(save_every), val_dataset=val_dataset,
        val_batch_size=int(val_batch_size), val_batch_count=int(val_batch_count),
        val_every=int(val_every), steps=optional(steps), seed=None if seed is None else int(seed),
        max_checkpoints=int(max_checkpoints), print_every=int(print_every),
        checkpoint_dir=checkpoint_dir, sample_dir=sample_dir, warmup_steps=int(warmup_steps),
        lr_decay=lr_decay, lr_decay_steps=optional(lr_decay_steps), min_lr=float(min_lr),
        grad_clip=float(grad_clip), weight_decay=float(weight_decay), precision=precision,
        xla=bool(xla), strategy=strategy, save_optimizer=save_optimizer)

    def show(text: str) -> None:
        print(text, flush=True)

    s = run_training(cfg, on_sample=show)
    print(f"trained {s['steps']} steps (now at step {s['step']}), final loss {s['loss']:.4f}: "
          f"checkpoint {s['checkpoint']}, samples in {s['samples']}/, seed {s['seed']}",
          file=sys.stderr)


if __name__ == "__main__":
    cli.run(train)
