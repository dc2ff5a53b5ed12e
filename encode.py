#!/usr/bin/env python3
"""Pre-encode text into a token archive for train.py (no TensorFlow: starts fast).

    python encode.py corpus.txt corpus.npz
    python encode.py 'texts/**/*.txt' corpus.npz --model_name 124M --combine 50000

Flags: `python encode.py --help` (gpt2easy.commands.EncodeConfig); installed: `gpt2easy encode`.
"""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "src"))

from gpt2easy import cli  # noqa: E402

if __name__ == "__main__":
    cli.script("encode")
