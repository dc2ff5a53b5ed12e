#!/usr/bin/env python3
"""Download one of OpenAI's GPT-2 checkpoints into src/models/NAME.

    python download_model.py 124M          # also 355M, 774M, 1558M (117M/345M: old names)

Re-running skips complete files and resumes partial ones.
Flags: `python download_model.py --help` (gpt2easy.commands.DownloadConfig); installed:
`gpt2easy download`.
"""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "src"))

from gpt2easy import cli  # noqa: E402

if __name__ == "__main__":
    cli.script("download")
