#!/usr/bin/env python3
"""Download a GPT-2 model into src/models/NAME: OpenAI's storage, or the Hugging Face hub.

    python download_model.py 124M          # also 355M, 774M, 1558M (117M/345M: old names)
    python download_model.py 124M --source hf              # openai-community/gpt2 from the hub
    python download_model.py --repo distilbert/distilgpt2  # any GPT-2 repository -> src/models/distilgpt2

Re-running skips complete files and resumes partial ones. The hub honours HF_ENDPOINT and HF_TOKEN.
Flags: `python download_model.py --help` (gpt2easy.commands.DownloadConfig); installed:
`gpt2easy download`.
"""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "src"))

from gpt2easy import cli  # noqa: E402

if __name__ == "__main__":
    cli.script("download")
