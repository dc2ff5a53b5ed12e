#!/usr/bin/env python3
"""Generate samples from nothing (each starts after <|endoftext|>), streaming them to the terminal.

    python generate_unconditional_samples.py --top_k 40                  # forever, Ctrl+C to stop
    python generate_unconditional_samples.py --nsamples 10 --output samples.txt --run_name run1

Flags: `--help` (gpt2easy.sample_commands.GenerateConfig); installed: `gpt2easy generate`.
"""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "src"))

from gpt2easy import cli  # noqa: E402

if __name__ == "__main__":
    cli.script("generate")
