#!/usr/bin/env python3
"""Serve a model: a web page at / and OpenAI's completions API at /v1 (local only by default).

    python serve.py --run_name run1                 # http://127.0.0.1:8000/
    python serve.py --model_name 124M --port 8080 --api_key secret
"""

import dataclasses
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "src"))

from gpt2easy import cli  # noqa: E402
from gpt2easy.options import help_of  # noqa: E402
from gpt2easy.serve import ServeConfig  # noqa: E402


def serve(**flags) -> None:
    from gpt2easy.serve import config_from_flags, run_serve

    if "help" in flags or "h" in flags:
        print(serve.__doc__)
        return
    cfg = config_from_flags(flags)  # checked before TensorFlow loads
    cli.quiet_tensorflow()
    run_serve(cfg)


serve.__doc__ = __doc__ + "\nFlags:\n" + "\n".join(
    f"  --{f.name} (default {f.default!r}): {help_of(f)}" for f in dataclasses.fields(ServeConfig))

if __name__ == "__main__":
    cli.run(serve)
