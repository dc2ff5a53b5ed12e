#!/usr/bin/env python3
"""Fine-tune GPT-2 on your data (or train a small GPT-2 from scratch), the classic way.

    python train.py --dataset corpus.npz
    python train.py --dataset 'texts/*.txt' --model_name 124M --run_name run1 --steps 1000
    python train.py --dataset corpus.npz --optimizer adamw --learning_rate 1e-4 --warmup_steps 100 \\
        --lr_decay cosine --steps 5000 --grad_clip 1.0 --weight_decay 0.1 --precision bf16

Ctrl+C (or SIGTERM) finishes the current step, saves checkpoint/RUN/model-N and exits 0.
Step lines and logs go to stderr; the periodic samples go to stdout and samples/RUN/samples-N.
The flags (`python train.py --help`) are the fields of gpt2easy.train_config.TrainConfig; the same
command is `gpt2easy train` once installed.
"""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "src"))

from gpt2easy import cli  # noqa: E402

if __name__ == "__main__":
    cli.script("train")
