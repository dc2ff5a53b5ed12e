#!/usr/bin/env python3
"""Export a model: a Hugging Face folder (transformers, the hub) or OpenAI's release layout.

    python export.py checkpoint/run1 exported/run1-hf
    python export.py checkpoint/run1 exported/run1-hf16 --dtype bfloat16
    python export.py checkpoint/run1/model-1000 exported/run1-openai --format openai

The flags (`python export.py --help`) are the fields of gpt2easy.commands.ExportConfig; the same
command is `gpt2easy export` once installed.
"""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "src"))

from gpt2easy import cli  # noqa: E402

if __name__ == "__main__":
    cli.script("export")
