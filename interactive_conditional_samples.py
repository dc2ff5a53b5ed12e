#!/usr/bin/env python3
"""Continue the user's text with GPT-2, streaming the samples to the terminal.

    python interactive_conditional_samples.py --temperature 0.8 --top_k 20 --model_name 124M
    python interactive_conditional_samples.py --run_name run1            # newest checkpoint of a run
    echo "Once upon a time" | python interactive_conditional_samples.py --seed 1 --length 50

Flags: `--help` (gpt2easy.sample_commands.SampleConfig); installed: `gpt2easy sample`.
"""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "src"))

from gpt2easy import cli  # noqa: E402

if __name__ == "__main__":
    cli.script("sample")
