#!/usr/bin/env python3
"""Score a model on text: mean loss (nats/token), perplexity, bits per byte, token count.

    python evaluate.py valid.txt --model_name 124M
    python evaluate.py data/val.npz --run_name run1 --stride 512 --json
    python evaluate.py 'texts/*.txt' --run_name run1 --checkpoint best

The summary goes to stderr; with --json, one JSON object on stdout as well. The flags
(`python evaluate.py --help`) are the fields of gpt2easy.commands.EvaluateConfig; the same command
is `gpt2easy evaluate` once installed.
"""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "src"))

from gpt2easy import cli  # noqa: E402

if __name__ == "__main__":
    cli.script("evaluate")
