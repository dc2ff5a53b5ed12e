#!/usr/bin/env python3
"""Serve a model: a web page at / and OpenAI's completions API at /v1 (local only by default).

    python serve.py --run_name run1                 # http://127.0.0.1:8000/
    python serve.py --model_name 124M --port 8080 --api_key secret

The flags (`python serve.py --help`) are the fields of gpt2easy.serve.ServeConfig; the same command
is `gpt2easy serve` once installed.
"""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "src"))

from gpt2easy import cli  # noqa: E402

if __name__ == "__main__":
    cli.script("serve")
