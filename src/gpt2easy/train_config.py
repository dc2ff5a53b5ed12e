"""`TrainConfig`: every setting of a training run, the one definition of train.py's flags.

Kept apart from `trainer` (which imports TensorFlow) so that the command line can read, check and
refuse flags before TensorFlow is imported. `trainer` re-exports it.
"""

from __future__ import annotations

import dataclasses

from .errors import UserError
from .folders import MODELS_DIR_HELP
from .machine import PRECISION_CHOICES
from .options import check_config, opt
from .tables import CorpusFlags

# The accepted names; tests check them against optim.OPTIMIZERS, optim.LR_DECAYS,
# checkpoint.SAVE_OPTIMIZER and distribute.STRATEGIES (modules that import TensorFlow).
# Precisions are machine.PRECISION_CHOICES (auto, fp32, bf16), the same for every command.
OPTIMIZERS = ("adam", "adamw", "sgd")
LR_DECAYS = ("none", "cosine", "linear")
STRATEGIES = ("auto", "default", "mirrored", "multi_worker")
SAVE_OPTIMIZER = ("newest", "all", "none")


@dataclasses.dataclass(frozen=True)
class TrainConfig(CorpusFlags):
    """Train on DATASET and save checkpoints to CHECKPOINT_DIR/RUN_NAME; Ctrl+C saves and stops.

    Every setting of a training run: the flags of train.py and `gpt2easy train`. The flags that say
    how text and tables are read (--keep_line_endings, --column, --header) come from
    `tables.CorpusFlags`, shared with encode.py."""

    dataset: str = opt(help="an .npz from encode.py, a text file, a .csv/.jsonl table, a folder (recursive) "
                            "or a quoted glob; "
                            "text is encoded on the fly exactly like encode.py")
    model_name: str = opt("124M", "base model folder under models_dir (without a checkpoint there, "
                                  "training starts from random weights: how small GPT-2s are made)")
    models_dir: str | None = opt(None, MODELS_DIR_HELP)
    combine: int = opt(50000, "text files are joined into chunks of at least this many characters",
                       minimum=0)
    encoding: str = opt("utf-8", "text encoding of the dataset's text files and of the sample files")
    batch_size: int = opt(1, "rows (windows of n_ctx tokens) per micro-batch and per replica (GPU); the "
                             "global batch is printed at the start", minimum=1)
    learning_rate: float = opt(2e-5, "peak learning rate (constant unless --warmup_steps/--lr_decay)",
                               above=0.0)
    accumulate_gradients: int = opt(1, "micro-batches per update; their gradients are averaged",
                                    minimum=1)
    memory_saving_gradients: bool = opt(False, "recompute each block's activations in the backward pass")
    only_train_transformer_layers: bool = opt(False, "train only the blocks (weights named model/h*)")
    optimizer: str = opt("adam", "adam (TF1 defaults, the classic), adamw (decoupled weight decay), or sgd",
                         choices=OPTIMIZERS)
    noise: float = opt(0.0, "probability of replacing each input token by a random one (targets stay "
                            "clean)", minimum=0.0, below=1.0)
    top_k: int = opt(40, "top-k of the training samples (0 = off)", minimum=0)
    top_p: float = opt(0.0, "top-p of the training samples; above 0 it replaces top_k (the classic rule)",
                       minimum=0.0, maximum=1.0)
    restore_from: str = opt("latest", "latest (the run's newest checkpoint, else the base model), fresh "
                                      "(the base model), or a folder or model-N checkpoint prefix")
    run_name: str = opt("run1", "the run's folder under checkpoint_dir and sample_dir")
    sample_every: int = opt(100, "write samples every this many updates", minimum=1)
    sample_length: int | None = opt(None, "tokens per training sample; -1 = n_ctx - 1 (1023 for GPT-2)",
                                    minimum=1, none_as=-1)
    sample_num: int = opt(1, "samples each time", minimum=1)
    save_every: int = opt(1000, "save a checkpoint every this many updates (and always on exit)",
                          minimum=1)
    val_dataset: str | None = opt(None, "validation data (default: fixed windows of the training data)")
    val_batch_size: int = opt(2, "rows per validation batch", minimum=1)
    val_batch_count: int = opt(40, "validation batches (fixed windows, seed 1)", minimum=1)
    val_every: int = opt(0, "validate every this many updates (0 = never)", minimum=0)
    steps: int | None = opt(None, "stop and save after this many updates; -1 = until Ctrl+C", minimum=0,
                            none_as=-1)
    seed: int | None = opt(None, "seed of initialisation, data order, noise and samples (default: "
                                 "random, logged and saved, so a resumed run continues with it)")
    max_checkpoints: int = opt(5, "checkpoints kept in the run folder (0 = all)", minimum=0)
    print_every: int = opt(1, "print the step line every this many updates", minimum=1)
    checkpoint_dir: str = opt("checkpoint", "where run folders go")
    sample_dir: str = opt("samples", "where sample folders go")
    warmup_steps: int = opt(0, "linear learning-rate warm-up over this many updates", minimum=0)
    lr_decay: str = opt("none", "none, cosine or linear decay to min_lr after the warm-up",
                        choices=LR_DECAYS)
    lr_decay_steps: int | None = opt(None, "update at which the decay reaches min_lr; -1 = --steps",
                                     minimum=0, none_as=-1)
    min_lr: float = opt(0.0, "learning rate at the end of the decay", minimum=0.0)
    grad_clip: float = opt(0.0, "clip gradients to this global norm (0 = off)", minimum=0.0)
    weight_decay: float = opt(0.0, "decoupled weight decay of matrices (needs --optimizer adamw)",
                              minimum=0.0)
    precision: str = opt("auto", "auto (bf16 where the CPU has native bf16 or on a GPU, else fp32), "
                                 "fp32 (the exact reference), or bf16 (bf16 matmuls; float32 weights, "
                                 "optimizer and loss)", choices=PRECISION_CHOICES)
    xla: bool | None = opt(None, "compile the training step with XLA; auto (the default): on a GPU "
                                 "(1.7-3.7x the plain graph on an H200), and on a CPU for fp32 models "
                                 "up to 40M parameters, where it measured faster (the demo's: 1.2x); "
                                 "off otherwise (124M on a CPU: ~4% after a one-minute compile; slower "
                                 "in bf16)")
    strategy: str = opt("auto", "auto (one device, or every GPU of this machine), default (one device), "
                                "mirrored (every GPU of this machine), or multi_worker (the machines in "
                                "TF_CONFIG; run train.py on each, only the chief writes)",
                        choices=STRATEGIES)
    save_optimizer: str = opt("newest", "checkpoints that keep their optimizer slots (the newest only, "
                                        "all, or none: a resume then restarts the optimizer)",
                              choices=SAVE_OPTIMIZER)
    keep_best: bool = opt(False, "keep the checkpoint with the lowest validation loss whatever "
                                 "--max_checkpoints removes, named in RUN/best.json (train on from it "
                                 "with --restore_from best; sample or evaluate it as checkpoint "
                                 "'best'); needs --val_every")
    early_stopping: int = opt(0, "stop, save and exit 0 after this many validations in a row "
                                 "without a lower validation loss (0 = off); needs --val_every",
                              minimum=0)

    def check_flags(self) -> None:
        """The checks that need no TensorFlow and no model: every option's type, bounds and choices
        (from its `opt`), the combinations of flags, and that the datasets exist."""
        check_config(self)
        if "/" in self.run_name or self.run_name in ("", ".", ".."):
            raise UserError(f"--run_name must be a plain folder name, got {self.run_name!r}")
        for name in ("keep_best", "early_stopping"):
            if getattr(self, name) and not self.val_every:
                raise UserError(f"--{name} needs validation: add --val_every N (validate every N "
                                f"updates)")
        if self.weight_decay and self.optimizer != "adamw":
            raise UserError(f"--weight_decay needs --optimizer adamw (got --optimizer {self.optimizer})")
        from .corpus import list_files

        for data in (self.dataset, self.val_dataset):
            if data is not None:
                list_files(data)  # a missing dataset is reported before the run folder is made

    def check(self) -> None:
        """One-line UserErrors for flags that cannot work, before anything slow happens."""
        from .optim import Optimizer
        from .step import StepConfig

        self.check_flags()
        self.schedule()  # validates learning rate, warm-up and decay
        Optimizer(self.optimizer, {}, weight_decay=self.weight_decay)  # validates the name
        StepConfig(batch_size=self.batch_size, accumulate=self.accumulate_gradients,
                   noise=self.noise, precision=self.precision, grad_clip=self.grad_clip)

    def schedule(self):
        """The learning-rate schedule (an `optim.Schedule`)."""
        from .optim import Schedule

        return Schedule(self.learning_rate, self.warmup_steps, self.lr_decay,
                        self.lr_decay_steps or self.steps or 0, self.min_lr)
